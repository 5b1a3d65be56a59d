'use strict';
// A Redis-protocol server (a real redis-server, or `segstore serve --redis`, chosen by
// SEGSTORE_REDIS_TARGET), a writer that writes the way the Relay Proxy does, and an offline SDK
// client whose big-segment store is the SDK's own Redis store
// (@launchdarkly/node-server-sdk-redis).

const assert = require('node:assert/strict');
const { execFileSync, spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');
const { Redis } = require('ioredis');
const ld = require('@launchdarkly/node-server-sdk');
const { RedisBigSegmentStore } = require('@launchdarkly/node-server-sdk-redis');

const REPO = path.resolve(__dirname, '..', '..', '..', '..');
const DEFAULT_PREFIX = 'launchdarkly';
const TARGETS = ['redis', 'segstore'];
const LISTENING = /^serve: redis listening on 127\.0\.0\.1:(\d+)$/;
const LISTENING_UNIX = /^serve: redis listening on unix:(.+)$/;
const LISTENING_TLS = /^serve: redis listening on tls:127\.0\.0\.1:(\d+)$/;
const START_TIMEOUT_MS = 30000;
const STOP_TIMEOUT_MS = 15000;
// With `auth: true` a server has these two users and no anonymous access.
const WRITER = { username: 'writer', password: 'writer-secret' };
const READER = { username: 'sdk', password: 'sdk-secret' };

function target() {
  const value = process.env.SEGSTORE_REDIS_TARGET || 'redis';
  assert.ok(TARGETS.includes(value), `SEGSTORE_REDIS_TARGET must be one of ${TARGETS}, not ${value}`);
  return value;
}

function cliPath() {
  const cli = process.env.SEGSTORE_CLI || path.join(REPO, 'target', 'debug', 'segstore');
  assert.ok(fs.existsSync(cli), `the segstore CLI is not at ${cli}: run \`cargo build --bin segstore\``);
  return cli;
}

function runCli(store, args, input = '') {
  return execFileSync(cliPath(), ['--dir', store, ...args], {
    input,
    encoding: 'utf8',
    stdio: ['pipe', 'pipe', 'pipe'],
    timeout: 60000,
  });
}

/** LaunchDarkly's context hash: standard padded base64 of SHA-256 of the key. */
function contextHash(key) {
  return crypto.createHash('sha256').update(key, 'utf8').digest('base64');
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Calls `fn` every `intervalMs` until it resolves truthy; fails after `timeoutMs`. */
async function pollUntil(fn, what, { timeoutMs = 10000, intervalMs = 20 } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const got = await fn();
    if (got) return got;
    assert.ok(Date.now() < deadline, `${what}: not seen within ${timeoutMs} ms`);
    await sleep(intervalMs);
  }
}

/** A temporary directory removed after `t`. */
function tempDir(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'segstore-sdk-redis-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A self-signed certificate for 127.0.0.1 and its key (PEM), made with the openssl CLI. */
function makeTlsFiles(dir) {
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  execFileSync(
    'openssl',
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '2',
      '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'],
    { stdio: ['ignore', 'ignore', 'pipe'], timeout: 60000 },
  );
  return { cert, key };
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** True when a PING (after AUTH as `user`, if given) answers +PONG; `where` is net.connect's. */
function ping(where, user) {
  return new Promise((resolve) => {
    const sock = net.connect(where);
    let data = '';
    const done = (ok) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(1000, () => done(false));
    sock.once('error', () => done(false));
    const auth = user ? `AUTH ${user.username} ${user.password}\r\n` : '';
    const want = user ? '+OK\r\n+PONG\r\n' : '+PONG\r\n';
    sock.once('connect', () => sock.write(`${auth}PING\r\n`));
    sock.on('data', (chunk) => {
      data += chunk;
      if (data.length >= want.length || data.startsWith('-')) done(data.startsWith(want));
    });
  });
}

/** True when a PING over TLS (trusting `caFile`) on 127.0.0.1:port answers PONG. */
async function pingTls(port, caFile) {
  const conn = new Redis({
    host: '127.0.0.1',
    port,
    tls: { ca: fs.readFileSync(caFile) },
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  conn.on('error', () => {});
  try {
    await conn.connect();
    return (await conn.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    conn.disconnect();
  }
}

function exited(proc, timeoutMs) {
  return new Promise((resolve) => {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      resolve({ code: proc.exitCode, signal: proc.signalCode });
      return;
    }
    const timer = setTimeout(() => resolve(null), timeoutMs);
    proc.once('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal });
    });
  });
}

/** One Redis-protocol server on a loopback port. */
class Server {
  constructor(kind, dir, prefix, auth = false, persist = false, unix = false, tls = null) {
    this.kind = kind;
    this.auth = auth;
    // redis-server keeps nothing across a restart unless told to (segstore always does).
    this.persist = persist;
    this.dir = dir;
    this.prefix = prefix;
    this.store = kind === 'segstore' ? path.join(dir, 'store') : null;
    this.port = null;
    // With `unix`, the server listens on a Unix socket only (a short path: sun_path is small).
    this.unixPath = unix ? path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ss-sock-')), 'redis.sock') : null;
    // With `tls` ({cert, key}), the server listens over TLS only.
    this.tls = tls;
    this.proc = null;
    this.stderr = '';
  }

  /** Where ioredis connects (and, with TLS, the CA it trusts). */
  where() {
    if (this.unixPath) return { path: this.unixPath };
    const tls = this.tls ? { tls: { ca: fs.readFileSync(this.tls.cert) } } : {};
    return { host: '127.0.0.1', port: this.port, ...tls };
  }

  key(name) {
    return `${this.prefix}:${name}`;
  }

  /** A plain ioredis connection on the server (as the writer, unless `user`), quit after `t`. */
  connect(t, user = this.auth ? WRITER : {}) {
    const conn = new Redis({ ...this.where(), maxRetriesPerRequest: 1, ...user });
    // Connection errors surface as rejected commands; the event alone would only be noise.
    conn.on('error', () => {});
    t.after(() => conn.quit().catch(() => conn.disconnect()));
    return conn;
  }

  /** Starts the server on `port` (a free one if not given). */
  async start({ init = true, port } = {}) {
    this.port = null;
    if (this.kind === 'redis') await this.startRedis(port);
    else await this.startSegstore(init, port);
  }

  async startRedis(fixedPort) {
    for (let attempt = 0; attempt < (fixedPort || this.unixPath ? 1 : 5); attempt += 1) {
      const port = fixedPort || (await freePort());
      const listen = this.unixPath
        ? ['--port', '0', '--unixsocket', this.unixPath, '--unixsocketperm', '700']
        : ['--bind', '127.0.0.1', '--port', String(port)];
      if (this.tls) {
        listen.splice(0, listen.length, '--bind', '127.0.0.1', '--port', '0', '--tls-port', String(port),
          '--tls-cert-file', this.tls.cert, '--tls-key-file', this.tls.key, '--tls-auth-clients', 'no');
      }
      const users = !this.auth
        ? []
        : [
            ...['--user', 'default', 'off'],
            ...['--user', WRITER.username, 'on', `>${WRITER.password}`, '~*', '&*', '+@all'],
            ...['--user', READER.username, 'on', `>${READER.password}`, '~*', '&*', '+@all', '-@write'],
          ];
      const durability = this.persist ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no'];
      const proc = spawn(
        'redis-server',
        [...listen, '--save', '', ...durability, '--dir', this.dir, ...users],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      proc.stderr.on('data', (d) => {
        this.stderr += d;
      });
      let spawnError = null;
      proc.once('error', (e) => {
        spawnError = e;
      });
      const deadline = Date.now() + START_TIMEOUT_MS;
      while (proc.exitCode === null && !spawnError && Date.now() < deadline) {
        const where = this.unixPath ? { path: this.unixPath } : { host: '127.0.0.1', port };
        if (await (this.tls ? pingTls(port, this.tls.cert) : ping(where, this.auth ? WRITER : undefined))) {
          this.proc = proc;
          this.port = this.unixPath ? null : port;
          return;
        }
        await sleep(20);
      }
      if (spawnError) assert.fail(`redis-server could not be started: ${spawnError.message}`);
      if (proc.exitCode === null) {
        proc.kill('SIGKILL');
        await exited(proc, STOP_TIMEOUT_MS);
      }
    }
    assert.fail(`redis-server did not start: ${this.stderr}`);
  }

  async startSegstore(init, port = 0) {
    let listen = this.unixPath ? ['--redis-unix', this.unixPath] : ['--redis', `127.0.0.1:${port}`];
    if (this.tls) listen = ['--redis-tls', `127.0.0.1:${port}`, '--tls-cert', this.tls.cert, '--tls-key', this.tls.key];
    const args = ['--dir', this.store, 'serve', ...listen];
    if (this.prefix !== DEFAULT_PREFIX) args.push('--redis-prefix', this.prefix);
    if (init) args.push('--init');
    if (this.auth) {
      const file = path.join(this.dir, 'passwords');
      const text = `${WRITER.username} rw ${WRITER.password}\n${READER.username} ro ${READER.password}\n`;
      fs.writeFileSync(file, text, { mode: 0o600 });
      args.push('--redis-password-file', file);
    }
    const proc = spawn(cliPath(), args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = proc;
    proc.stderr.on('data', (d) => {
      this.stderr += d;
    });
    const lines = [];
    const bound = await new Promise((resolve) => {
      const timer = setTimeout(() => resolve(null), START_TIMEOUT_MS);
      const finish = (value) => {
        clearTimeout(timer);
        resolve(value);
      };
      // Keeps reading stdout after the listening line so the server never blocks on it.
      readline.createInterface({ input: proc.stdout }).on('line', (line) => {
        lines.push(line);
        const tcp = (this.tls ? LISTENING_TLS : LISTENING).exec(line);
        const unix = LISTENING_UNIX.exec(line);
        if (tcp && !this.unixPath) finish(Number(tcp[1]));
        if (unix && unix[1] === this.unixPath) finish('unix');
      });
      proc.once('exit', () => finish(null));
      proc.once('error', () => finish(null));
    });
    if (bound === null) {
      if (proc.exitCode === null) proc.kill('SIGKILL');
      const how = await exited(proc, STOP_TIMEOUT_MS);
      this.proc = null;
      assert.fail(
        `segstore ${args.join(' ')} printed no "serve: redis listening on 127.0.0.1:PORT" line ` +
          `(exit ${JSON.stringify(how)}); stdout ${JSON.stringify(lines)}; stderr: ${this.stderr}`,
      );
    }
    this.port = bound === 'unix' ? null : bound;
  }

  /** SIGTERM; the server must exit 0 (redis-server does too). */
  async stop() {
    const { proc } = this;
    if (!proc) return;
    this.proc = null;
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
    const how = await exited(proc, STOP_TIMEOUT_MS);
    if (how === null) {
      proc.kill('SIGKILL');
      assert.fail(`${this.kind} did not exit within ${STOP_TIMEOUT_MS} ms of SIGTERM`);
    }
    assert.deepEqual(how, { code: 0, signal: null }, `${this.kind} after SIGTERM; stderr: ${this.stderr}`);
  }
}

/** Writes big-segment data over the Redis protocol in the Relay Proxy's shape. */
class RelayWriter {
  constructor(t, server) {
    this.server = server;
    this.conn = server.connect(t);
  }

  /**
   * Applies one patch (raw context keys, hashed here). Resolves false when it was not applied:
   * the stored cursor differs from `previousVersion`, or EXEC answered nil (a WATCH conflict).
   * `beforeExec`, if given, runs after WATCH and before EXEC (to provoke a conflict).
   */
  async patch(ref, version, { previousVersion, includedAdd = [], includedRemove = [], excludedAdd = [], excludedRemove = [], beforeExec } = {}) {
    const s = this.server;
    const lock = s.key('big_segments_lock');
    const cursor = s.key('big_segments_cursor');
    await this.conn.watch(lock);
    const current = await this.conn.get(cursor);
    if (current !== null && previousVersion !== undefined && current !== previousVersion) {
      await this.conn.unwatch();
      return false;
    }
    const tx = this.conn.multi();
    tx.set(lock, '');
    tx.set(cursor, version);
    for (const [keys, name, op] of [
      [includedAdd, 'big_segment_include', 'sadd'],
      [includedRemove, 'big_segment_include', 'srem'],
      [excludedAdd, 'big_segment_exclude', 'sadd'],
      [excludedRemove, 'big_segment_exclude', 'srem'],
    ]) {
      for (const k of keys) tx[op](s.key(`${name}:${contextHash(k)}`), ref);
    }
    if (beforeExec) await beforeExec();
    const result = await tx.exec();
    if (result === null) return false;
    for (const [err] of result) assert.equal(err, null, `a command in EXEC failed: ${err}`);
    return true;
  }

  async markSynced(atMs = Date.now()) {
    assert.equal(await this.conn.set(this.server.key('big_segments_synchronized_on'), String(atMs)), 'OK');
  }

  /** Writes a preload over the protocol: one patch per ref and list, then synchronized_on. */
  async load({ included = {}, excluded = {}, syncedAt }) {
    const cursor = await this.conn.get(this.server.key('big_segments_cursor'));
    let version = cursor === null ? 0 : Number(cursor);
    for (const [ref, keys] of Object.entries(included)) {
      version += 1;
      assert.ok(await this.patch(ref, String(version), { includedAdd: keys }));
    }
    for (const [ref, keys] of Object.entries(excluded)) {
      version += 1;
      assert.ok(await this.patch(ref, String(version), { excludedAdd: keys }));
    }
    if (syncedAt !== undefined) await this.markSynced(syncedAt);
  }
}

/**
 * Starts a server, stopped (and checked) after `t`. With target segstore a `preload`
 * ({included: {ref: [keys]}, excluded: {...}, syncedAt}) goes in through the CLI (`init`,
 * `import`, `mark-synced`) before `serve` starts; with target redis the same data is written
 * over the protocol by the Relay-style writer right after it starts.
 */
async function startServer(t, { prefix = DEFAULT_PREFIX, preload, auth = false, persist = false, unix = false, tls = false } = {}) {
  const kind = target();
  const dir = tempDir(t);
  const server = new Server(kind, dir, prefix, auth, persist, unix, tls ? makeTlsFiles(dir) : null);
  t.after(async () => {
    await server.stop();
    if (server.unixPath) fs.rmSync(path.dirname(server.unixPath), { recursive: true, force: true });
  });
  if (kind === 'segstore' && preload) {
    runCli(server.store, ['init']);
    for (const [lists, extra] of [
      [preload.included || {}, []],
      [preload.excluded || {}, ['--excluded']],
    ]) {
      for (const [ref, keys] of Object.entries(lists)) {
        runCli(
          server.store,
          ['import', '--segment', ref, '--hash-keys', '--mode', 'merge', ...extra, '-'],
          keys.map((k) => `${k}\n`).join(''),
        );
      }
    }
    if (preload.syncedAt !== undefined) runCli(server.store, ['mark-synced', '--at', String(preload.syncedAt)]);
    await server.start({ init: false });
  } else {
    await server.start({ init: true });
    if (preload) await new RelayWriter(t, server).load(preload);
  }
  return server;
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

/**
 * An offline SDK client: flags from a file, big segments from the SDK's own Redis store on
 * `server` (its prefix unless `prefix` is given; as the read-only user when the server has
 * users, unless `user` is given); closed after `t`.
 */
async function makeClient(
  t,
  server,
  flags,
  segments,
  { prefix, staleAfter = 120, cacheTime = 5, statusPollInterval = 5, redisOpts = {}, user } = {},
) {
  const file = path.join(tempDir(t), 'flags.json');
  fs.writeFileSync(file, JSON.stringify({ flags, segments }));
  const client = ld.init('sdk-key-offline-test', {
    updateProcessor: new ld.integrations.FileDataSourceFactory({ paths: [file] }).getFactory(),
    sendEvents: false,
    diagnosticOptOut: true,
    logger: ld.basicLogger({ level: 'none' }),
    bigSegments: {
      store: RedisBigSegmentStore({
        prefix: prefix === undefined ? server.prefix : prefix,
        redisOpts: { ...server.where(), ...(user || (server.auth ? READER : {})), ...redisOpts },
      }),
      staleAfter,
      userCacheTime: cacheTime,
      statusPollInterval,
    },
  });
  t.after(() => client.close());
  await client.waitForInitialization({ timeout: 5 });
  return client;
}

async function evaluate(client, context, flag = 'beta-flag') {
  const detail = await client.variationDetail(flag, context, 'default');
  return { value: detail.value, kind: detail.reason.kind, status: detail.reason.bigSegmentsStatus };
}

module.exports = {
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
};
