'use strict';
// Stores built with the real `segstore` CLI in child processes, flag data for the SDK's file
// data source, and an offline SDK client over both.

const assert = require('node:assert/strict');
const { execFile, execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const ld = require('@launchdarkly/node-server-sdk');
const { SegstoreBigSegmentStore } = require('segstore-ld');

const REPO = path.resolve(__dirname, '..', '..', '..');

function cliPath() {
  const cli = process.env.SEGSTORE_CLI || path.join(REPO, 'target', 'debug', 'segstore');
  assert.ok(fs.existsSync(cli), `the segstore CLI is not at ${cli}: run \`cargo build\``);
  return cli;
}

/** A temporary directory removed by `cleanup`. */
function tempDir(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'segstore-node-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A store directory written only through the CLI. */
class StoreDir {
  constructor(dir) {
    this.path = path.join(dir, 'store');
    this.run(['init']);
  }

  run(args, input = '') {
    return execFileSync(cliPath(), ['--dir', this.path, ...args], {
      input,
      encoding: 'utf8',
      stdio: ['pipe', 'pipe', 'pipe'],
    });
  }

  /** Bulk-loads raw context keys (hashed by the CLI) into one list of `segment`. */
  importKeys(segment, keys, { excluded = false, kind } = {}) {
    const args = ['import', '--segment', segment, '--hash-keys', '--mode', 'merge'];
    if (excluded) args.push('--excluded');
    if (kind) args.push('--kind', kind);
    this.run([...args, '-'], keys.map((k) => `${k}\n`).join(''));
  }

  /** Applies REST-style updates (raw keys), one atomic batch per update. */
  applyUpdates(...updates) {
    this.run(['apply', '--hash-keys', '-'], updates.map((u) => `${JSON.stringify(u)}\n`).join(''));
  }

  /**
   * applyUpdates in a child process without blocking this one's event loop (evaluations go on
   * meanwhile); resolves when the CLI has exited, that is when the write is durable.
   */
  applyUpdatesAsync(...updates) {
    return new Promise((resolve, reject) => {
      const child = execFile(
        cliPath(),
        ['--dir', this.path, 'apply', '--hash-keys', '-'],
        { encoding: 'utf8' },
        (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve()),
      );
      child.stdin.end(updates.map((u) => `${JSON.stringify(u)}\n`).join(''));
    });
  }

  markSynced(atMs) {
    this.run(atMs === undefined ? ['mark-synced'] : ['mark-synced', '--at', String(atMs)]);
  }
}

/** A big (synced) segment as the LaunchDarkly data model spells it. */
function segment(key, { generation = 1, kind } = {}) {
  const data = {
    key,
    version: 1,
    unbounded: true,
    included: [],
    excluded: [],
    rules: [],
    salt: 'salt',
    deleted: false,
  };
  if (generation !== null) data.generation = generation;
  if (kind) data.unboundedContextKind = kind;
  return data;
}

/** A boolean flag: true when the context is in `segmentKey`, false otherwise. */
function flagMatching(key, segmentKey) {
  return {
    key,
    version: 1,
    on: true,
    variations: [false, true],
    offVariation: 0,
    fallthrough: { variation: 0 },
    targets: [],
    prerequisites: [],
    rules: [
      {
        id: `${key}-rule`,
        clauses: [{ attribute: 'key', op: 'segmentMatch', values: [segmentKey], negate: false }],
        variation: 1,
        trackEvents: false,
      },
    ],
    salt: 'salt',
    trackEvents: false,
    trackEventsFallthrough: false,
    deleted: false,
  };
}

/** The adapter, counting the SDK's membership queries. */
class CountingStore extends SegstoreBigSegmentStore {
  constructor(dir) {
    super(dir);
    this.membershipQueries = [];
  }

  async getUserMembership(hash) {
    this.membershipQueries.push(hash);
    return super.getUserMembership(hash);
  }
}

/** An offline SDK client: flags from a file, big segments from `store`; closed after `t`. */
async function makeClient(t, dir, store, flags, segments, { staleAfter = 120, cacheTime = 5 } = {}) {
  const file = path.join(dir, 'flags.json');
  fs.writeFileSync(file, JSON.stringify({ flags, segments }));
  const client = ld.init('sdk-key-offline-test', {
    updateProcessor: new ld.integrations.FileDataSourceFactory({ paths: [file] }).getFactory(),
    sendEvents: false,
    diagnosticOptOut: true,
    logger: ld.basicLogger({ level: 'warn' }),
    bigSegments: { store: () => store, staleAfter, userCacheTime: cacheTime },
  });
  t.after(() => client.close());
  await client.waitForInitialization({ timeout: 5 });
  return client;
}

function contextHash(key) {
  return crypto.createHash('sha256').update(key, 'utf8').digest('base64');
}

module.exports = {
  CountingStore,
  StoreDir,
  contextHash,
  flagMatching,
  makeClient,
  segment,
  tempDir,
};
