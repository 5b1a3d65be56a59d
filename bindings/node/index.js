'use strict';
/**
 * segstore as the big-segment store of the LaunchDarkly Node.js server-side SDK, over the C
 * ABI (include/segstore.h) through koffi.
 *
 *     const ld = require('@launchdarkly/node-server-sdk');
 *     const { SegstoreBigSegmentStore } = require('segstore-ld');
 *     const client = ld.init(sdkKey, {
 *       bigSegments: {
 *         store: () => new SegstoreBigSegmentStore('/var/lib/segstore'),
 *         userCacheTime: -1, // no SDK cache, which a steady stream of hits keeps stale (README.md)
 *       },
 *     });
 *
 * The library is native/libsegstore.so, which the package carries (`npm pack` in
 * bindings/node builds it with cargo; see scripts/build-native.js). The path in SEGSTORE_LIB,
 * when set, overrides it.
 */

const fs = require('node:fs');
const path = require('node:path');
const koffi = requireKoffi();

/**
 * koffi, this package's one dependency. Installed from its directory, this package is a
 * symlink to bindings/node (npm 10 and later), and Node resolves koffi from there: the package's
 * install script puts it in bindings/node/node_modules. That script did not run if npm was told
 * to skip scripts.
 */
function requireKoffi() {
  try {
    return require('koffi');
  } catch (err) {
    if (err.code !== 'MODULE_NOT_FOUND' || !String(err.message).includes("'koffi'")) throw err;
    throw new Error(
      `segstore-ld: its dependency koffi is not found from ${__dirname}. A directory installed ` +
        'as a link gets its dependencies from its install script, which did not run (npm ' +
        `--ignore-scripts?): run \`npm install --omit=dev --omit=peer\` in ${__dirname}, or ` +
        'install again with scripts, or install the tarball `npm pack` makes in bindings/node',
    );
  }
}

const SEGSTORE_OK = 0;
const SEGSTORE_ERROR = -1;
const SEGSTORE_INCLUDED = 1;
const SEGSTORE_EXCLUDED = 2;
const SEGSTORE_OPEN_VERIFY_ON_READ = 1;
const LIB_NAME = 'libsegstore.so';

/** A segstore call failed; the message is the library's segstore_last_error(). */
class SegstoreError extends Error {
  constructor(message) {
    super(message);
    this.name = 'SegstoreError';
  }
}

/** The library this package carries (built by scripts/build-native.js). */
const PACKAGED_LIB = path.join(__dirname, 'native', LIB_NAME);

/**
 * The path of libsegstore.so: SEGSTORE_LIB if set, else the packaged library. Throws a
 * SegstoreError naming where it looked and what to do if there is none.
 * @param {string} [packaged] where the packaged library is (for tests)
 */
function findLibrary(packaged = PACKAGED_LIB) {
  const explicit = process.env.SEGSTORE_LIB;
  if (explicit) {
    if (!fs.existsSync(explicit)) {
      throw new SegstoreError(
        `SEGSTORE_LIB=${explicit} does not exist: point it at a libsegstore.so ` +
          '(`cargo build --release --no-default-features --lib` makes ' +
          `target/release/${LIB_NAME}), or unset it to use the packaged library`,
      );
    }
    return explicit;
  }
  if (fs.existsSync(packaged)) return packaged;
  throw new SegstoreError(
    `${LIB_NAME} not found: looked for ${packaged} (the library the segstore-ld package ` +
      'carries) and SEGSTORE_LIB (not set). Install the package with `npm install ' +
      './bindings/node` from a segstore checkout, or the tarball `npm pack` makes there (both ' +
      'build the library with cargo), or set SEGSTORE_LIB to the path of a libsegstore.so',
  );
}

let native = null;

/** The library's functions, declared once per process (koffi type names are global). */
function load() {
  if (native) return native;
  const lib = koffi.load(findLibrary());
  koffi.opaque('segstore_reader');
  const Metadata = koffi.struct('segstore_metadata', {
    has_synchronized_on: 'bool',
    synchronized_on: 'uint64_t',
  });
  const Entry = koffi.struct('segstore_membership_entry', {
    segment: 'const char *',
    included: 'bool',
  });
  const Membership = koffi.struct('segstore_membership', {
    len: 'size_t',
    entries: 'segstore_membership_entry *',
  });
  native = {
    Metadata,
    Entry,
    Membership,
    open: lib.func('segstore_reader *segstore_open_read_only_flags(const char *dir, uint32_t flags)'),
    close: lib.func('void segstore_close(segstore_reader *reader)'),
    getMetadata: lib.func(
      'int32_t segstore_get_metadata(const segstore_reader *reader, _Out_ segstore_metadata *out)',
    ),
    getMembership: lib.func(
      'segstore_membership *segstore_get_membership(const segstore_reader *reader, const char *context_hash)',
    ),
    free: lib.func('void segstore_membership_free(segstore_membership *membership)'),
    check: lib.func(
      'int32_t segstore_check(const segstore_reader *reader, const char *segment, const char *key)',
    ),
    lastError: lib.func('const char *segstore_last_error(void)'),
  };
  return native;
}

function lastError(n) {
  return new SegstoreError(n.lastError() ?? 'unknown error');
}

/**
 * A read-only handle on a segstore directory, implementing the SDK's BigSegmentStore. It
 * follows the writer (`segstore sync`, `segstore apply`, any process holding the store) on
 * its own, polling every 50 ms; many application processes may open one store.
 */
class SegstoreBigSegmentStore {
  /**
   * @param {string} storeDir the store directory
   * @param {{verifyOnRead?: boolean}} [options] `verifyOnRead`: open without reading every
   *   table whole; each 16 KiB block is checked against its checksum the first time a lookup
   *   reads it. A large store then opens in milliseconds, and a damaged block makes the
   *   lookups that read it throw (the SDK reports the store's status as an error) instead of
   *   the open.
   */
  constructor(storeDir, { verifyOnRead = false } = {}) {
    this._native = load();
    const handle = this._native.open(storeDir, verifyOnRead ? SEGSTORE_OPEN_VERIFY_ON_READ : 0);
    if (!handle) throw lastError(this._native);
    this._handle = handle;
  }

  /** The synchronous form of getUserMembership: `{ref: included}` or undefined. */
  membershipSync(contextHash) {
    const n = this._native;
    const result = n.getMembership(this._live(), contextHash);
    if (!result) throw lastError(n);
    try {
      const head = koffi.decode(result, n.Membership);
      if (head.len === 0) return undefined;
      const entries = koffi.decode(head.entries, n.Entry, head.len);
      const membership = {};
      for (const entry of entries) membership[entry.segment] = entry.included;
      return membership;
    } finally {
      n.free(result);
    }
  }

  /** The synchronous form of getMetadata: `{lastUpToDate}` (undefined if never synced). */
  metadataSync() {
    const n = this._native;
    const out = {};
    if (n.getMetadata(this._live(), out) !== SEGSTORE_OK) throw lastError(n);
    return {
      lastUpToDate: out.has_synchronized_on ? Number(out.synchronized_on) : undefined,
    };
  }

  /** 'included', 'excluded' or undefined (unknown) for one key in one segment. */
  check(segment, key) {
    const n = this._native;
    const rc = n.check(this._live(), segment, key);
    if (rc === SEGSTORE_ERROR) throw lastError(n);
    if (rc === SEGSTORE_INCLUDED) return 'included';
    if (rc === SEGSTORE_EXCLUDED) return 'excluded';
    return undefined;
  }

  /** BigSegmentStore.getMetadata. */
  async getMetadata() {
    return this.metadataSync();
  }

  /** BigSegmentStore.getUserMembership. */
  async getUserMembership(userHash) {
    return this.membershipSync(userHash);
  }

  /** BigSegmentStore.close: closes the handle (idempotent). */
  close() {
    if (this._handle) {
      const handle = this._handle;
      this._handle = null;
      this._native.close(handle);
    }
  }

  _live() {
    if (!this._handle) throw new SegstoreError('the store is closed');
    return this._handle;
  }
}

module.exports = { SegstoreBigSegmentStore, SegstoreError, findLibrary, PACKAGED_LIB };
