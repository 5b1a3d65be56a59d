//! LaunchDarkly's big-segment key layout in Redis, and what each key is in a segstore store.
//!
//! | Redis key | here |
//! |---|---|
//! | `{prefix}:big_segments_synchronized_on` | the store's `synchronized_on` (decimal Unix ms) |
//! | `{prefix}:big_segments_cursor` | the sync cursor (absent while it is `""`) |
//! | `{prefix}:big_segments_lock` | a string kept in the server's memory: the writers' `WATCH` target |
//! | `{prefix}:big_segment_include:{hash}` | the refs of the segments whose included list holds `hash` |
//! | `{prefix}:big_segment_exclude:{hash}` | the same for excluded lists |

use crate::change::List;
use redis_protocol::bytes::Bytes;

/// What a Redis key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// `{prefix}:big_segments_synchronized_on`.
    SynchronizedOn,
    /// `{prefix}:big_segments_cursor`.
    Cursor,
    /// `{prefix}:big_segments_lock`.
    Lock,
    /// `{prefix}:big_segment_include:{hash}` or `..._exclude:{hash}`: the list, and the
    /// context hash (the store key).
    Set(List, Bytes),
    /// Any other key: it never exists, and writing it is refused.
    Other,
}

/// The key layout under one prefix.
#[derive(Debug, Clone)]
pub struct Keyspace {
    prefix: String,
}

const SYNCHRONIZED_ON: &[u8] = b"big_segments_synchronized_on";
const CURSOR: &[u8] = b"big_segments_cursor";
const LOCK: &[u8] = b"big_segments_lock";
const INCLUDE: &[u8] = b"big_segment_include:";
const EXCLUDE: &[u8] = b"big_segment_exclude:";

impl Keyspace {
    /// The layout under `prefix` (LaunchDarkly's default is `launchdarkly`).
    pub fn new(prefix: impl Into<String>) -> Keyspace {
        Keyspace {
            prefix: prefix.into(),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// What `key` names.
    pub fn parse(&self, key: &Bytes) -> Key {
        let Some(rest) = key
            .strip_prefix(self.prefix.as_bytes())
            .and_then(|r| r.strip_prefix(b":"))
        else {
            return Key::Other;
        };
        let offset = key.len() - rest.len();
        let hash = |tag: &[u8]| key.slice(offset + tag.len()..);
        if rest == SYNCHRONIZED_ON {
            Key::SynchronizedOn
        } else if rest == CURSOR {
            Key::Cursor
        } else if rest == LOCK {
            Key::Lock
        } else if rest.starts_with(INCLUDE) && rest.len() > INCLUDE.len() {
            Key::Set(List::Included, hash(INCLUDE))
        } else if rest.starts_with(EXCLUDE) && rest.len() > EXCLUDE.len() {
            Key::Set(List::Excluded, hash(EXCLUDE))
        } else {
            Key::Other
        }
    }

    /// The Redis key of one list's set for `hash`.
    pub fn set_key(&self, list: List, hash: &[u8]) -> Bytes {
        let tag = match list {
            List::Included => INCLUDE,
            List::Excluded => EXCLUDE,
        };
        let mut key = Vec::with_capacity(self.prefix.len() + 1 + tag.len() + hash.len());
        key.extend_from_slice(self.prefix.as_bytes());
        key.push(b':');
        key.extend_from_slice(tag);
        key.extend_from_slice(hash);
        Bytes::from(key)
    }

    /// The Redis key of a string key.
    pub fn string_key(&self, key: &Key) -> Option<Bytes> {
        let tag = match key {
            Key::SynchronizedOn => SYNCHRONIZED_ON,
            Key::Cursor => CURSOR,
            Key::Lock => LOCK,
            Key::Set(..) | Key::Other => return None,
        };
        Some(Bytes::from([self.prefix.as_bytes(), b":", tag].concat()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_under_a_prefix() {
        let ks = Keyspace::new("ld:prod");
        let parse = |k: &str| ks.parse(&Bytes::copy_from_slice(k.as_bytes()));
        assert_eq!(
            parse("ld:prod:big_segments_synchronized_on"),
            Key::SynchronizedOn
        );
        assert_eq!(parse("ld:prod:big_segments_cursor"), Key::Cursor);
        assert_eq!(parse("ld:prod:big_segments_lock"), Key::Lock);
        assert_eq!(
            parse("ld:prod:big_segment_include:a:b="),
            Key::Set(List::Included, Bytes::from("a:b="))
        );
        assert_eq!(
            parse("ld:prod:big_segment_exclude:h"),
            Key::Set(List::Excluded, Bytes::from("h"))
        );
        for other in [
            "ld:prod:big_segment_include:",
            "launchdarkly:big_segments_cursor",
            "ld:prodbig_segments_cursor",
            "ld:prod:features",
            "",
        ] {
            assert_eq!(parse(other), Key::Other, "{other}");
        }
        assert_eq!(
            ks.set_key(List::Excluded, b"h"),
            Bytes::from("ld:prod:big_segment_exclude:h")
        );
        assert_eq!(
            ks.string_key(&Key::Cursor),
            Some(Bytes::from("ld:prod:big_segments_cursor"))
        );
    }
}
