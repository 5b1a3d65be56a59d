'use strict';
// The SDK's big-segment membership cache under a context evaluated continuously, with the
// adapter as its store and writes made by the `segstore` CLI in another process.
//
// In @launchdarkly/js-server-sdk-common (BigSegmentsManager, cache/LruCache.ts) the cache is an
// LRU of `userCacheSize` contexts whose get() restarts the entry's age on every hit: an entry
// expires only after `userCacheTime` seconds *without* an evaluation of that context. A context
// evaluated more often than that keeps its first membership. README.md and
// bindings/node/README.md document this and the setting that bounds it, `userCacheTime: -1`
// (no cache: every evaluation asks the store); these tests hold both statements to the SDK.

const test = require('node:test');
const assert = require('node:assert/strict');
const { CountingStore, StoreDir, flagMatching, makeClient, segment, tempDir } = require('./helpers');

const REF = 'big.g1';
const FLAGS = { flag: flagMatching('flag', 'big') };
const SEGMENTS = { big: segment('big', { generation: 1 }) };
const ctx = { kind: 'user', key: 'hot-user' };

/** The documented bound with userCacheTime -1: the reader's 50 ms poll for new writes. */
const BOUND_MS = 50;
/** Allowance for a busy machine on top of a bound; no test waits for it unless it fails. */
const SLACK_MS = 10_000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function setup(t, cacheTime) {
  const dir = tempDir(t);
  const store = new StoreDir(dir);
  store.importKeys(REF, ['someone-else']);
  store.markSynced();
  const adapter = new CountingStore(store.path);
  const client = await makeClient(t, dir, adapter, FLAGS, SEGMENTS, { cacheTime });
  return { store, adapter, client };
}

/** The write that adds hot-user, in a child process; resolves to the time it was durable. */
function addHotUser(store) {
  return store
    .applyUpdatesAsync({ segment: REF, included: { add: [ctx.key] } })
    .then(() => Date.now());
}

test('userCacheTime -1: a context evaluated continuously sees a write within 50 ms', async (t) => {
  const { store, adapter, client } = await setup(t, -1);
  let evaluations = 0;
  const evaluate = async () => {
    evaluations += 1;
    return client.variationDetail('flag', ctx, false);
  };
  assert.equal((await evaluate()).value, false);

  const durable = addHotUser(store);
  const giveUp = Date.now() + BOUND_MS + SLACK_MS;
  let detail;
  for (;;) {
    detail = await evaluate();
    if (detail.value === true) break;
    assert.ok(Date.now() < giveUp, `the write never reached the SDK (${evaluations} evaluations)`);
    await sleep(1);
  }
  const seen = Date.now();
  const latency = seen - (await durable);
  t.diagnostic(`seen ${latency} ms after the CLI exited, after ${evaluations} evaluations`);
  assert.ok(latency <= BOUND_MS + SLACK_MS, `seen ${latency} ms after the write`);
  assert.equal(detail.reason.kind, 'RULE_MATCH');
  assert.equal(detail.reason.bigSegmentsStatus, 'HEALTHY');
  // Nothing was cached: every evaluation asked the store.
  assert.equal(adapter.membershipQueries.length, evaluations);
});

test('userCacheTime 1 s: a context evaluated every few ms keeps its cached membership', async (t) => {
  const cacheMs = 1000;
  const { store, adapter, client } = await setup(t, cacheMs / 1000);
  assert.equal(await client.variation('flag', ctx, false), false);
  assert.equal(adapter.membershipQueries.length, 1);

  // Evaluate every few ms for three cache times after the write. `gap` bounds from above the
  // time between two hits as the SDK measures it; a gap over the cache time (a stalled event
  // loop) would let the entry expire, and then the new membership is allowed.
  let previousStart = Date.now();
  let longestGap = 0;
  let evaluations = 0;
  const durable = addHotUser(store);
  const until = (await durable) + 3 * cacheMs;
  while (Date.now() < until) {
    const start = Date.now();
    const value = await client.variation('flag', ctx, false);
    longestGap = Math.max(longestGap, Date.now() - previousStart);
    previousStart = start;
    evaluations += 1;
    if (longestGap <= cacheMs) {
      assert.equal(
        value,
        false,
        'the SDK answered from the store although the context was evaluated more often than ' +
          'userCacheTime: its cache no longer restarts on a hit; update README.md and ' +
          'bindings/node/README.md',
      );
      assert.equal(adapter.membershipQueries.length, 1);
    }
    await sleep(5);
  }
  t.diagnostic(`${evaluations} evaluations over ${3 * cacheMs} ms, longest gap ${longestGap} ms`);

  // A pause longer than the cache time expires the entry: the next evaluation asks the store.
  await sleep(cacheMs + 200);
  const queries = adapter.membershipQueries.length;
  const detail = await client.variationDetail('flag', ctx, false);
  assert.equal(detail.value, true);
  assert.equal(detail.reason.bigSegmentsStatus, 'HEALTHY');
  assert.equal(adapter.membershipQueries.length, queries + 1);
});
