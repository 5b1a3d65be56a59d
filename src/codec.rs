//! Little-endian encoding helpers shared by the log and the manifest.
//!
//! Every integer on disk is little endian with a fixed width; strings and byte strings are a
//! `u32` length followed by the bytes. Decoding never panics: running out of bytes, a length
//! past the end or invalid UTF-8 is a [`DecodeError`] that the caller turns into
//! [`crate::Error::Corrupt`] naming the file.

use std::fmt;

/// Why a byte string could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Byte offset (within the decoded buffer) where decoding failed.
    pub offset: usize,
    /// What was expected there.
    pub detail: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: {}", self.offset, self.detail)
    }
}

/// Slices at least this long are kept by reference by a [`gathering`](Encoder::gathering)
/// encoder rather than copied.
pub const GATHER_MIN: usize = 64 * 1024;

/// A [`gathering`](Encoder::gathering) encoder's output: its buffer, and the slices it kept
/// by reference with where each goes.
#[derive(Debug)]
pub struct Gathered<'a> {
    buf: Vec<u8>,
    shared: Vec<(usize, &'a [u8])>,
}

impl<'a> Gathered<'a> {
    /// Appends raw bytes at the end.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Total length.
    pub fn len(&self) -> usize {
        self.buf.len() + self.shared.iter().map(|(_, s)| s.len()).sum::<usize>()
    }

    /// The output's pieces in order; none is empty.
    pub fn pieces(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut from = 0;
        let cut = self.shared.iter().flat_map(move |&(at, slice)| {
            let copied = self.buf.get(from..at).unwrap_or_default();
            from = at;
            [copied, slice]
        });
        let last = self.shared.last().map_or(0, |&(at, _)| at);
        cut.chain([self.buf.get(last..).unwrap_or_default()])
            .filter(|piece| !piece.is_empty())
    }
}

/// Appends fixed-width little-endian values to a buffer.
#[derive(Debug, Default)]
pub struct Encoder<'a> {
    buf: Vec<u8>,
    /// Counting only: nothing is kept, `counted` says how much would have been written.
    counting: bool,
    counted: usize,
    /// Gathering: the large slices given to [`shared`](Encoder::shared), each with the
    /// position in `buf` it follows; `None` for an encoder that copies everything.
    gathered: Option<Vec<(usize, &'a [u8])>>,
}

impl<'a> Encoder<'a> {
    /// An empty encoder.
    pub fn new() -> Self {
        Encoder::default()
    }

    /// An empty encoder with room for `len` bytes (from a [`counting`](Encoder::counting)
    /// pass, so that a large payload is allocated once, at its size).
    pub fn with_capacity(len: usize) -> Self {
        Encoder {
            buf: Vec::with_capacity(len),
            ..Encoder::default()
        }
    }

    /// An encoder that keeps nothing and only counts: [`len`](Encoder::len) is what the same
    /// calls would write.
    pub fn counting() -> Self {
        Encoder {
            counting: true,
            ..Encoder::default()
        }
    }

    /// An encoder that copies small values into its buffer and keeps slices of
    /// [`GATHER_MIN`] bytes or more given to [`shared`](Encoder::shared) by reference: the
    /// output is [`into_gathered`](Encoder::into_gathered), written out without being assembled.
    pub fn gathering() -> Self {
        Encoder {
            gathered: Some(Vec::new()),
            ..Encoder::default()
        }
    }

    /// Bytes written (or counted) so far.
    pub fn len(&self) -> usize {
        if self.counting {
            self.counted
        } else {
            let shared: usize = self.gathered.iter().flatten().map(|(_, s)| s.len()).sum();
            self.buf.len() + shared
        }
    }

    /// Writes raw bytes that outlive the encoder: a gathering encoder keeps a large slice by
    /// reference, any other encoder copies it as [`raw`](Encoder::raw) does.
    pub fn shared(&mut self, bytes: &'a [u8]) {
        match &mut self.gathered {
            Some(gathered) if bytes.len() >= GATHER_MIN => gathered.push((self.buf.len(), bytes)),
            _ => self.raw(bytes),
        }
    }

    /// The output: the buffer and the shared slices, in order.
    pub fn into_gathered(self) -> Gathered<'a> {
        Gathered {
            buf: self.buf,
            shared: self.gathered.unwrap_or_default(),
        }
    }

    /// The bytes written so far (empty for a counting encoder).
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// The bytes written so far, to fill in or append to in place.
    pub fn bytes_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Writes one byte.
    pub fn u8(&mut self, v: u8) {
        self.raw(&[v]);
    }

    /// Writes a `u32`.
    pub fn u32(&mut self, v: u32) {
        self.raw(&v.to_le_bytes());
    }

    /// Writes a `u64`.
    pub fn u64(&mut self, v: u64) {
        self.raw(&v.to_le_bytes());
    }

    /// Writes raw bytes with no length.
    pub fn raw(&mut self, bytes: &[u8]) {
        if self.counting {
            self.counted += bytes.len();
        } else {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// Writes a `u32` length and the bytes. Lengths are bounded by the callers (keys ≤ 4096,
    /// names ≤ 1024, records ≤ `MAX_RECORD_LEN`), so the conversion saturates only on misuse.
    pub fn bytes(&mut self, bytes: &[u8]) {
        self.u32(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
        self.raw(bytes);
    }

    /// Writes a string as bytes.
    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    /// Writes an optional string: a presence byte (0 or 1) then the string.
    pub fn opt_str(&mut self, s: Option<&str>) {
        match s {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }

    /// Writes an optional `u64`: a presence byte then the value.
    pub fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.u64(v);
            }
        }
    }
}

/// Reads fixed-width little-endian values from a byte slice.
#[derive(Debug)]
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    /// A decoder at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Decoder { buf, pos: 0 }
    }

    /// Current offset.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// An error at the current offset.
    pub fn error(&self, detail: impl Into<String>) -> DecodeError {
        DecodeError {
            offset: self.pos,
            detail: detail.into(),
        }
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    /// Reads `n` raw bytes.
    pub fn raw(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| self.error(format!("{n} bytes needed, {} left", self.remaining())))?;
        let out = self
            .buf
            .get(self.pos..end)
            .ok_or_else(|| self.error("out of range"))?;
        self.pos = end;
        Ok(out)
    }

    /// Reads a fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let bytes = self.raw(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    /// Reads a `u32`.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// Reads a `u64`.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Reads a length-prefixed byte string of at most `max` bytes.
    pub fn bytes(&mut self, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(self.error(format!("length {len} exceeds the limit {max}")));
        }
        self.raw(len)
    }

    /// Reads a length-prefixed UTF-8 string of at most `max` bytes.
    pub fn str(&mut self, max: usize) -> Result<&'a str, DecodeError> {
        let start = self.pos;
        let bytes = self.bytes(max)?;
        std::str::from_utf8(bytes).map_err(|_| DecodeError {
            offset: start,
            detail: "string is not UTF-8".into(),
        })
    }

    /// Reads an optional string.
    pub fn opt_str(&mut self, max: usize) -> Result<Option<&'a str>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.str(max)?)),
            other => Err(self.error(format!("presence byte {other} is neither 0 nor 1"))),
        }
    }

    /// Reads an optional `u64`.
    pub fn opt_u64(&mut self) -> Result<Option<u64>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.u64()?)),
            other => Err(self.error(format!("presence byte {other} is neither 0 nor 1"))),
        }
    }

    /// Fails unless every byte was read.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.remaining() != 0 {
            return Err(self.error(format!("{} unexpected trailing bytes", self.remaining())));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut e = Encoder::new();
        e.u8(7);
        e.u32(0xdead_beef);
        e.u64(u64::MAX - 1);
        e.str("héllo");
        e.opt_str(None);
        e.opt_str(Some("x"));
        e.opt_u64(Some(42));
        e.bytes(b"\x00\xff");
        let bytes = e.into_bytes();
        let mut d = Decoder::new(&bytes);
        assert_eq!(d.u8().unwrap(), 7);
        assert_eq!(d.u32().unwrap(), 0xdead_beef);
        assert_eq!(d.u64().unwrap(), u64::MAX - 1);
        assert_eq!(d.str(100).unwrap(), "héllo");
        assert_eq!(d.opt_str(100).unwrap(), None);
        assert_eq!(d.opt_str(100).unwrap(), Some("x"));
        assert_eq!(d.opt_u64().unwrap(), Some(42));
        assert_eq!(d.bytes(2).unwrap(), b"\x00\xff");
        d.finish().unwrap();
    }

    #[test]
    fn truncation_and_limits_are_errors() {
        let mut e = Encoder::new();
        e.str("abcdef");
        let bytes = e.into_bytes();
        for cut in 0..bytes.len() {
            assert!(Decoder::new(&bytes[..cut]).str(100).is_err());
        }
        assert!(Decoder::new(&bytes).str(3).is_err());
        assert!(Decoder::new(&[2]).opt_u64().is_err());
        assert!(Decoder::new(&[1, 0, 0, 0, 0xff]).str(10).is_err());
    }
}
