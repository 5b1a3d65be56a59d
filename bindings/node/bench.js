'use strict';
// Per-call cost of getUserMembership through the Node adapter (koffi over the C ABI).
//
// The stores have the shapes `cargo bench --bench ffi` measures: 3 and 100 segments of 1,000
// context hashes each, the probed context in three of them (two included, one excluded only),
// built with the CLI. Use the release library and CLI for figures:
//
//   cargo build --release --lib --bin segstore
//   SEGSTORE_LIB=target/release/libsegstore.so SEGSTORE_CLI=target/release/segstore \
//       node bindings/node/bench.js

const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { SegstoreBigSegmentStore, findLibrary } = require('.');

const REPO = path.resolve(__dirname, '..', '..');
const KEYS_PER_SEGMENT = 1000;

/** The `i`th (of three) segment holding the probed key (as in benches/ffi.rs). */
function probeSegment(segments, i) {
  const n = Math.min(Math.floor(segments / 10) + Math.floor((i * segments * 4) / 10), segments - 1);
  return `segment-${String(n).padStart(3, '0')}.g1`;
}

const contextHash = (key) => crypto.createHash('sha256').update(key).digest('base64');

function buildStore(cli, dir, segments) {
  const run = (args, input = '') =>
    execFileSync(cli, ['--dir', dir, ...args], { input, stdio: ['pipe', 'ignore', 'inherit'] });
  run(['init']);
  for (let s = 0; s < segments; s++) {
    let keys = '';
    for (let i = 0; i < KEYS_PER_SEGMENT; i++) keys += `user-${s}-${i}\n`;
    run(['import', '--segment', `segment-${String(s).padStart(3, '0')}.g1`, '--hash-keys', '-'], keys);
  }
  const update = (ref, list) => `${JSON.stringify({ segment: ref, [list]: { add: ['probe'] } })}\n`;
  run(
    ['apply', '--hash-keys', '-'],
    update(probeSegment(segments, 0), 'included') +
      update(probeSegment(segments, 1), 'included') +
      update(probeSegment(segments, 2), 'excluded'),
  );
  run(['compact']);
}

/** The median of 7 runs of `n` calls, in ns per call. */
async function perCallNs(fn, n) {
  const runs = [];
  for (let r = 0; r < 7; r++) {
    const start = process.hrtime.bigint();
    for (let i = 0; i < n; i++) await fn();
    runs.push(Number(process.hrtime.bigint() - start) / n);
  }
  runs.sort((a, b) => a - b);
  return runs[3];
}

async function main() {
  const cli = process.env.SEGSTORE_CLI || path.join(REPO, 'target', 'release', 'segstore');
  console.log(`library: ${findLibrary()}\nCLI: ${cli}\nNode ${process.version}`);
  for (const segments of [3, 100]) {
    await benchStore(cli, segments);
  }
}

async function benchStore(cli, segments) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'segstore-bench-'));
  try {
    const dir = path.join(tmp, 'store');
    buildStore(cli, dir, segments);
    const store = new SegstoreBigSegmentStore(dir);
    const hit = contextHash('probe');
    const miss = contextHash('absent');
    assert.deepEqual(store.membershipSync(hit), {
      [probeSegment(segments, 0)]: true,
      [probeSegment(segments, 1)]: true,
      [probeSegment(segments, 2)]: false,
    });
    assert.equal(store.membershipSync(miss), undefined);
    const one = probeSegment(segments, 1);
    const n = 200000;
    const figures = {
      'getUserMembership (async), key in 3 segments': await perCallNs(() => store.getUserMembership(hit), n),
      'membershipSync, key in 3 segments': await perCallNs(() => store.membershipSync(hit), n),
      'membershipSync, key in none': await perCallNs(() => store.membershipSync(miss), n),
      'check, one segment': await perCallNs(() => store.check(one, hit), n),
    };
    store.close();
    for (const [name, ns] of Object.entries(figures)) {
      console.log(`${String(segments).padStart(3)} segments: ${name.padEnd(46)} ${(ns / 1000).toFixed(2).padStart(6)} µs/call`);
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
