//! Reading client requests off the wire: RESP arrays of bulk strings (what every client
//! library sends) and inline commands (what a person types into `telnet`).
//!
//! This is the one part of the protocol written here rather than taken from `redis-protocol`:
//! a server must refuse a declared length before it buffers it, keep its place in a request
//! that arrives in many reads (so a large request is parsed once, not once per read), and
//! never recurse on nesting a client chooses. The request grammar is two forms, so a small
//! state machine does all three; replies are encoded by `redis-protocol` ([`super::reply`]).

use redis_protocol::bytes::{Buf, Bytes, BytesMut};

/// Bounds on one request, checked as its headers arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// The largest bulk string accepted, in bytes.
    pub max_bulk_len: usize,
    /// The most arguments in one command (Redis's own limit is 1,048,576).
    pub max_args: usize,
    /// The longest inline command or header line.
    pub max_inline_len: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_bulk_len: 1 << 20,
            max_args: 1 << 20,
            max_inline_len: 64 << 10,
        }
    }
}

/// A request that cannot be read: the connection's byte stream has lost its framing, so the
/// server answers `-ERR Protocol error: ...` and closes, as Redis does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Protocol error: {}", self.0)
    }
}

/// Where the decoder is within a request that has not fully arrived.
#[derive(Debug, Default)]
enum State {
    /// Between requests.
    #[default]
    Start,
    /// Inside an array: `remaining` arguments still to come; `bulk` is the declared length
    /// of the one being read, once its header has arrived.
    Array {
        remaining: usize,
        args: Vec<Bytes>,
        bulk: Option<usize>,
    },
}

/// An incremental request decoder: feed it the connection's read buffer, take commands out.
#[derive(Debug, Default)]
pub struct RequestDecoder {
    limits: RequestLimits,
    state: State,
}

/// The most argument slots reserved up front, whatever a header declares.
const MAX_RESERVED_ARGS: usize = 64;

impl RequestDecoder {
    /// A decoder with these limits.
    pub fn new(limits: RequestLimits) -> Self {
        RequestDecoder {
            limits,
            state: State::Start,
        }
    }

    /// True when part of a request has been read and the rest has not arrived.
    pub fn in_request(&self, buf: &BytesMut) -> bool {
        !matches!(self.state, State::Start) || !buf.is_empty()
    }

    /// The next whole command in `buf` (its bytes are consumed), `Ok(None)` when more bytes
    /// are needed. An empty command (`*0`, a blank inline line) is skipped.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        loop {
            match &mut self.state {
                State::Start => {
                    let Some(&first) = buf.first() else {
                        return Ok(None);
                    };
                    if first != b'*' {
                        match self.inline(buf)? {
                            Some(args) if args.is_empty() => continue,
                            other => return Ok(other),
                        }
                    }
                    let Some(line) = self.line(buf)? else {
                        return Ok(None);
                    };
                    let count = parse_len(&line[1..], "multibulk length")?;
                    match count {
                        None | Some(0) => continue,
                        Some(n) if n > self.limits.max_args => {
                            return Err(ProtocolError("invalid multibulk length".into()));
                        }
                        Some(n) => {
                            self.state = State::Array {
                                remaining: n,
                                args: Vec::with_capacity(n.min(MAX_RESERVED_ARGS)),
                                bulk: None,
                            };
                        }
                    }
                }
                State::Array {
                    remaining,
                    args,
                    bulk,
                } => {
                    if *remaining == 0 {
                        let done = std::mem::take(args);
                        self.state = State::Start;
                        return Ok(Some(done));
                    }
                    let len = match *bulk {
                        Some(len) => len,
                        None => {
                            let Some(&first) = buf.first() else {
                                return Ok(None);
                            };
                            if first != b'$' {
                                return Err(ProtocolError(format!(
                                    "expected '$', got '{}'",
                                    char::from(first).escape_default()
                                )));
                            }
                            let Some(line) = take_line(buf, self.limits.max_inline_len)? else {
                                return Ok(None);
                            };
                            let len = match parse_len(&line[1..], "bulk length")? {
                                Some(len) if len <= self.limits.max_bulk_len => len,
                                _ => return Err(ProtocolError("invalid bulk length".into())),
                            };
                            *bulk = Some(len);
                            len
                        }
                    };
                    // The payload and its CRLF.
                    let Some(need) = len.checked_add(2) else {
                        return Err(ProtocolError("invalid bulk length".into()));
                    };
                    if buf.len() < need {
                        buf.reserve(need - buf.len());
                        return Ok(None);
                    }
                    let arg = buf.split_to(len).freeze();
                    if buf.get(..2) != Some(b"\r\n") {
                        return Err(ProtocolError("bulk string not followed by CRLF".into()));
                    }
                    buf.advance(2);
                    args.push(arg);
                    *bulk = None;
                    *remaining -= 1;
                }
            }
        }
    }

    /// A header line (`*N` or `$N`), without its CRLF.
    fn line(&self, buf: &mut BytesMut) -> Result<Option<Bytes>, ProtocolError> {
        take_line(buf, self.limits.max_inline_len)
    }

    /// An inline command: one line, arguments split on spaces (and tabs), with the double
    /// and single quotes that `redis-cli` accepts.
    fn inline(&self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let Some(end) = buf.iter().position(|&b| b == b'\n') else {
            if buf.len() > self.limits.max_inline_len {
                return Err(ProtocolError("too big inline request".into()));
            }
            return Ok(None);
        };
        if end > self.limits.max_inline_len {
            return Err(ProtocolError("too big inline request".into()));
        }
        let line = buf.split_to(end + 1);
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        let args = split_inline(text)?;
        if args.len() > self.limits.max_args {
            return Err(ProtocolError("invalid multibulk length".into()));
        }
        Ok(Some(args))
    }
}

/// Takes one CRLF-terminated line (without the CRLF), or `None` if it has not all arrived.
fn take_line(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, ProtocolError> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() > max {
            return Err(ProtocolError("too big header line".into()));
        }
        return Ok(None);
    };
    let line = buf.split_to(end).freeze();
    buf.advance(2);
    Ok(Some(line))
}

/// A decimal length; `None` for a negative one (a null array, which is skipped).
fn parse_len(digits: &[u8], what: &str) -> Result<Option<usize>, ProtocolError> {
    let invalid = || ProtocolError(format!("invalid {what}"));
    if let Some(rest) = digits.strip_prefix(b"-") {
        if rest.is_empty() || !rest.iter().all(u8::is_ascii_digit) {
            return Err(invalid());
        }
        return Ok(None);
    }
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(invalid());
    }
    let mut n: usize = 0;
    for &d in digits {
        n = n * 10 + usize::from(d - b'0');
    }
    Ok(Some(n))
}

/// Splits an inline command the way `redis-cli` quotes: `"..."` with backslash escapes
/// (`\n`, `\r`, `\t`, `\\`, `\"`, `\xHH`), `'...'` with only `\'`, otherwise runs of
/// non-space bytes.
fn split_inline(text: &[u8]) -> Result<Vec<Bytes>, ProtocolError> {
    let unbalanced = || ProtocolError("unbalanced quotes in request".into());
    let mut args = Vec::new();
    let mut i = 0;
    while i < text.len() {
        while text.get(i).is_some_and(|b| *b == b' ' || *b == b'\t') {
            i += 1;
        }
        let Some(&first) = text.get(i) else {
            break;
        };
        let mut arg = Vec::new();
        match first {
            b'"' => {
                i += 1;
                loop {
                    match text.get(i) {
                        None => return Err(unbalanced()),
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') => {
                            let escaped = text.get(i + 1).ok_or_else(unbalanced)?;
                            let hex = text.get(i + 2..i + 4).and_then(|h| {
                                std::str::from_utf8(h)
                                    .ok()
                                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                            });
                            match (escaped, hex) {
                                (b'x', Some(byte)) => {
                                    arg.push(byte);
                                    i += 4;
                                    continue;
                                }
                                (b'n', _) => arg.push(b'\n'),
                                (b'r', _) => arg.push(b'\r'),
                                (b't', _) => arg.push(b'\t'),
                                (b'b', _) => arg.push(0x08),
                                (b'a', _) => arg.push(0x07),
                                (other, _) => arg.push(*other),
                            }
                            i += 2;
                        }
                        Some(&b) => {
                            arg.push(b);
                            i += 1;
                        }
                    }
                }
            }
            b'\'' => {
                i += 1;
                loop {
                    match text.get(i) {
                        None => return Err(unbalanced()),
                        Some(b'\'') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') if text.get(i + 1) == Some(&b'\'') => {
                            arg.push(b'\'');
                            i += 2;
                        }
                        Some(&b) => {
                            arg.push(b);
                            i += 1;
                        }
                    }
                }
            }
            _ => {
                while let Some(&b) = text.get(i) {
                    if b == b' ' || b == b'\t' {
                        break;
                    }
                    arg.push(b);
                    i += 1;
                }
            }
        }
        // A closing quote must be followed by a space or the end.
        if (first == b'"' || first == b'\'')
            && text.get(i).is_some_and(|b| *b != b' ' && *b != b'\t')
        {
            return Err(unbalanced());
        }
        args.push(Bytes::from(arg));
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(decoder: &mut RequestDecoder, buf: &mut BytesMut) -> Vec<Vec<Bytes>> {
        let mut out = Vec::new();
        while let Some(cmd) = decoder.decode(buf).unwrap_or_else(|e| panic!("{e}")) {
            out.push(cmd);
        }
        out
    }

    fn encode(cmd: &[Vec<u8>]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", cmd.len()).into_bytes();
        for arg in cmd {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    #[test]
    fn arrays_of_bulk_strings() {
        let mut d = RequestDecoder::default();
        let mut buf =
            BytesMut::from(&b"*2\r\n$4\r\nECHO\r\n$3\r\na\r\n\r\n*1\r\n$4\r\nPING\r\n"[..]);
        let cmds = decode_all(&mut d, &mut buf);
        assert_eq!(cmds.len(), 2);
        assert_eq!(cmds[0], vec![Bytes::from("ECHO"), Bytes::from("a\r\n")]);
        assert_eq!(cmds[1], vec![Bytes::from("PING")]);
        assert!(buf.is_empty());
    }

    #[test]
    fn inline_commands_with_quotes() {
        let mut d = RequestDecoder::default();
        let mut buf = BytesMut::from(&b"set k \"a b\\x41\" 'c\\'d'\r\n\r\nPING\n"[..]);
        let cmds = decode_all(&mut d, &mut buf);
        assert_eq!(
            cmds,
            vec![
                vec![
                    Bytes::from("set"),
                    Bytes::from("k"),
                    Bytes::from("a bA"),
                    Bytes::from("c'd")
                ],
                vec![Bytes::from("PING")],
            ]
        );
        let mut bad = BytesMut::from(&b"echo \"open\r\n"[..]);
        assert!(RequestDecoder::default().decode(&mut bad).is_err());
    }

    #[test]
    fn a_declared_length_over_the_limit_is_refused_before_its_bytes_arrive() {
        let mut d = RequestDecoder::default();
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$536870912\r\n"[..]);
        let err = d.decode(&mut buf).unwrap_err();
        assert_eq!(err.0, "invalid bulk length");
        assert!(buf.capacity() < 1 << 20, "nothing was reserved for it");
        let mut too_many = BytesMut::from(&b"*2000000\r\n"[..]);
        assert_eq!(
            RequestDecoder::default()
                .decode(&mut too_many)
                .unwrap_err()
                .0,
            "invalid multibulk length"
        );
    }

    #[test]
    fn malformed_headers_are_errors() {
        for bad in [
            &b"*x\r\n"[..],
            b"*1\r\n:1\r\n",
            b"*1\r\n$-\r\n",
            b"*1\r\n$3\r\nabcXY",
            b"*99999999999999999999\r\n",
        ] {
            let mut buf = BytesMut::from(bad);
            assert!(
                RequestDecoder::default().decode(&mut buf).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut long = BytesMut::from(&vec![b'a'; 70_000][..]);
        assert!(RequestDecoder::default().decode(&mut long).is_err());
    }

    proptest! {
        /// However the bytes of a pipeline are split into reads, the same commands come out.
        #[test]
        fn any_split_of_a_pipeline_decodes_the_same(
            cmds in proptest::collection::vec(
                proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..5),
                1..8,
            ),
            cuts in proptest::collection::vec(1usize..30, 0..20),
        ) {
            let wire: Vec<u8> = cmds.iter().flat_map(|c| encode(c)).collect();
            let mut d = RequestDecoder::default();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut at: usize = 0;
            for cut in cuts.iter().chain(std::iter::once(&usize::MAX)) {
                let end = at.saturating_add(*cut).min(wire.len());
                buf.extend_from_slice(&wire[at..end]);
                at = end;
                got.extend(decode_all(&mut d, &mut buf));
            }
            buf.extend_from_slice(&wire[at..]);
            got.extend(decode_all(&mut d, &mut buf));
            let want: Vec<Vec<Bytes>> = cmds
                .iter()
                .map(|c| c.iter().map(|a| Bytes::from(a.clone())).collect())
                .collect();
            prop_assert_eq!(got, want);
            prop_assert!(!d.in_request(&buf));
        }

        /// Arbitrary bytes never panic the decoder.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut d = RequestDecoder::default();
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = d.decode(&mut buf) {}
        }
    }
}
