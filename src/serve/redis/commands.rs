//! The data commands: what each reads and writes in a [`View`], and the checks a write
//! passes before it is queued or run.

use super::keyspace::{Key, Keyspace};
use super::reply::Reply;
use super::view::View;
use crate::change::List;
use crate::key::{validate_key, validate_ref, MAX_NAME_LEN};
use redis_protocol::bytes::Bytes;

/// What a command does, for access checks and `MULTI` queueing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Connection state (`PING`, `AUTH`, `HELLO`, ...): never queued.
    Connection,
    /// Transaction control (`MULTI`, `EXEC`, `WATCH`, ...).
    Transaction,
    /// Reads the keyspace.
    Read,
    /// Writes the keyspace.
    Write,
}

/// A command's name, arity (as Redis gives it: `n` exactly n arguments counting the name,
/// `-n` at least n) and class.
#[derive(Debug)]
pub struct Spec {
    /// Lower-case name.
    pub name: &'static str,
    /// Arity.
    pub arity: i32,
    /// Class.
    pub class: Class,
}

const fn spec(name: &'static str, arity: i32, class: Class) -> Spec {
    Spec { name, arity, class }
}

/// Every command the server answers.
pub static COMMANDS: &[Spec] = &[
    spec("auth", -2, Class::Connection),
    spec("client", -2, Class::Connection),
    spec("command", -1, Class::Connection),
    spec("config", -2, Class::Connection),
    spec("echo", 2, Class::Connection),
    spec("hello", -1, Class::Connection),
    spec("info", -1, Class::Connection),
    spec("ping", -1, Class::Connection),
    spec("quit", -1, Class::Connection),
    spec("reset", 1, Class::Connection),
    spec("select", 2, Class::Connection),
    spec("discard", 1, Class::Transaction),
    spec("exec", 1, Class::Transaction),
    spec("multi", 1, Class::Transaction),
    spec("unwatch", 1, Class::Transaction),
    spec("watch", -2, Class::Transaction),
    spec("dbsize", 1, Class::Read),
    spec("exists", -2, Class::Read),
    spec("get", 2, Class::Read),
    spec("scard", 2, Class::Read),
    spec("sismember", 3, Class::Read),
    spec("smembers", 2, Class::Read),
    spec("smismember", -3, Class::Read),
    spec("type", 2, Class::Read),
    spec("del", -2, Class::Write),
    spec("sadd", -3, Class::Write),
    spec("set", -3, Class::Write),
    spec("srem", -3, Class::Write),
    spec("unlink", -2, Class::Write),
];

/// The command named `name` (any case).
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    COMMANDS
        .iter()
        .find(|s| s.name.as_bytes().eq_ignore_ascii_case(name))
}

/// `ERR unknown command` in Redis's words.
pub fn unknown_command(args: &[Bytes]) -> Reply {
    let name = args.first().map(|n| printable(n, 64)).unwrap_or_default();
    let mut text = format!("ERR unknown command '{name}', with args beginning with: ");
    for arg in args.iter().skip(1).take(8) {
        text.push_str(&format!("'{}' ", printable(arg, 64)));
    }
    Reply::Error(text)
}

/// A byte string for an error message: lossy UTF-8, control characters escaped, cut short.
pub fn printable(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(max)]);
    text.chars().flat_map(char::escape_default).collect()
}

/// Checks the argument count.
pub fn check_arity(spec: &Spec, argc: usize) -> Result<(), Reply> {
    let ok = match usize::try_from(spec.arity) {
        Ok(exact) => argc == exact,
        Err(_) => argc >= spec.arity.unsigned_abs() as usize,
    };
    if ok {
        Ok(())
    } else {
        Err(Reply::Error(format!(
            "ERR wrong number of arguments for '{}' command",
            spec.name
        )))
    }
}

fn wrong_type() -> Reply {
    Reply::Error("WRONGTYPE Operation against a key holding the wrong kind of value".into())
}

fn refused(keys: &Keyspace, key: &[u8]) -> Reply {
    Reply::err(format!(
        "segstore serves only LaunchDarkly's big-segment keys under the prefix '{}'; '{}' cannot be written",
        printable(keys.prefix().as_bytes(), 128),
        printable(key, 128)
    ))
}

/// The refs of a `SADD`/`SREM`, checked.
fn refs(args: &[Bytes]) -> Result<Vec<&str>, Reply> {
    args.iter()
        .map(|member| {
            let text = std::str::from_utf8(member)
                .map_err(|_| Reply::err("a segment ref must be UTF-8"))?;
            validate_ref(text).map_err(Reply::err)?;
            Ok(text)
        })
        .collect()
}

/// The hash in a set key, checked as a store key.
fn set_hash(hash: &Bytes) -> Result<(), Reply> {
    validate_key(hash).map_err(|e| Reply::err(format!("context hash: {e}")))
}

/// Checks a write before it is queued or run: only the layout's keys, with values the store
/// can hold. A refused write changes nothing (inside `MULTI` it aborts the transaction).
pub fn validate_write(keys: &Keyspace, args: &[Bytes]) -> Result<(), Reply> {
    let name = args
        .first()
        .map(|n| n.to_ascii_lowercase())
        .unwrap_or_default();
    match name.as_slice() {
        b"sadd" | b"srem" => {
            let key = &args.get(1).cloned().unwrap_or_default();
            match keys.parse(key) {
                Key::Set(_, hash) => {
                    set_hash(&hash)?;
                    refs(args.get(2..).unwrap_or_default())?;
                    Ok(())
                }
                Key::Other => Err(refused(keys, key)),
                _ => Err(Reply::err(format!(
                    "'{}' is a string key, not a set",
                    printable(key, 128)
                ))),
            }
        }
        b"set" => {
            let key = &args.get(1).cloned().unwrap_or_default();
            if args.len() > 3 {
                return Err(Reply::err(
                    "SET options (EX, NX, GET, ...) are not supported: the big-segment keys never expire",
                ));
            }
            let value: &[u8] = args.get(2).map(|v| &**v).unwrap_or_default();
            match keys.parse(key) {
                Key::SynchronizedOn => parse_unix_ms(value).map(|_| ()),
                Key::Cursor => {
                    let cursor = std::str::from_utf8(value)
                        .map_err(|_| Reply::err("the cursor must be UTF-8"))?;
                    if cursor.len() > MAX_NAME_LEN {
                        return Err(Reply::err(format!(
                            "the cursor is {} bytes, the limit is {MAX_NAME_LEN}",
                            cursor.len()
                        )));
                    }
                    Ok(())
                }
                Key::Lock => Ok(()),
                Key::Set(..) => Err(Reply::err(format!(
                    "'{}' is a set of segment refs, not a string",
                    printable(key, 128)
                ))),
                Key::Other => Err(refused(keys, key)),
            }
        }
        b"del" | b"unlink" => {
            for key in args.get(1..).unwrap_or_default() {
                match keys.parse(key) {
                    Key::SynchronizedOn => {
                        return Err(Reply::err(
                            "big_segments_synchronized_on cannot be deleted; SET it instead",
                        ))
                    }
                    Key::Set(_, hash) => set_hash(&hash)?,
                    Key::Cursor | Key::Lock | Key::Other => {}
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A decimal Unix ms value.
fn parse_unix_ms(value: &[u8]) -> Result<u64, Reply> {
    std::str::from_utf8(value)
        .ok()
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse::<u64>().ok())
        .ok_or_else(|| Reply::err("big_segments_synchronized_on must be decimal Unix milliseconds"))
}

/// How one key looks to `TYPE`/`EXISTS`.
enum Kind {
    None,
    String,
    Set,
}

fn kind_of(view: &View, keys: &Keyspace, key: &Bytes) -> crate::Result<Kind> {
    Ok(match keys.parse(key) {
        Key::SynchronizedOn if view.synchronized_on().is_some() => Kind::String,
        Key::Cursor if view.cursor().is_some() => Kind::String,
        Key::Lock if view.lock().is_some() => Kind::String,
        Key::Set(list, hash) if view.set_exists(list, &hash)? => Kind::Set,
        _ => Kind::None,
    })
}

/// What a data command did, for the server's counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct Effect {
    /// Set lookups answered (`SMEMBERS`, `SISMEMBER`, ...).
    pub lookups: u64,
}

/// Runs one data command (already arity-checked and, for a write, validated) against `view`.
/// A lookup that fails (a store opened with `Verification::Structure` whose bytes turn out
/// corrupt) gives an `-ERR` reply and leaves the view unchanged.
pub fn execute(view: &mut View, keys: &Keyspace, args: &[Bytes], effect: &mut Effect) -> Reply {
    execute_or_fail(view, keys, args, effect)
        .unwrap_or_else(|e| Reply::err(format!("the store cannot answer: {e}")))
}

fn execute_or_fail(
    view: &mut View,
    keys: &Keyspace,
    args: &[Bytes],
    effect: &mut Effect,
) -> crate::Result<Reply> {
    let name = args
        .first()
        .map(|n| n.to_ascii_lowercase())
        .unwrap_or_default();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    Ok(match name.as_slice() {
        b"get" => match keys.parse(&arg(1)) {
            Key::SynchronizedOn => match view.synchronized_on() {
                Some(at) => Reply::text(at.to_string()),
                None => Reply::Nil,
            },
            Key::Cursor => view.cursor().map_or(Reply::Nil, Reply::text),
            Key::Lock => view.lock().cloned().map_or(Reply::Nil, Reply::Bulk),
            Key::Set(list, hash) => {
                if view.set_exists(list, &hash)? {
                    wrong_type()
                } else {
                    Reply::Nil
                }
            }
            Key::Other => Reply::Nil,
        },
        b"smembers" | b"scard" | b"sismember" | b"smismember" => {
            let key = arg(1);
            let (list, hash) = match keys.parse(&key) {
                Key::Set(list, hash) => (list, hash),
                Key::Other => return Ok(empty_set_reply(&name, args.len())),
                _ => {
                    return Ok(match kind_of(view, keys, &key)? {
                        Kind::None => empty_set_reply(&name, args.len()),
                        _ => wrong_type(),
                    })
                }
            };
            effect.lookups += 1;
            match name.as_slice() {
                b"smembers" => Reply::Set(
                    view.members(list, &hash)?
                        .iter()
                        .map(|m| Reply::Bulk(Bytes::copy_from_slice(m.as_bytes())))
                        .collect(),
                ),
                b"scard" => Reply::Int(view.members(list, &hash)?.len() as i64),
                b"sismember" => Reply::Int(i64::from(member_of(view, list, &hash, &arg(2))?)),
                _ => {
                    let mut replies = Vec::new();
                    for m in args.get(2..).unwrap_or_default() {
                        replies.push(Reply::Int(i64::from(member_of(view, list, &hash, m)?)));
                    }
                    Reply::Array(replies)
                }
            }
        }
        b"exists" => {
            let mut count = 0i64;
            for k in args.get(1..).unwrap_or_default() {
                count += i64::from(!matches!(kind_of(view, keys, k)?, Kind::None));
            }
            Reply::Int(count)
        }
        b"type" => Reply::Status(match kind_of(view, keys, &arg(1))? {
            Kind::None => "none",
            Kind::String => "string",
            Kind::Set => "set",
        }),
        b"dbsize" => Reply::err(
            "DBSIZE is not answered: the keyspace is every context hash of every segment",
        ),
        b"sadd" | b"srem" => {
            let key = arg(1);
            let Key::Set(list, hash) = keys.parse(&key) else {
                return Ok(refused(keys, &key));
            };
            let refs = match refs(args.get(2..).unwrap_or_default()) {
                Ok(refs) => refs,
                Err(e) => return Ok(e),
            };
            Reply::Int(view.update_set(keys, list, &hash, &refs, name == b"sadd")?)
        }
        b"set" => {
            let key = arg(1);
            let value = arg(2);
            match keys.parse(&key) {
                Key::SynchronizedOn => match parse_unix_ms(&value) {
                    Ok(at) => {
                        view.set_synchronized_on(key, at);
                        Reply::OK
                    }
                    Err(e) => e,
                },
                Key::Cursor => match String::from_utf8(value.to_vec()) {
                    Ok(cursor) => {
                        view.set_cursor(key, Some(cursor));
                        Reply::OK
                    }
                    Err(_) => Reply::err("the cursor must be UTF-8"),
                },
                Key::Lock => {
                    view.set_lock(key, Some(value));
                    Reply::OK
                }
                Key::Set(..) | Key::Other => refused(keys, &key),
            }
        }
        b"del" | b"unlink" => {
            // Every set's members first, so that a failed lookup deletes nothing.
            let all = args.get(1..).unwrap_or_default();
            for key in all {
                if let Key::Set(list, hash) = keys.parse(key) {
                    view.members(list, &hash)?;
                }
            }
            let mut deleted = 0;
            for key in all {
                let existed = match keys.parse(key) {
                    Key::Cursor => {
                        let existed = view.cursor().is_some();
                        if existed {
                            view.set_cursor(key.clone(), None);
                        }
                        existed
                    }
                    Key::Lock => {
                        let existed = view.lock().is_some();
                        if existed {
                            view.set_lock(key.clone(), None);
                        }
                        existed
                    }
                    Key::Set(list, hash) => view.delete_set(keys, list, &hash)?,
                    Key::SynchronizedOn | Key::Other => false,
                };
                deleted += i64::from(existed);
            }
            Reply::Int(deleted)
        }
        _ => unknown_command(args),
    })
}

fn member_of(view: &View, list: List, hash: &Bytes, member: &Bytes) -> crate::Result<bool> {
    match std::str::from_utf8(member) {
        Ok(m) => view.is_member(list, hash, m),
        Err(_) => Ok(false),
    }
}

/// The reply of a set command on a key that does not exist.
fn empty_set_reply(name: &[u8], argc: usize) -> Reply {
    match name {
        b"smembers" => Reply::Set(Vec::new()),
        b"smismember" => Reply::Array(vec![Reply::Int(0); argc.saturating_sub(2)]),
        _ => Reply::Int(0),
    }
}
