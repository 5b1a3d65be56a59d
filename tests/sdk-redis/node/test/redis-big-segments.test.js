'use strict';
// The official LaunchDarkly Node SDK's own Redis big-segment store
// (@launchdarkly/node-server-sdk-redis) against a Redis-protocol server: a real redis-server, or
// `segstore serve --redis` (SEGSTORE_REDIS_TARGET). Data goes in over the protocol as the Relay
// Proxy writes it (or, for segstore, through the CLI before `serve` starts); flags and segments
// come from the SDK's file data source.

const assert = require('node:assert/strict');
const { test } = require('node:test');
const {
  READER,
  RelayWriter,
  contextHash,
  evaluate,
  flagMatching,
  makeClient,
  pollUntil,
  runCli,
  segment,
  startServer,
  target,
} = require('./helpers');

const REF = 'beta.g3';
const FLAGS = { 'beta-flag': flagMatching('beta-flag', 'beta') };
const SEGMENTS = { beta: segment('beta', { generation: 3 }) };

const user = (key) => ({ kind: 'user', key });

/** `beta.g3`: in-user and both-user included; out-user and both-user excluded; synced. */
async function writeStandard(t, server, syncedAt = Date.now()) {
  const w = new RelayWriter(t, server);
  assert.equal(await w.patch(REF, '1', { previousVersion: '', includedAdd: ['in-user', 'both-user'] }), true);
  assert.equal(await w.patch(REF, '2', { previousVersion: '1', excludedAdd: ['out-user', 'both-user'] }), true);
  await w.markSynced(syncedAt);
  return w;
}

test('the Relay-shaped writes are what the Redis layout says', async (t) => {
  const server = await startServer(t);
  await writeStandard(t, server);
  const r = server.connect(t);
  assert.equal(contextHash('user-key'), 'CEXjZY7cHJG/ydFy7q4+YEFwVrG3/pkJwA4FAjrbfx0=');
  assert.deepEqual(await r.smembers(server.key(`big_segment_include:${contextHash('both-user')}`)), [REF]);
  assert.deepEqual(await r.smembers(server.key(`big_segment_exclude:${contextHash('both-user')}`)), [REF]);
  assert.deepEqual(await r.smembers(server.key(`big_segment_include:${contextHash('nobody')}`)), []);
  assert.equal(await r.get(server.key('big_segments_cursor')), '2');
});

test('included, excluded-only, both and unknown contexts, all healthy', async (t) => {
  const server = await startServer(t);
  await writeStandard(t, server);
  const client = await makeClient(t, server, FLAGS, SEGMENTS);
  assert.deepEqual(await evaluate(client, user('in-user')), { value: true, kind: 'RULE_MATCH', status: 'HEALTHY' });
  assert.deepEqual(await evaluate(client, user('out-user')), { value: false, kind: 'FALLTHROUGH', status: 'HEALTHY' });
  assert.deepEqual(await evaluate(client, user('both-user')), { value: true, kind: 'RULE_MATCH', status: 'HEALTHY' });
  assert.deepEqual(await evaluate(client, user('nobody')), { value: false, kind: 'FALLTHROUGH', status: 'HEALTHY' });
});

test('a ref of another generation does not match', async (t) => {
  const server = await startServer(t);
  const w = new RelayWriter(t, server);
  assert.equal(await w.patch('beta.g2', '1', { includedAdd: ['old-gen-user'] }), true);
  await w.markSynced();
  const client = await makeClient(t, server, FLAGS, SEGMENTS);
  assert.deepEqual(await evaluate(client, user('old-gen-user')), { value: false, kind: 'FALLTHROUGH', status: 'HEALTHY' });
});

test('an org segment matches the org of a multi-kind context', async (t) => {
  const server = await startServer(t);
  const w = new RelayWriter(t, server);
  assert.equal(await w.patch('orgs.g1', '1', { includedAdd: ['org-1'] }), true);
  await w.markSynced();
  const client = await makeClient(
    t,
    server,
    { 'org-flag': flagMatching('org-flag', 'orgs') },
    { orgs: segment('orgs', { generation: 1, kind: 'org' }) },
  );
  const multi = { kind: 'multi', user: { key: 'someone' }, org: { key: 'org-1' } };
  assert.deepEqual(await evaluate(client, multi, 'org-flag'), { value: true, kind: 'RULE_MATCH', status: 'HEALTHY' });
  // A user whose key is the org's key is not the org.
  assert.equal((await evaluate(client, user('org-1'), 'org-flag')).value, false);
});

test('a sync older than staleAfter is stale', async (t) => {
  const server = await startServer(t);
  await writeStandard(t, server, Date.now() - 60000);
  const client = await makeClient(t, server, FLAGS, SEGMENTS, { staleAfter: 5 });
  assert.deepEqual(await evaluate(client, user('in-user')), { value: true, kind: 'RULE_MATCH', status: 'STALE' });
  assert.deepEqual(client.bigSegmentStoreStatusProvider.getStatus(), { available: true, stale: true });
});

test('never synced is stale', async (t) => {
  const server = await startServer(t);
  const w = new RelayWriter(t, server);
  assert.equal(await w.patch(REF, '1', { includedAdd: ['in-user'] }), true);
  assert.equal(await w.conn.get(server.key('big_segments_synchronized_on')), null);
  const client = await makeClient(t, server, FLAGS, SEGMENTS);
  assert.deepEqual(await evaluate(client, user('in-user')), { value: true, kind: 'RULE_MATCH', status: 'STALE' });
});

test('a segment without a generation is not configured', async (t) => {
  const server = await startServer(t);
  await writeStandard(t, server);
  const client = await makeClient(t, server, FLAGS, { beta: segment('beta', { generation: null }) });
  const got = await evaluate(client, user('in-user'));
  assert.equal(got.value, false);
  assert.equal(got.status, 'NOT_CONFIGURED');
});

test('a custom prefix is what the SDK reads', async (t) => {
  const server = await startServer(t, { prefix: 'acme-prod' });
  await writeStandard(t, server);
  const client = await makeClient(t, server, FLAGS, SEGMENTS);
  assert.deepEqual(await evaluate(client, user('in-user')), { value: true, kind: 'RULE_MATCH', status: 'HEALTHY' });
  // An SDK on the default prefix finds nothing there: no membership, never synced.
  const other = await makeClient(t, server, FLAGS, SEGMENTS, { prefix: 'launchdarkly' });
  assert.deepEqual(await evaluate(other, user('in-user')), { value: false, kind: 'FALLTHROUGH', status: 'STALE' });
});

test('a membership change shows up after the user cache time', async (t) => {
  const server = await startServer(t);
  const w = await writeStandard(t, server);
  const client = await makeClient(t, server, FLAGS, SEGMENTS, { cacheTime: 0.2 });
  assert.equal((await evaluate(client, user('late-user'))).value, false);
  assert.equal((await evaluate(client, user('in-user'))).value, true);

  assert.equal(
    await w.patch(REF, '3', { previousVersion: '2', includedAdd: ['late-user'], includedRemove: ['in-user'] }),
    true,
  );
  await w.markSynced();
  // The SDK's user cache renews an entry's age on every read, so a context evaluated more
  // often than the cache time keeps its old membership: poll less often than that.
  const every = { intervalMs: 300 };
  await pollUntil(async () => (await evaluate(client, user('late-user'))).value === true, 'late-user included', every);
  await pollUntil(async () => (await evaluate(client, user('in-user'))).value === false, 'in-user removed', every);
  assert.deepEqual(await evaluate(client, user('late-user')), { value: true, kind: 'RULE_MATCH', status: 'HEALTHY' });
});

test('a transaction whose WATCH was broken by another writer is not applied', async (t) => {
  const server = await startServer(t);
  const w = await writeStandard(t, server);
  const other = new RelayWriter(t, server);
  const applied = await w.patch(REF, '3', {
    previousVersion: '2',
    includedAdd: ['loser'],
    beforeExec: async () => {
      assert.equal(await other.patch(REF, '3', { previousVersion: '2', includedAdd: ['winner'] }), true);
    },
  });
  assert.equal(applied, false, 'EXEC must answer nil after another transaction touched the lock');
  const client = await makeClient(t, server, FLAGS, SEGMENTS);
  assert.equal((await evaluate(client, user('winner'))).value, true);
  assert.equal((await evaluate(client, user('loser'))).value, false);
});

test('data loaded before the server starts is served', async (t) => {
  const server = await startServer(t, {
    prefix: 'preloaded',
    preload: {
      included: { [REF]: ['in-user', 'both-user'] },
      excluded: { [REF]: ['out-user', 'both-user'] },
      syncedAt: Date.now(),
    },
  });
  const client = await makeClient(t, server, FLAGS, SEGMENTS);
  for (const [key, want] of [
    ['in-user', true],
    ['out-user', false],
    ['both-user', true],
    ['nobody', false],
  ]) {
    const got = await evaluate(client, user(key));
    assert.deepEqual([key, got.value, got.status], [key, want, 'HEALTHY']);
  }
});

test('a server that goes away makes the store unavailable', async (t) => {
  const server = await startServer(t);
  await writeStandard(t, server);
  const client = await makeClient(t, server, FLAGS, SEGMENTS, {
    statusPollInterval: 0.1,
    // Fail commands fast while the server is gone instead of queueing them for 20 reconnects.
    redisOpts: { maxRetriesPerRequest: 0, retryStrategy: () => 100 },
  });
  const status = client.bigSegmentStoreStatusProvider;
  assert.deepEqual(await evaluate(client, user('in-user')), { value: true, kind: 'RULE_MATCH', status: 'HEALTHY' });
  assert.equal(status.getStatus().available, true);

  const unavailable = new Promise((resolve) => {
    status.on('change', (s) => {
      if (!s.available) resolve(s);
    });
  });
  await server.stop();
  await pollUntil(async () => status.getStatus().available === false, 'store status unavailable');
  assert.deepEqual(await unavailable, { available: false, stale: false });
  const got = await evaluate(client, user('never-asked'));
  assert.equal(got.value, false);
  assert.equal(got.status, 'STORE_ERROR');
});

test('writes over the protocol are in the store and survive a restart', async (t) => {
  if (target() !== 'segstore') {
    t.skip('the store directory and its CLI exist only with SEGSTORE_REDIS_TARGET=segstore');
    return;
  }
  const server = await startServer(t);
  const synced = Date.now() - 1000;
  await writeStandard(t, server, synced);
  assert.equal(runCli(server.store, ['check', REF, 'out-user', '--hash-key']).trim(), 'excluded');
  assert.deepEqual(JSON.parse(runCli(server.store, ['membership', 'both-user', '--hash-key'])), { [REF]: true });
  const meta = JSON.parse(runCli(server.store, ['meta', '--json']));
  assert.equal(meta.synchronized_on, synced);
  assert.equal(meta.cursor, '2');

  await server.stop();
  await server.start({ init: false });
  const client = await makeClient(t, server, FLAGS, SEGMENTS);
  assert.deepEqual(await evaluate(client, user('both-user')), { value: true, kind: 'RULE_MATCH', status: 'HEALTHY' });
  assert.deepEqual(await evaluate(client, user('out-user')), { value: false, kind: 'FALLTHROUGH', status: 'HEALTHY' });
});

test('a stale store turns healthy when synchronized_on is set', async (t) => {
  const server = await startServer(t);
  const w = await writeStandard(t, server, Date.now() - 60000);
  const client = await makeClient(t, server, FLAGS, SEGMENTS, { staleAfter: 5, statusPollInterval: 0.1 });
  assert.equal((await evaluate(client, user('in-user'))).status, 'STALE');
  await w.markSynced();
  await pollUntil(async () => client.bigSegmentStoreStatusProvider.getStatus().stale === false, 'not stale');
  assert.deepEqual(await evaluate(client, user('in-user')), { value: true, kind: 'RULE_MATCH', status: 'HEALTHY' });
});

test('a context in many segments, and a transaction of 1,000 SADDs', async (t) => {
  const server = await startServer(t);
  const w = new RelayWriter(t, server);
  const keys = Array.from({ length: 1000 }, (_, i) => `bulk-${i}`);
  assert.equal(await w.patch(REF, '1', { includedAdd: keys }), true);
  const flags = { ...FLAGS };
  const segments = { ...SEGMENTS };
  for (let i = 0; i < 40; i += 1) {
    const lists = i % 2 === 0 ? { includedAdd: ['busy-user'] } : { excludedAdd: ['busy-user'] };
    assert.equal(await w.patch(`seg${i}.g${(i % 3) + 1}`, String(i + 2), lists), true);
    flags[`f${i}`] = flagMatching(`f${i}`, `seg${i}`);
    segments[`seg${i}`] = segment(`seg${i}`, { generation: (i % 3) + 1 });
  }
  await w.markSynced();
  assert.equal(await w.conn.scard(server.key(`big_segment_include:${contextHash('busy-user')}`)), 20);
  const client = await makeClient(t, server, flags, segments);
  for (let i = 0; i < 40; i += 1) {
    const got = await evaluate(client, user('busy-user'), `f${i}`);
    assert.deepEqual([i, got.value, got.status], [i, i % 2 === 0, 'HEALTHY']);
  }
  for (const key of [...keys.filter((_, i) => i % 97 === 0), 'bulk-999']) {
    assert.equal((await evaluate(client, user(key))).value, true, key);
  }
  assert.equal((await evaluate(client, user('bulk-1000'))).value, false);
});

test('with users, the SDK reads as a read-only user and strangers get nothing', async (t) => {
  const server = await startServer(t, { auth: true });
  await writeStandard(t, server);
  const client = await makeClient(t, server, FLAGS, SEGMENTS);
  assert.deepEqual(await evaluate(client, user('in-user')), { value: true, kind: 'RULE_MATCH', status: 'HEALTHY' });

  const reader = server.connect(t, READER);
  const include = server.key(`big_segment_include:${contextHash('intruder')}`);
  await assert.rejects(reader.sadd(include, REF), /NOPERM|READONLY|ERR/);
  await assert.rejects(reader.set(server.key('big_segments_synchronized_on'), '1'), /NOPERM|READONLY|ERR/);
  assert.deepEqual(await reader.smembers(include), []);

  const failFast = { maxRetriesPerRequest: 0, retryStrategy: () => 100 };
  for (const who of [{ username: '', password: '' }, { ...READER, password: 'wrong-secret' }]) {
    const stranger = await makeClient(t, server, FLAGS, SEGMENTS, { user: who, redisOpts: failFast });
    const got = await evaluate(stranger, user('in-user'));
    assert.deepEqual([who, got.value, got.status], [who, false, 'STORE_ERROR']);
    assert.equal((await stranger.bigSegmentStoreStatusProvider.requireStatus()).available, false);
  }
});

test('the SDK store reconnects when the server comes back on its address', async (t) => {
  const server = await startServer(t, { persist: true });
  await writeStandard(t, server);
  const client = await makeClient(t, server, FLAGS, SEGMENTS, {
    cacheTime: 0.1,
    statusPollInterval: 0.1,
    redisOpts: { maxRetriesPerRequest: 0, retryStrategy: () => 100 },
  });
  const status = client.bigSegmentStoreStatusProvider;
  assert.deepEqual(await evaluate(client, user('in-user')), { value: true, kind: 'RULE_MATCH', status: 'HEALTHY' });

  const { port } = server;
  await server.stop();
  await pollUntil(async () => status.getStatus().available === false, 'store status unavailable');
  await server.start({ init: false, port });
  await pollUntil(async () => status.getStatus().available === true, 'store status available again');
  await pollUntil(async () => (await evaluate(client, user('in-user'))).status === 'HEALTHY', 'HEALTHY again', {
    intervalMs: 150,
  });
  assert.deepEqual(await evaluate(client, user('in-user')), { value: true, kind: 'RULE_MATCH', status: 'HEALTHY' });
  assert.deepEqual(await evaluate(client, user('out-user')), { value: false, kind: 'FALLTHROUGH', status: 'HEALTHY' });
  assert.deepEqual(await evaluate(client, user('both-user')), { value: true, kind: 'RULE_MATCH', status: 'HEALTHY' });
});

test('the SDK store over a Unix socket', async (t) => {
  const server = await startServer(t, { unix: true });
  await writeStandard(t, server);
  const client = await makeClient(t, server, FLAGS, SEGMENTS);
  assert.deepEqual(await evaluate(client, user('in-user')), { value: true, kind: 'RULE_MATCH', status: 'HEALTHY' });
  assert.deepEqual(await evaluate(client, user('out-user')), { value: false, kind: 'FALLTHROUGH', status: 'HEALTHY' });
  assert.deepEqual(await evaluate(client, user('both-user')), { value: true, kind: 'RULE_MATCH', status: 'HEALTHY' });
  assert.deepEqual(await evaluate(client, user('nobody')), { value: false, kind: 'FALLTHROUGH', status: 'HEALTHY' });
});

test('the SDK store over TLS', async (t) => {
  const server = await startServer(t, { tls: true });
  await writeStandard(t, server);
  const client = await makeClient(t, server, FLAGS, SEGMENTS);
  assert.deepEqual(await evaluate(client, user('in-user')), { value: true, kind: 'RULE_MATCH', status: 'HEALTHY' });
  assert.deepEqual(await evaluate(client, user('out-user')), { value: false, kind: 'FALLTHROUGH', status: 'HEALTHY' });
  assert.deepEqual(await evaluate(client, user('both-user')), { value: true, kind: 'RULE_MATCH', status: 'HEALTHY' });
  assert.deepEqual(await evaluate(client, user('nobody')), { value: false, kind: 'FALLTHROUGH', status: 'HEALTHY' });

  // A client that does not trust the certificate gets nothing.
  const untrusting = await makeClient(t, server, FLAGS, SEGMENTS, {
    redisOpts: { tls: {}, maxRetriesPerRequest: 0, retryStrategy: () => 100 },
  });
  const got = await evaluate(untrusting, user('in-user'));
  assert.deepEqual([got.value, got.status], [false, 'STORE_ERROR']);
});
