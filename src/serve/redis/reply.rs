//! Replies, and their encoding in RESP2 or RESP3 (by `redis-protocol`).

use redis_protocol::bytes::{Bytes, BytesMut};
use redis_protocol::bytes_utils::Str;
use redis_protocol::{resp2, resp3};

/// The protocol a connection speaks: RESP2 until a `HELLO 3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// RESP2.
    Resp2,
    /// RESP3.
    Resp3,
}

impl Protocol {
    /// 2 or 3.
    pub fn version(self) -> i64 {
        match self {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        }
    }
}

/// One reply, independent of the protocol version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A status line such as `OK`, `PONG` or `QUEUED`.
    Status(&'static str),
    /// An error line; the text starts with its code (`ERR`, `WRONGTYPE`, `NOAUTH`, ...).
    Error(String),
    /// An integer.
    Int(i64),
    /// A bulk string.
    Bulk(Bytes),
    /// The null bulk string (a missing key).
    Nil,
    /// The null array (`EXEC` after a `WATCH` conflict).
    NilArray,
    /// An array.
    Array(Vec<Reply>),
    /// A set (an array in RESP2).
    Set(Vec<Reply>),
    /// A map (a flat array of keys and values in RESP2).
    Map(Vec<(Reply, Reply)>),
}

impl Reply {
    /// `+OK`.
    pub const OK: Reply = Reply::Status("OK");

    /// An error reply with the `ERR` code.
    pub fn err(message: impl std::fmt::Display) -> Reply {
        Reply::Error(format!("ERR {message}"))
    }

    /// A bulk string of text.
    pub fn text(text: impl Into<String>) -> Reply {
        Reply::Bulk(Bytes::from(text.into()))
    }

    /// True for an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// Appends the reply's bytes to `out`.
    pub fn encode(&self, protocol: Protocol, out: &mut BytesMut) {
        // Encoding into a buffer that `extend_encode` has sized itself cannot fail; should the
        // codec ever disagree, the client gets an error line rather than a torn reply.
        let encoded = match protocol {
            // redis-protocol's RESP2 has one null, the bulk one; Redis sends the null array.
            Protocol::Resp2 if *self == Reply::NilArray => {
                out.extend_from_slice(b"*-1\r\n");
                true
            }
            Protocol::Resp2 => resp2::encode::extend_encode(out, &self.resp2(), false).is_ok(),
            Protocol::Resp3 => {
                resp3::encode::complete::extend_encode(out, &self.resp3(), false).is_ok()
            }
        };
        if !encoded {
            out.extend_from_slice(b"-ERR reply could not be encoded\r\n");
        }
    }

    fn resp2(&self) -> resp2::types::BytesFrame {
        use resp2::types::BytesFrame as F;
        match self {
            Reply::Status(s) => F::SimpleString(Bytes::from_static(s.as_bytes())),
            Reply::Error(e) => F::Error(error_line(e)),
            Reply::Int(i) => F::Integer(*i),
            Reply::Bulk(b) => F::BulkString(b.clone()),
            Reply::Nil => F::Null,
            Reply::NilArray => F::Null,
            Reply::Array(items) | Reply::Set(items) => {
                F::Array(items.iter().map(Reply::resp2).collect())
            }
            Reply::Map(pairs) => F::Array(
                pairs
                    .iter()
                    .flat_map(|(k, v)| [k.resp2(), v.resp2()])
                    .collect(),
            ),
        }
    }

    fn resp3(&self) -> resp3::types::BytesFrame {
        use resp3::types::BytesFrame as F;
        match self {
            Reply::Status(s) => F::SimpleString {
                data: Bytes::from_static(s.as_bytes()),
                attributes: None,
            },
            Reply::Error(e) => F::SimpleError {
                data: error_line(e),
                attributes: None,
            },
            Reply::Int(i) => F::Number {
                data: *i,
                attributes: None,
            },
            Reply::Bulk(b) => F::BlobString {
                data: b.clone(),
                attributes: None,
            },
            Reply::Nil | Reply::NilArray => F::Null,
            Reply::Array(items) => F::Array {
                data: items.iter().map(Reply::resp3).collect(),
                attributes: None,
            },
            Reply::Set(items) => F::Set {
                data: items.iter().map(Reply::resp3).collect(),
                attributes: None,
            },
            Reply::Map(pairs) => F::Map {
                data: pairs.iter().map(|(k, v)| (k.resp3(), v.resp3())).collect(),
                attributes: None,
            },
        }
    }
}

/// An error's text as one line: a CR or LF inside would end the frame early.
fn error_line(text: &str) -> Str {
    let line: String = text
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    Str::from(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(reply: &Reply, protocol: Protocol) -> String {
        let mut out = BytesMut::new();
        reply.encode(protocol, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn replies_in_both_protocols() {
        let set = Reply::Set(vec![Reply::text("a.g1")]);
        assert_eq!(wire(&set, Protocol::Resp2), "*1\r\n$4\r\na.g1\r\n");
        assert_eq!(wire(&set, Protocol::Resp3), "~1\r\n$4\r\na.g1\r\n");
        assert_eq!(wire(&Reply::Nil, Protocol::Resp2), "$-1\r\n");
        assert_eq!(wire(&Reply::Nil, Protocol::Resp3), "_\r\n");
        assert_eq!(wire(&Reply::NilArray, Protocol::Resp2), "*-1\r\n");
        assert_eq!(wire(&Reply::Int(-3), Protocol::Resp2), ":-3\r\n");
        assert_eq!(wire(&Reply::OK, Protocol::Resp3), "+OK\r\n");
        let map = Reply::Map(vec![(Reply::text("proto"), Reply::Int(2))]);
        assert_eq!(wire(&map, Protocol::Resp2), "*2\r\n$5\r\nproto\r\n:2\r\n");
        assert_eq!(wire(&map, Protocol::Resp3), "%1\r\n$5\r\nproto\r\n:2\r\n");
        assert_eq!(
            wire(&Reply::err("bad\r\nline"), Protocol::Resp2),
            "-ERR bad  line\r\n"
        );
    }
}
