//! The token file: access tokens kept as SHA-256 hashes, each with a name and a [`Policy`].
//!
//! A token is 32 random bytes from `/dev/urandom`, shown once as `sst-` followed by their
//! URL-safe base64 without padding (47 characters). With 256 random bits, one SHA-256 is
//! enough to keep it: nothing can be guessed from the hash, so no slow password hash is
//! needed.
//!
//! # The file
//!
//! By default the file sits beside the store directory, at [`default_path`]: the directory's
//! path with `.tokens` appended (`/var/lib/segstore` → `/var/lib/segstore.tokens`), never
//! inside the store (whose unknown files the engine treats as suspicious). It is JSON:
//!
//! ```json
//! {
//!   "version": 1,
//!   "tokens": [
//!     {
//!       "name": "census-prod",
//!       "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
//!       "created_ms": 1700000000000,
//!       "policy": [{"effect": "allow", "actions": ["createSegment", "updateIncluded"],
//!                   "resources": ["proj/*:env/*:segment/*"]}]
//!     }
//!   ]
//! }
//! ```
//!
//! `sha256` is the lowercase hex SHA-256 of the token's whole text (`sst-...`). The file
//! must have mode 0600 or stricter: one readable by group or others is refused when loaded.
//! Every change is atomic and durable (a 0600 temporary file in the same directory, fsync,
//! rename, fsync of the directory) and made under an exclusive `flock` on the sibling
//! `<file>.lock` (created 0600 and left in place), so concurrent `token create` runs never
//! lose each other's tokens.
//!
//! # Serving
//!
//! ```
//! use segstore::serve::access::{actions, token_from_header, Policy, Resource, Role, TokenStore};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("store.tokens");
//! let token = TokenStore::create(&path, "census", Policy::role(Role::Writer))?;
//!
//! let mut tokens = TokenStore::load(&path)?;
//! let header = format!("Bearer {token}");
//! let info = token_from_header(&header).and_then(|t| tokens.authenticate(t));
//! let info = info.expect("a known token");
//! assert_eq!(info.name, "census");
//! let no_tags = Vec::new();
//! assert!(info.policy.allows(actions::UPDATE_INCLUDED, &Resource::new("p", "e", "s", &no_tags)));
//!
//! TokenStore::revoke(&path, "census")?;
//! assert!(tokens.changed_since(&path));
//! tokens.reload_if_changed(&path)?;
//! assert!(tokens.authenticate(&token).is_none());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use super::policy::{Policy, PolicyError};
use base64::Engine as _;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What every token starts with.
pub const TOKEN_PREFIX: &str = "sst-";
/// Random bytes in a token.
pub const TOKEN_RANDOM_BYTES: usize = 32;
/// The longest token name.
pub const MAX_NAME_LEN: usize = 128;
/// The file format version this code reads and writes.
pub const FILE_VERSION: u64 = 1;

/// A token file larger than this is refused as corrupt (about 100,000 tokens fit).
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// A presented token longer than this is not hashed: no token is that long.
const MAX_PRESENTED_LEN: usize = 1024;
/// How long a change waits for another one to release the lock.
const LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a token operation failed. Every message is one line.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// A file operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done: `reading`, `writing`, `locking`...
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The token file is not what this code writes.
    #[error("token file {} is corrupt: {message}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the JSON pointer at fault when there is one.
        message: String,
    },
    /// The token file can be read or written by group or others.
    #[error(
        "token file {} has mode {mode:04o}; it must be readable by its owner only \
         (chmod 600 {})",
        path.display(),
        path.display()
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The path names something other than a regular file.
    #[error("token file {} is not a regular file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// Another process held the lock for too long.
    #[error("token file {} is locked by another token command (waited {}s)", path.display(), LOCK_TIMEOUT.as_secs())]
    LockTimeout {
        /// The lock file.
        path: PathBuf,
    },
    /// A token name breaks the rules.
    #[error("invalid token name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `create` with a name already in use.
    #[error("a token named {0:?} already exists (revoke it first, or pick another name)")]
    DuplicateName(String),
    /// `revoke` of a name not in the file.
    #[error("no token named {0:?}")]
    UnknownName(String),
    /// Reading random bytes failed.
    #[error("reading random bytes from /dev/urandom: {0}")]
    Random(#[source] io::Error),
}

/// What is known about a token, apart from its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// Its unique name.
    pub name: String,
    /// When it was created, in Unix ms.
    pub created_ms: u64,
    /// What it may do.
    pub policy: Policy,
}

#[derive(Clone)]
struct StoredToken {
    info: TokenInfo,
    sha256: [u8; 32],
}

/// Without the hash, so that a logged `TokenStore` shows nothing secret-derived.
impl std::fmt::Debug for StoredToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredToken")
            .field("info", &self.info)
            .field("sha256", &"<redacted>")
            .finish()
    }
}

/// What identifies one version of the file: any write replaces the inode, any chmod changes
/// the ctime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileIdentity {
    fn of(meta: &std::fs::Metadata) -> Self {
        FileIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// A loaded snapshot of the token file. It never changes by itself: call
/// [`TokenStore::changed_since`] or [`TokenStore::reload_if_changed`] to follow the file.
#[derive(Debug, Clone, Default)]
pub struct TokenStore {
    tokens: Vec<StoredToken>,
    /// The file this snapshot was read from; `None` when it did not exist.
    identity: Option<FileIdentity>,
}

/// The default token file of a store: the directory's path with `.tokens` appended to its
/// last component, beside the directory rather than in it.
///
/// ```
/// use segstore::serve::access::default_path;
/// use std::path::Path;
/// assert_eq!(default_path(Path::new("/var/lib/segstore")), Path::new("/var/lib/segstore.tokens"));
/// assert_eq!(default_path(Path::new("/var/lib/segstore/")), Path::new("/var/lib/segstore.tokens"));
/// assert_eq!(default_path(Path::new("store")), Path::new("store.tokens"));
/// ```
///
/// A path without a last name (`.`, `..`, `dir/..`) is resolved first, so that the file
/// still lands beside the directory; if even that fails, `segstore.tokens` is put in the
/// named directory's parent as far as it can be told.
pub fn default_path(store_dir: &Path) -> PathBuf {
    let named = |dir: &Path| {
        dir.file_name().map(|name| {
            let mut name = name.to_os_string();
            name.push(".tokens");
            dir.with_file_name(name)
        })
    };
    if let Some(path) = named(store_dir) {
        return path;
    }
    if let Some(path) = std::fs::canonicalize(store_dir)
        .ok()
        .and_then(|dir| named(&dir))
    {
        return path;
    }
    store_dir.join("..").join("segstore.tokens")
}

/// The token in an `Authorization` header's value: `Bearer <token>` (the scheme in any case)
/// or the bare token, as the partner tools send it. `None` when there is none.
///
/// ```
/// use segstore::serve::access::token_from_header;
/// assert_eq!(token_from_header("Bearer sst-abc"), Some("sst-abc"));
/// assert_eq!(token_from_header("bearer  sst-abc "), Some("sst-abc"));
/// assert_eq!(token_from_header("sst-abc"), Some("sst-abc"));
/// assert_eq!(token_from_header("Basic dXNlcjpwdw=="), None);
/// assert_eq!(token_from_header("Bearer"), None);
/// assert_eq!(token_from_header(""), None);
/// ```
pub fn token_from_header(authorization: &str) -> Option<&str> {
    let value = authorization.trim();
    let token = match value.split_once(|c: char| c.is_ascii_whitespace()) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        Some(_) => return None,
        None if value.eq_ignore_ascii_case("bearer") => return None,
        None => value,
    };
    if token.is_empty() || token.contains(|c: char| c.is_whitespace() || c.is_control()) {
        None
    } else {
        Some(token)
    }
}

/// Checks a token name: 1 to [`MAX_NAME_LEN`] characters of `A-Z a-z 0-9 . _ -`.
///
/// ```
/// use segstore::serve::access::validate_name;
/// assert!(validate_name("census-prod_2.0").is_ok());
/// assert!(validate_name("").is_err());
/// assert!(validate_name("with space").is_err());
/// ```
pub fn validate_name(name: &str) -> Result<(), TokenError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > MAX_NAME_LEN {
        "it is longer than 128 characters"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        "use only letters, digits, '.', '_' and '-'"
    } else {
        return Ok(());
    };
    Err(TokenError::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

impl TokenStore {
    /// Reads the token file. A missing file is an empty store; a file readable by group or
    /// others, or one this code did not write, is an error.
    pub fn load(path: &Path) -> Result<TokenStore, TokenError> {
        let io_err = |action, source| TokenError::Io {
            action,
            path: path.to_owned(),
            source,
        };
        // Non-blocking, so that a FIFO put in the file's place cannot hang the server.
        let mut file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(TokenStore::default()),
            Err(e) => return Err(io_err("opening", e)),
        };
        // The metadata of the open file, not of the path: it describes exactly what is read.
        let meta = file.metadata().map_err(|e| io_err("reading", e))?;
        if !meta.is_file() {
            return Err(TokenError::NotAFile {
                path: path.to_owned(),
            });
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(TokenError::Exposed {
                path: path.to_owned(),
                mode,
            });
        }
        let corrupt = |message: String| TokenError::Corrupt {
            path: path.to_owned(),
            message,
        };
        let mut bytes = Vec::new();
        (&mut file)
            .take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| io_err("reading", e))?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(corrupt(format!(
                "larger than {} MiB",
                MAX_FILE_BYTES / (1024 * 1024)
            )));
        }
        let tokens = parse_file(&bytes).map_err(corrupt)?;
        Ok(TokenStore {
            tokens,
            identity: Some(FileIdentity::of(&meta)),
        })
    }

    /// Adds a token named `name` with `policy` to the file at `path` (creating the file) and
    /// returns the token. This is the only time the token is seen: only its hash is kept.
    pub fn create(path: &Path, name: &str, policy: Policy) -> Result<String, TokenError> {
        validate_name(name)?;
        let random = random_bytes()?;
        let token = format!(
            "{TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random)
        );
        let _lock = lock(path)?;
        let mut store = TokenStore::load(path)?;
        if store.tokens.iter().any(|t| t.info.name == name) {
            return Err(TokenError::DuplicateName(name.to_owned()));
        }
        store.tokens.push(StoredToken {
            info: TokenInfo {
                name: name.to_owned(),
                created_ms: now_ms(),
                policy,
            },
            sha256: Sha256::digest(token.as_bytes()).into(),
        });
        store.write(path)?;
        Ok(token)
    }

    /// Removes the token named `name` from the file at `path`. An unknown name is an error.
    pub fn revoke(path: &Path, name: &str) -> Result<(), TokenError> {
        let _lock = lock(path)?;
        let mut store = TokenStore::load(path)?;
        let before = store.tokens.len();
        store.tokens.retain(|t| t.info.name != name);
        if store.tokens.len() == before {
            return Err(TokenError::UnknownName(name.to_owned()));
        }
        store.write(path)
    }

    /// Every token's name, creation time and policy, in creation order. Never a hash.
    pub fn list(&self) -> Vec<TokenInfo> {
        self.tokens.iter().map(|t| t.info.clone()).collect()
    }

    /// The token named `name`, if any.
    pub fn get(&self, name: &str) -> Option<&TokenInfo> {
        self.tokens
            .iter()
            .find(|t| t.info.name == name)
            .map(|t| &t.info)
    }

    /// The number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// True when there are no tokens (every request is then refused).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The token whose hash matches `presented` (the token's text, see
    /// [`token_from_header`]). The hash is compared with every entry's in constant time, all
    /// of them, without stopping at a match.
    pub fn authenticate(&self, presented: &str) -> Option<&TokenInfo> {
        if presented.is_empty() || presented.len() > MAX_PRESENTED_LEN {
            return None;
        }
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for token in &self.tokens {
            let difference = token
                .sha256
                .iter()
                .zip(&digest)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            // black_box keeps the compiler from turning the fold into an early exit.
            if std::hint::black_box(difference) == 0 && found.is_none() {
                found = Some(&token.info);
            }
        }
        found
    }

    /// [`token_from_header`] then [`TokenStore::authenticate`].
    pub fn authenticate_header(&self, authorization: &str) -> Option<&TokenInfo> {
        token_from_header(authorization).and_then(|t| self.authenticate(t))
    }

    /// True when the file at `path` is no longer the one this snapshot was read from: it
    /// was replaced, changed, chmod-ed, created or removed. One `stat`, comparing device,
    /// inode, length, mtime and ctime (nanoseconds); an error counts as changed (reloading
    /// will report it).
    pub fn changed_since(&self, path: &Path) -> bool {
        match std::fs::metadata(path) {
            Ok(meta) => self.identity != Some(FileIdentity::of(&meta)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.identity.is_some(),
            Err(_) => true,
        }
    }

    /// Reloads from `path` when [`TokenStore::changed_since`] says so; `Ok(true)` when it
    /// did. On an error the snapshot is left as it was, and the caller decides whether to
    /// keep serving with it.
    pub fn reload_if_changed(&mut self, path: &Path) -> Result<bool, TokenError> {
        if !self.changed_since(path) {
            return Ok(false);
        }
        *self = TokenStore::load(path)?;
        Ok(true)
    }

    /// Replaces the file with this snapshot: a 0600 temporary file beside it, fsync, rename,
    /// fsync of the directory.
    fn write(&self, path: &Path) -> Result<(), TokenError> {
        #[derive(Serialize)]
        struct FileOut<'a> {
            version: u64,
            tokens: Vec<EntryOut<'a>>,
        }
        #[derive(Serialize)]
        struct EntryOut<'a> {
            name: &'a str,
            sha256: String,
            created_ms: u64,
            policy: &'a Policy,
        }
        let out = FileOut {
            version: FILE_VERSION,
            tokens: self
                .tokens
                .iter()
                .map(|t| EntryOut {
                    name: &t.info.name,
                    sha256: hex(&t.sha256),
                    created_ms: t.info.created_ms,
                    policy: &t.info.policy,
                })
                .collect(),
        };
        let io_err = |action, path: &Path, source| TokenError::Io {
            action,
            path: path.to_owned(),
            source,
        };
        let mut bytes = serde_json::to_vec_pretty(&out)
            .map_err(|e| io_err("encoding", path, io::Error::other(e)))?;
        bytes.push(b'\n');
        let dir = parent_dir(path);
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{file_name}."))
            .suffix(".tmp")
            .permissions(Permissions::from_mode(0o600))
            .tempfile_in(dir)
            .map_err(|e| io_err("creating a temporary file in", dir, e))?;
        // Whatever the umask did, the file is the owner's alone.
        tmp.as_file()
            .set_permissions(Permissions::from_mode(0o600))
            .map_err(|e| io_err("writing", tmp.path(), e))?;
        tmp.write_all(&bytes)
            .map_err(|e| io_err("writing", tmp.path(), e))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| io_err("syncing", tmp.path(), e))?;
        tmp.persist(path)
            .map_err(|e| io_err("replacing", path, e.error))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err("syncing the directory", dir, e))
    }
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Takes the exclusive lock on `<path>.lock`, waiting up to [`LOCK_TIMEOUT`]. Released when
/// the returned file is dropped.
fn lock(path: &Path) -> Result<File, TokenError> {
    let mut lock_name = path.as_os_str().to_os_string();
    lock_name.push(".lock");
    let lock_path = PathBuf::from(lock_name);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|source| TokenError::Io {
            action: "opening the lock file",
            path: lock_path.clone(),
            source,
        })?;
    let deadline = Instant::now() + LOCK_TIMEOUT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(TokenError::LockTimeout { path: lock_path })
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(TokenError::Io {
                    action: "locking",
                    path: lock_path,
                    source,
                })
            }
        }
    }
}

fn random_bytes() -> Result<[u8; TOKEN_RANDOM_BYTES], TokenError> {
    let mut bytes = [0u8; TOKEN_RANDOM_BYTES];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(TokenError::Random)?;
    Ok(bytes)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing into a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// 64 lowercase hex digits to 32 bytes.
fn unhex_sha256(text: &str) -> Option<[u8; 32]> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let [high, low] = pair else { return None };
        *byte = (digit(*high)? << 4) | digit(*low)?;
    }
    Some(out)
}

/// Parses the file's bytes; the error message names the JSON pointer at fault.
fn parse_file(bytes: &[u8]) -> Result<Vec<StoredToken>, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(top) = value else {
        return Err("expected a JSON object {\"version\", \"tokens\"}".into());
    };
    reject_unknown(&top, "", &["version", "tokens"])?;
    match top.get("version") {
        Some(v) if v.as_u64() == Some(FILE_VERSION) => {}
        Some(v) => {
            return Err(format!(
                "at /version: unsupported version {v} (this segstore reads version {FILE_VERSION})"
            ))
        }
        None => return Err("missing \"version\"".into()),
    }
    let Some(Value::Array(entries)) = top.get("tokens") else {
        return Err("at /tokens: expected an array".into());
    };
    let mut tokens: Vec<StoredToken> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let at = format!("/tokens/{i}");
        let Value::Object(fields) = entry else {
            return Err(format!("at {at}: expected an object"));
        };
        reject_unknown(fields, &at, &["name", "sha256", "created_ms", "policy"])?;
        let name = match fields.get("name") {
            Some(Value::String(name)) => name,
            _ => return Err(format!("at {at}/name: expected a string")),
        };
        validate_name(name).map_err(|e| format!("at {at}/name: {e}"))?;
        if tokens.iter().any(|t| t.info.name == *name) {
            return Err(format!("at {at}/name: the name {name:?} appears twice"));
        }
        let sha256 = match fields.get("sha256") {
            Some(Value::String(text)) => unhex_sha256(text),
            _ => None,
        }
        .ok_or_else(|| format!("at {at}/sha256: expected 64 lowercase hex digits"))?;
        let created_ms = fields
            .get("created_ms")
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("at {at}/created_ms: expected a non-negative integer"))?;
        let policy = fields
            .get("policy")
            .ok_or_else(|| format!("at {at}: missing \"policy\""))
            .and_then(|p| {
                Policy::from_value(p).map_err(|e: PolicyError| {
                    let e = e.within(&format!("{at}/policy"));
                    format!("at {}: {}", e.pointer, e.message)
                })
            })?;
        tokens.push(StoredToken {
            info: TokenInfo {
                name: name.clone(),
                created_ms,
                policy,
            },
            sha256,
        });
    }
    Ok(tokens)
}

fn reject_unknown(
    fields: &serde_json::Map<String, Value>,
    at: &str,
    known: &[&str],
) -> Result<(), String> {
    match fields.keys().find(|k| !known.contains(&k.as_str())) {
        Some(unknown) => Err(format!(
            "at {at}: unknown field {unknown:?} (expected {})",
            known.join(", ")
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::access::policy::{actions, Resource, Role};
    use std::sync::Arc;

    fn tmp() -> tempfile::TempDir {
        match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("tempdir: {e}"),
        }
    }

    fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }

    fn mode(path: &Path) -> u32 {
        ok(std::fs::metadata(path)).permissions().mode() & 0o7777
    }

    #[test]
    fn token_format_and_entropy() {
        let dir = tmp();
        let path = dir.path().join("s.tokens");
        let mut seen = std::collections::HashSet::new();
        let mut ones = 0u32;
        for i in 0..50 {
            let token = ok(TokenStore::create(
                &path,
                &format!("t{i}"),
                Policy::role(Role::Reader),
            ));
            assert_eq!(token.len(), TOKEN_PREFIX.len() + 43, "{token}");
            let body = token.strip_prefix(TOKEN_PREFIX).unwrap_or_default();
            assert!(body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            let raw = ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(body));
            assert_eq!(raw.len(), TOKEN_RANDOM_BYTES);
            ones += raw.iter().map(|b| b.count_ones()).sum::<u32>();
            assert!(seen.insert(token));
        }
        // 50 × 256 bits: about half are set (σ ≈ 57).
        let bits = 50 * 256;
        assert!(ones > bits / 2 - 400 && ones < bits / 2 + 400, "{ones}");
    }

    #[test]
    fn file_is_0600_and_keeps_only_hashes() {
        let dir = tmp();
        let path = dir.path().join("s.tokens");
        let token = ok(TokenStore::create(&path, "a", Policy::role(Role::Writer)));
        assert_eq!(mode(&path), 0o600);
        let text = ok(std::fs::read_to_string(&path));
        assert!(!text.contains(&token));
        assert!(!text.contains(token.trim_start_matches(TOKEN_PREFIX)));
        assert!(text.contains(&hex(&Sha256::digest(token.as_bytes()))));
        let value: Value = ok(serde_json::from_str(&text));
        assert_eq!(value["version"], 1);
        assert_eq!(value["tokens"][0]["name"], "a");
        assert_eq!(
            value["tokens"][0]["policy"],
            Policy::role(Role::Writer).to_value()
        );
        let lock = dir.path().join("s.tokens.lock");
        assert_eq!(mode(&lock), 0o600);
        // Only the file, its lock, and no temporary file left behind.
        assert_eq!(ok(std::fs::read_dir(dir.path())).count(), 2);
    }

    #[test]
    fn an_exposed_file_is_refused() {
        let dir = tmp();
        let path = dir.path().join("s.tokens");
        ok(TokenStore::create(&path, "a", Policy::role(Role::Writer)));
        ok(std::fs::set_permissions(
            &path,
            Permissions::from_mode(0o644),
        ));
        let e = TokenStore::load(&path).err();
        assert!(
            matches!(e, Some(TokenError::Exposed { mode: 0o644, .. })),
            "{e:?}"
        );
        assert!(e.is_some_and(|e| e.to_string().contains("chmod 600")));
        // And a change refuses to touch it either.
        assert!(TokenStore::create(&path, "b", Policy::role(Role::Writer)).is_err());
        ok(std::fs::set_permissions(
            &path,
            Permissions::from_mode(0o400),
        ));
        assert_eq!(ok(TokenStore::load(&path)).len(), 1);
    }

    #[test]
    fn missing_file_is_empty() {
        let dir = tmp();
        let path = dir.path().join("none.tokens");
        let store = ok(TokenStore::load(&path));
        assert!(store.is_empty());
        assert!(!store.changed_since(&path));
        assert!(store.authenticate("sst-x").is_none());
    }

    #[test]
    fn corrupt_files_are_errors() {
        let dir = tmp();
        let path = dir.path().join("s.tokens");
        let good_hash = "a".repeat(64);
        let policy = Policy::role(Role::Reader).to_json();
        let cases = [
            (String::new(), "invalid JSON"),
            ("[]".to_owned(), "JSON object"),
            ("{\"version\":2,\"tokens\":[]}".to_owned(), "unsupported version"),
            ("{\"tokens\":[]}".to_owned(), "missing \"version\""),
            ("{\"version\":1}".to_owned(), "/tokens"),
            ("{\"version\":1,\"tokens\":[],\"x\":1}".to_owned(), "unknown field"),
            ("{\"version\":1,\"tokens\":[1]}".to_owned(), "/tokens/0"),
            (
                format!("{{\"version\":1,\"tokens\":[{{\"name\":\"a\",\"sha256\":\"{good_hash}\",\"created_ms\":1,\"policy\":{policy},\"extra\":0}}]}}"),
                "unknown field \"extra\"",
            ),
            (
                format!("{{\"version\":1,\"tokens\":[{{\"name\":\"a b\",\"sha256\":\"{good_hash}\",\"created_ms\":1,\"policy\":{policy}}}]}}"),
                "/tokens/0/name",
            ),
            (
                format!("{{\"version\":1,\"tokens\":[{{\"name\":\"a\",\"sha256\":\"XYZ\",\"created_ms\":1,\"policy\":{policy}}}]}}"),
                "/tokens/0/sha256",
            ),
            (
                format!("{{\"version\":1,\"tokens\":[{{\"name\":\"a\",\"sha256\":\"{}\",\"created_ms\":1,\"policy\":{policy}}}]}}", "é".repeat(32)),
                "/tokens/0/sha256",
            ),
            (
                format!("{{\"version\":1,\"tokens\":[{{\"name\":\"a\",\"sha256\":\"{good_hash}\",\"created_ms\":-1,\"policy\":{policy}}}]}}"),
                "/tokens/0/created_ms",
            ),
            (
                format!("{{\"version\":1,\"tokens\":[{{\"name\":\"a\",\"sha256\":\"{good_hash}\",\"created_ms\":1,\"policy\":[{{\"effect\":\"allow\"}}]}}]}}"),
                "/tokens/0/policy/0",
            ),
            (
                format!("{{\"version\":1,\"tokens\":[{{\"name\":\"a\",\"sha256\":\"{good_hash}\",\"created_ms\":1,\"policy\":{policy}}},{{\"name\":\"a\",\"sha256\":\"{good_hash}\",\"created_ms\":1,\"policy\":{policy}}}]}}"),
                "/tokens/1/name",
            ),
            ("\u{0}\u{1}garbage".to_owned(), "invalid JSON"),
        ];
        for (text, needle) in cases {
            ok(std::fs::write(&path, &text));
            ok(std::fs::set_permissions(
                &path,
                Permissions::from_mode(0o600),
            ));
            match TokenStore::load(&path) {
                Ok(_) => panic!("accepted {text}"),
                Err(e) => {
                    let message = e.to_string();
                    assert!(matches!(e, TokenError::Corrupt { .. }), "{message}");
                    assert!(message.contains(needle), "{text}: {message}");
                    assert!(!message.contains('\n'), "{message}");
                }
            }
        }
        // Invalid UTF-8.
        ok(std::fs::write(&path, b"{\"version\":1,\"tokens\":[\xff]}"));
        assert!(TokenStore::load(&path).is_err());
        // A directory in the file's place.
        let sub = dir.path().join("d.tokens");
        ok(std::fs::create_dir(&sub));
        ok(std::fs::set_permissions(
            &sub,
            Permissions::from_mode(0o700),
        ));
        assert!(matches!(
            TokenStore::load(&sub),
            Err(TokenError::NotAFile { .. })
        ));
    }

    #[test]
    fn concurrent_creates_are_all_kept() {
        let dir = tmp();
        let path = Arc::new(dir.path().join("s.tokens"));
        let threads: Vec<_> = (0..6)
            .map(|t| {
                let path = Arc::clone(&path);
                std::thread::spawn(move || {
                    (0..5)
                        .map(|i| {
                            let name = format!("t{t}-{i}");
                            let token =
                                ok(TokenStore::create(&path, &name, Policy::role(Role::Writer)));
                            (name, token)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut created = Vec::new();
        for thread in threads {
            match thread.join() {
                Ok(tokens) => created.extend(tokens),
                Err(_) => panic!("a creating thread panicked"),
            }
        }
        let store = ok(TokenStore::load(&path));
        assert_eq!(store.len(), 30);
        for (name, token) in &created {
            assert_eq!(
                store.authenticate(token).map(|i| i.name.as_str()),
                Some(name.as_str())
            );
        }
    }

    #[test]
    fn names_are_checked_and_unique() {
        let dir = tmp();
        let path = dir.path().join("s.tokens");
        for bad in ["", "a b", "a/b", "ünï", "a:b", &"x".repeat(129)] {
            assert!(
                matches!(
                    TokenStore::create(&path, bad, Policy::role(Role::Reader)),
                    Err(TokenError::InvalidName { .. })
                ),
                "{bad}"
            );
        }
        ok(TokenStore::create(
            &path,
            &"x".repeat(128),
            Policy::role(Role::Reader),
        ));
        ok(TokenStore::create(
            &path,
            "A.b_c-9",
            Policy::role(Role::Reader),
        ));
        assert!(matches!(
            TokenStore::create(&path, "A.b_c-9", Policy::role(Role::Admin)),
            Err(TokenError::DuplicateName(_))
        ));
        assert_eq!(ok(TokenStore::load(&path)).len(), 2);
    }

    #[test]
    fn revoke_and_reload() {
        let dir = tmp();
        let path = dir.path().join("s.tokens");
        let a = ok(TokenStore::create(&path, "a", Policy::role(Role::Writer)));
        let b = ok(TokenStore::create(&path, "b", Policy::role(Role::Admin)));
        let mut store = ok(TokenStore::load(&path));
        assert!(!store.changed_since(&path));
        assert!(!ok(store.reload_if_changed(&path)));
        ok(TokenStore::revoke(&path, "a"));
        assert!(
            store.authenticate(&a).is_some(),
            "a snapshot does not change by itself"
        );
        assert!(store.changed_since(&path));
        assert!(ok(store.reload_if_changed(&path)));
        assert!(store.authenticate(&a).is_none());
        assert_eq!(store.authenticate(&b).map(|i| i.name.as_str()), Some("b"));
        assert!(matches!(
            TokenStore::revoke(&path, "a"),
            Err(TokenError::UnknownName(_))
        ));
        let names: Vec<String> = store.list().into_iter().map(|i| i.name).collect();
        assert_eq!(names, ["b"]);
        // A chmod is a change too; a removed file is an empty store.
        ok(std::fs::set_permissions(
            &path,
            Permissions::from_mode(0o400),
        ));
        assert!(store.changed_since(&path));
        ok(store.reload_if_changed(&path));
        ok(std::fs::remove_file(&path));
        assert!(store.changed_since(&path));
        ok(store.reload_if_changed(&path));
        assert!(store.is_empty());
    }

    #[test]
    fn authenticate_raw_and_bearer() {
        let dir = tmp();
        let path = dir.path().join("s.tokens");
        let token = ok(TokenStore::create(&path, "w", Policy::role(Role::Writer)));
        let store = ok(TokenStore::load(&path));
        for header in [
            token.clone(),
            format!("Bearer {token}"),
            format!("bearer {token}"),
            format!("BEARER\t{token}  "),
        ] {
            let info = store.authenticate_header(&header);
            assert_eq!(info.map(|i| i.name.as_str()), Some("w"), "{header}");
        }
        let no_tags = Vec::new();
        let info = store.authenticate(&token);
        assert!(info.is_some_and(|i| i.policy.allows(
            actions::CREATE_SEGMENT,
            &Resource::new("p", "e", "s", &no_tags)
        )));
        let mut wrong = token.clone();
        wrong.pop();
        wrong.push(if token.ends_with('A') { 'B' } else { 'A' });
        for bad in [
            "".to_owned(),
            wrong,
            format!("Basic {token}"),
            format!("Bearer {token} extra"),
            format!("{token}x"),
            "x".repeat(10_000),
        ] {
            assert!(store.authenticate_header(&bad).is_none(), "{bad}");
        }
        assert!(store.get("w").is_some());
        assert!(store.get("x").is_none());
        let debug = format!("{store:?}");
        assert!(
            !debug.contains(&hex(&Sha256::digest(token.as_bytes()))),
            "{debug}"
        );
        assert!(debug.contains("redacted"));
    }

    #[test]
    fn default_path_is_beside_the_directory() {
        assert_eq!(
            default_path(Path::new("/var/lib/segstore")),
            Path::new("/var/lib/segstore.tokens")
        );
        assert_eq!(default_path(Path::new("a/b/")), Path::new("a/b.tokens"));
        let dir = tmp();
        let inner = dir.path().join("store");
        ok(std::fs::create_dir(&inner));
        ok(std::fs::create_dir(inner.join("sub")));
        let base = ok(std::fs::canonicalize(dir.path()));
        for store_dir in [
            inner.join("..").join("store").join("."),
            inner.join("sub").join(".."),
        ] {
            let resolved = default_path(&store_dir);
            assert_eq!(
                resolved.file_name(),
                Some(std::ffi::OsStr::new("store.tokens")),
                "{store_dir:?}"
            );
            let parent = resolved.parent().map(std::fs::canonicalize);
            assert_eq!(
                parent.and_then(Result::ok),
                Some(base.clone()),
                "{store_dir:?}"
            );
        }
    }

    #[test]
    fn hex_round_trip() {
        let bytes: [u8; 32] = Sha256::digest(b"x").into();
        assert_eq!(unhex_sha256(&hex(&bytes)), Some(bytes));
        assert_eq!(unhex_sha256(&hex(&bytes).to_uppercase()), None);
        assert_eq!(unhex_sha256("ab"), None);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn random_files_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
                let _ = parse_file(&bytes);
            }

            #[test]
            fn random_headers_never_panic(header in ".{0,80}") {
                let _ = token_from_header(&header);
                let _ = TokenStore::default().authenticate_header(&header);
            }
        }
    }
}
