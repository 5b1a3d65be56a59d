'use strict';
// The adapter under the official LaunchDarkly Node.js SDK, offline: flags and segments from
// its file data source, membership from a store the `segstore` CLI wrote in other processes.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { SegstoreBigSegmentStore, SegstoreError, findLibrary, PACKAGED_LIB } = require('segstore-ld');
const {
  CountingStore,
  StoreDir,
  contextHash,
  flagMatching,
  makeClient,
  segment,
  tempDir,
} = require('./helpers');

const REF = 'big.g3';
const FLAGS = { flag: flagMatching('flag', 'big') };
const SEGMENTS = { big: segment('big', { generation: 3 }) };

/** `big.g3`: in-user and both-user included; out-user and both-user excluded. */
function standardStore(t, { syncedAt } = {}) {
  const dir = tempDir(t);
  const store = new StoreDir(dir);
  store.importKeys(REF, ['in-user', 'both-user']);
  store.importKeys(REF, ['out-user', 'both-user'], { excluded: true });
  store.markSynced(syncedAt);
  const adapter = new CountingStore(store.path);
  return { dir, store, adapter };
}

const user = (key) => ({ kind: 'user', key });

test('an included context matches the rule and is healthy', async (t) => {
  const { dir, adapter } = standardStore(t);
  const client = await makeClient(t, dir, adapter, FLAGS, SEGMENTS);
  const detail = await client.variationDetail('flag', user('in-user'), 'default');
  assert.equal(detail.value, true);
  assert.equal(detail.reason.kind, 'RULE_MATCH');
  assert.equal(detail.reason.bigSegmentsStatus, 'HEALTHY');
});

test('an excluded-only context falls through', async (t) => {
  const { dir, adapter } = standardStore(t);
  const client = await makeClient(t, dir, adapter, FLAGS, SEGMENTS);
  const detail = await client.variationDetail('flag', user('out-user'), 'default');
  assert.equal(detail.value, false);
  assert.equal(detail.reason.kind, 'FALLTHROUGH');
  assert.equal(detail.reason.bigSegmentsStatus, 'HEALTHY');
});

test('included and excluded means included', async (t) => {
  const { dir, adapter } = standardStore(t);
  assert.deepEqual(await adapter.getUserMembership(contextHash('both-user')), { [REF]: true });
  const client = await makeClient(t, dir, adapter, FLAGS, SEGMENTS);
  const detail = await client.variationDetail('flag', user('both-user'), 'default');
  assert.equal(detail.value, true);
  assert.equal(detail.reason.kind, 'RULE_MATCH');
  assert.equal(detail.reason.bigSegmentsStatus, 'HEALTHY');
});

test('an unknown context falls through', async (t) => {
  const { dir, adapter } = standardStore(t);
  const client = await makeClient(t, dir, adapter, FLAGS, SEGMENTS);
  const detail = await client.variationDetail('flag', user('nobody'), 'default');
  assert.equal(detail.value, false);
  assert.equal(detail.reason.kind, 'FALLTHROUGH');
  assert.equal(detail.reason.bigSegmentsStatus, 'HEALTHY');
  assert.deepEqual(adapter.membershipQueries, [contextHash('nobody')]);
});

test('a sync older than staleAfter is stale', async (t) => {
  const { dir, adapter } = standardStore(t, { syncedAt: Date.now() - 10 * 60 * 1000 });
  const client = await makeClient(t, dir, adapter, FLAGS, SEGMENTS, { staleAfter: 60 });
  const detail = await client.variationDetail('flag', user('in-user'), 'default');
  assert.equal(detail.value, true);
  assert.equal(detail.reason.bigSegmentsStatus, 'STALE');
});

test('a store never synced is stale', async (t) => {
  const dir = tempDir(t);
  const store = new StoreDir(dir);
  store.importKeys(REF, ['in-user']);
  const adapter = new SegstoreBigSegmentStore(store.path);
  assert.deepEqual(await adapter.getMetadata(), { lastUpToDate: undefined });
  const client = await makeClient(t, dir, adapter, FLAGS, SEGMENTS);
  const detail = await client.variationDetail('flag', user('in-user'), 'default');
  assert.equal(detail.value, true);
  assert.equal(detail.reason.bigSegmentsStatus, 'STALE');
});

test('a segment without a generation is not configured and never queried', async (t) => {
  const { dir, adapter } = standardStore(t);
  const client = await makeClient(t, dir, adapter, FLAGS, {
    big: segment('big', { generation: null }),
  });
  const detail = await client.variationDetail('flag', user('in-user'), 'default');
  assert.equal(detail.value, false);
  assert.equal(detail.reason.bigSegmentsStatus, 'NOT_CONFIGURED');
  assert.deepEqual(adapter.membershipQueries, []);
});

test('an org segment is queried with the org of a multi-kind context', async (t) => {
  const dir = tempDir(t);
  const store = new StoreDir(dir);
  store.importKeys('orgs.g1', ['org-1'], { kind: 'org' });
  store.markSynced();
  const adapter = new CountingStore(store.path);
  const client = await makeClient(
    t,
    dir,
    adapter,
    { 'org-flag': flagMatching('org-flag', 'orgs') },
    { orgs: segment('orgs', { generation: 1, kind: 'org' }) },
  );
  const multi = { kind: 'multi', user: { key: 'someone' }, org: { key: 'org-1' } };
  let detail = await client.variationDetail('org-flag', multi, 'default');
  assert.equal(detail.value, true);
  assert.equal(detail.reason.kind, 'RULE_MATCH');
  assert.equal(detail.reason.bigSegmentsStatus, 'HEALTHY');
  assert.deepEqual(adapter.membershipQueries, [contextHash('org-1')]);

  // A user whose key happens to be the org's is not the org.
  detail = await client.variationDetail('org-flag', user('org-1'), 'default');
  assert.equal(detail.value, false);
  assert.deepEqual(adapter.membershipQueries, [contextHash('org-1')]);
});

test('a write by another process shows up after the cache time', async (t) => {
  const { dir, store, adapter } = standardStore(t);
  const cacheTime = 1;
  const client = await makeClient(t, dir, adapter, FLAGS, SEGMENTS, { cacheTime });
  assert.equal(await client.variation('flag', user('late-user'), 'default'), false);

  const written = Date.now();
  store.applyUpdates({ segment: REF, included: { add: ['late-user'] } });
  const deadline = written + (cacheTime + 5) * 1000;
  let detail;
  for (;;) {
    // This SDK's membership cache restarts a context's cache time on every hit, so the
    // evaluations are spaced further apart than the cache time.
    await new Promise((resolve) => setTimeout(resolve, cacheTime * 1000 + 100));
    detail = await client.variationDetail('flag', user('late-user'), 'default');
    if (detail.value === true) break;
    assert.ok(Date.now() < deadline, 'the write never reached the SDK');
  }
  t.diagnostic(`visible to the SDK ${Date.now() - written} ms after the write (cache ${cacheTime} s)`);
  assert.equal(detail.reason.kind, 'RULE_MATCH');
  assert.equal(detail.reason.bigSegmentsStatus, 'HEALTHY');
});

test('verifyOnRead opens and answers as the default does', async (t) => {
  const { store } = standardStore(t);
  const checked = new SegstoreBigSegmentStore(store.path, { verifyOnRead: true });
  const plain = new SegstoreBigSegmentStore(store.path);
  for (const key of ['in-user', 'out-user', 'both-user', 'nobody']) {
    assert.deepEqual(checked.membershipSync(contextHash(key)), plain.membershipSync(contextHash(key)));
  }
  assert.deepEqual(checked.membershipSync(contextHash('in-user')), { [REF]: true });
  checked.close();
  plain.close();
});

test('errors throw and close is final', async (t) => {
  const dir = tempDir(t);
  const store = new StoreDir(dir);
  assert.throws(() => new SegstoreBigSegmentStore(`${store.path}/missing`), /no store/);
  const adapter = new SegstoreBigSegmentStore(store.path);
  await assert.rejects(adapter.getUserMembership(''), /invalid key/);
  assert.equal(adapter.check(REF, contextHash('in-user')), undefined);
  adapter.close();
  adapter.close();
  await assert.rejects(adapter.getUserMembership(contextHash('in-user')), SegstoreError);
});

test('the packaged library is used unless SEGSTORE_LIB overrides it', (t) => {
  const saved = process.env.SEGSTORE_LIB;
  t.after(() => {
    if (saved === undefined) delete process.env.SEGSTORE_LIB;
    else process.env.SEGSTORE_LIB = saved;
  });
  const pkg = path.dirname(require.resolve('segstore-ld/package.json'));
  assert.equal(PACKAGED_LIB, path.join(pkg, 'native', 'libsegstore.so'));
  delete process.env.SEGSTORE_LIB;
  assert.equal(findLibrary(), PACKAGED_LIB);
  assert.ok(fs.statSync(PACKAGED_LIB).isFile());

  const dir = tempDir(t);
  process.env.SEGSTORE_LIB = path.join(dir, 'absent.so');
  assert.throws(() => findLibrary(), /absent\.so does not exist/);
  process.env.SEGSTORE_LIB = PACKAGED_LIB;
  assert.equal(findLibrary(), PACKAGED_LIB);

  delete process.env.SEGSTORE_LIB;
  const missing = path.join(dir, 'native', 'libsegstore.so');
  assert.throws(
    () => findLibrary(missing),
    (err) =>
      err instanceof SegstoreError &&
      err.message.includes(missing) &&
      err.message.includes('npm install ./bindings/node') &&
      err.message.includes('SEGSTORE_LIB'),
  );
});
