//! The order-preserving 32-byte code of a LaunchDarkly context hash.
//!
//! A context hash is the standard padded base64 of a SHA-256 digest: 44 bytes, 43 significant
//! digits and one `=`. The code replaces every digit by the rank of its *character* in ASCII
//! order (not by its base64 value), so that comparing codes with `memcmp` gives the same order
//! as comparing the 44-byte strings. See `format-spec.md` §5.5 for the details and an example.

/// Length of a hash key in bytes (the 44-character base64 string).
pub const HASH_KEY_LEN: usize = 44;
/// Length of a code in bytes.
pub const CODE_LEN: usize = 32;

/// The 64 base64 characters in ASCII order: `+ / 0-9 A-Z a-z`.
const BY_RANK: [u8; 64] = *b"+/0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The 16 characters the 43rd digit can take in a canonical encoding of 32 bytes (base64
/// values that are multiples of 4: `A E I M Q U Y c g k o s w 0 4 8`), in ASCII order.
const LAST_BY_RANK: [u8; 16] = *b"048AEIMQUYcgkosw";

/// Marks a byte that is not allowed at that position. Every valid rank is < 64, so the high
/// bit of an OR over all ranks says whether any character was invalid.
const INVALID: u8 = 0xFF;

const fn rank_table<const N: usize>(chars: &[u8; N]) -> [u8; 256] {
    let mut table = [INVALID; 256];
    let mut i = 0;
    while i < N {
        table[chars[i] as usize] = i as u8;
        i += 1;
    }
    table
}

/// Byte → rank in ASCII order among the 64 base64 characters, or [`INVALID`].
const RANK: [u8; 256] = rank_table(&BY_RANK);
/// Byte → rank among the 16 characters allowed as the 43rd digit, or [`INVALID`].
const LAST_RANK: [u8; 256] = rank_table(&LAST_BY_RANK);

/// Whether `key` is a canonical LaunchDarkly context hash: exactly 44 bytes, 43 characters of
/// the standard base64 alphabet followed by `=`, the 43rd character encoding a value whose low
/// two bits are zero (so that the string is the one and only encoding of 32 bytes).
///
/// Only such keys can be stored in a [`TableKind::Hashed`](super::TableKind::Hashed) table.
pub fn is_hash_key(key: &[u8]) -> bool {
    encode(key).is_some()
}

/// Encodes a hash key into its 32-byte order-preserving code, or `None` if `key` is not a
/// canonical hash key (see [`is_hash_key`]). Does not allocate.
///
/// For any two hash keys `a` and `b`, `encode(a).cmp(&encode(b)) == a.cmp(b)`.
#[inline]
pub fn encode(key: &[u8]) -> Option<[u8; CODE_LEN]> {
    let s: &[u8; HASH_KEY_LEN] = key.try_into().ok()?;
    let mut out = [0u8; CODE_LEN];
    let mut bad = 0u8;
    // Digits 0..40 in ten groups of four: 24 bits → 3 bytes each.
    for g in 0..10 {
        let mut acc = 0u32;
        for j in 0..4 {
            let r = RANK[s[g * 4 + j] as usize];
            bad |= r;
            acc = (acc << 6) | u32::from(r & 0x3F);
        }
        out[g * 3] = (acc >> 16) as u8;
        out[g * 3 + 1] = (acc >> 8) as u8;
        out[g * 3 + 2] = acc as u8;
    }
    // Digits 40 and 41 (6 bits each) and digit 42 (4 bits): 16 bits → 2 bytes.
    let r40 = RANK[s[40] as usize];
    let r41 = RANK[s[41] as usize];
    let r42 = LAST_RANK[s[42] as usize];
    bad |= r40 | r41 | r42;
    if bad & 0x80 != 0 || s[43] != b'=' {
        return None;
    }
    let tail = (u16::from(r40) << 10) | (u16::from(r41) << 4) | u16::from(r42);
    out[30..32].copy_from_slice(&tail.to_be_bytes());
    Some(out)
}

/// Decodes a code back into its 44-byte hash key. Total: every 32-byte array is the code of
/// exactly one hash key, so even a corrupt code decodes to *some* canonical hash key.
#[inline]
pub fn decode(code: &[u8; CODE_LEN]) -> [u8; HASH_KEY_LEN] {
    let mut out = [0u8; HASH_KEY_LEN];
    for g in 0..10 {
        let acc = (u32::from(code[g * 3]) << 16)
            | (u32::from(code[g * 3 + 1]) << 8)
            | u32::from(code[g * 3 + 2]);
        for j in 0..4 {
            let r = (acc >> (18 - 6 * j)) & 0x3F;
            out[g * 4 + j] = BY_RANK[r as usize];
        }
    }
    let tail = u16::from_be_bytes([code[30], code[31]]);
    out[40] = BY_RANK[usize::from((tail >> 10) & 0x3F)];
    out[41] = BY_RANK[usize::from((tail >> 4) & 0x3F)];
    out[42] = LAST_BY_RANK[usize::from(tail & 0x0F)];
    out[43] = b'=';
    out
}

/// A code's first 8 bytes as a big-endian `u64` (codes of every scheme are at least 16 bytes;
/// a shorter slice reads as 0).
#[inline]
fn top64(code: &[u8]) -> u64 {
    code.get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

/// The bucket of a code: its top `bits` bits (`bits` ≤ 32; 0 gives bucket 0).
#[inline]
pub fn bucket(code: &[u8], bits: u32) -> u64 {
    if bits == 0 {
        return 0;
    }
    top64(code) >> (64 - bits.min(64))
}

/// The bucket `encode(key)` would fall in, from the key's first six characters alone, so a
/// lookup can start loading the bucket's index entry before it encodes and checks the whole
/// key. Only a hint: for a key that is not a hash key the result means nothing.
#[inline]
pub fn bucket_of_key(key: &[u8], bits: u32) -> u64 {
    if bits == 0 {
        return 0;
    }
    let mut top = 0u64;
    for j in 0..6 {
        let r = key.get(j).map_or(0, |&c| RANK[usize::from(c)] & 0x3F);
        top |= u64::from(r) << (58 - 6 * j);
    }
    top >> (64 - bits.min(32))
}

/// The 32 bits that follow a code's top `bits` bits (`bits` ≤ 32), as a fraction of 2^32:
/// where the code falls within its bucket. Codes of uniformly random keys are uniform within
/// a bucket, so `fraction × bucket size` estimates the code's position in it.
#[inline]
pub fn fraction_after(code: &[u8], bits: u32) -> u32 {
    ((top64(code) << bits.min(32)) >> 32) as u32
}

/// Length of a UUID key in bytes (`8-4-4-4-12` lowercase hex digits).
pub const UUID_KEY_LEN: usize = 36;
/// Length of a UUID code in bytes.
pub const UUID_CODE_LEN: usize = 16;

/// Where the 32 hex digits of a UUID key stand.
const UUID_DIGITS: [usize; 32] = [
    0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15, 16, 17, 19, 20, 21, 22, 24, 25, 26, 27, 28, 29,
    30, 31, 32, 33, 34, 35,
];
/// Where the hyphens of a UUID key stand.
const UUID_HYPHENS: [usize; 4] = [8, 13, 18, 23];
/// Lowercase hex digits in order.
const HEX_DIGITS: [u8; 16] = *b"0123456789abcdef";
/// Byte → value of a lowercase hex digit, or [`INVALID`].
const HEX_VALUE: [u8; 256] = rank_table(&HEX_DIGITS);

/// Whether `key` is a UUID in canonical form: 36 bytes, lowercase hex digits in groups of
/// 8-4-4-4-12 separated by `-` (any version or variant). Only such keys can be stored in a
/// [`TableKind::Uuid`](super::TableKind::Uuid) table.
pub fn is_uuid_key(key: &[u8]) -> bool {
    encode_uuid(key).is_some()
}

/// Encodes a UUID key into its 16 bytes (the digits' values, two to a byte), or `None` if it
/// is not a canonical UUID (see [`is_uuid_key`]). Lowercase hex digits sort like their
/// values and the hyphens stand at the same places in every key, so for any two UUID keys
/// `encode_uuid(a).cmp(&encode_uuid(b)) == a.cmp(b)`.
#[inline]
pub fn encode_uuid(key: &[u8]) -> Option<[u8; UUID_CODE_LEN]> {
    let s: &[u8; UUID_KEY_LEN] = key.try_into().ok()?;
    if UUID_HYPHENS.iter().any(|&at| s[at] != b'-') {
        return None;
    }
    let mut out = [0u8; UUID_CODE_LEN];
    let mut bad = 0u8;
    for (byte, pair) in out.iter_mut().zip(UUID_DIGITS.chunks_exact(2)) {
        let hi = HEX_VALUE[usize::from(s[pair[0]])];
        let lo = HEX_VALUE[usize::from(s[pair[1]])];
        bad |= hi | lo;
        *byte = (hi << 4) | (lo & 0x0F);
    }
    (bad & 0x80 == 0).then_some(out)
}

/// Decodes a UUID code back into its 36-byte key. Total: every 16-byte array is the code of
/// exactly one canonical UUID key.
#[inline]
pub fn decode_uuid(code: &[u8; UUID_CODE_LEN]) -> [u8; UUID_KEY_LEN] {
    let mut out = [b'-'; UUID_KEY_LEN];
    for (byte, pair) in code.iter().zip(UUID_DIGITS.chunks_exact(2)) {
        out[pair[0]] = HEX_DIGITS[usize::from(byte >> 4)];
        out[pair[1]] = HEX_DIGITS[usize::from(byte & 0x0F)];
    }
    out
}

/// The longest code of any scheme.
pub const MAX_CODE_LEN: usize = CODE_LEN;

/// A code of any scheme: the first [`Scheme::code_len`] bytes are used, the rest are zero.
pub type Code = [u8; MAX_CODE_LEN];

/// A key decoded from a code, without allocating.
#[derive(Debug, Clone, Copy)]
pub struct DecodedKey {
    buf: [u8; HASH_KEY_LEN],
    len: usize,
}

impl DecodedKey {
    /// The key's bytes.
    pub fn as_slice(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

/// How the keys of a dense table become fixed-length codes that sort like the keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// LaunchDarkly context hashes: 32-byte codes ([`encode`]).
    LdHash,
    /// Canonical UUID strings: 16-byte codes ([`encode_uuid`]).
    Uuid,
}

impl Scheme {
    /// Bytes per code.
    #[inline]
    pub fn code_len(self) -> usize {
        match self {
            Scheme::LdHash => CODE_LEN,
            Scheme::Uuid => UUID_CODE_LEN,
        }
    }

    /// The code of `key`, or `None` if the scheme cannot encode it.
    #[inline]
    pub fn encode(self, key: &[u8]) -> Option<Code> {
        match self {
            Scheme::LdHash => encode(key),
            Scheme::Uuid => encode_uuid(key).map(|c| {
                let mut out = [0u8; MAX_CODE_LEN];
                out[..UUID_CODE_LEN].copy_from_slice(&c);
                out
            }),
        }
    }

    /// The key of a code (`code` holds at least [`code_len`](Self::code_len) bytes; missing
    /// bytes read as zero), on the stack.
    pub fn decode(self, code: &[u8]) -> DecodedKey {
        let mut buf = [0u8; HASH_KEY_LEN];
        let len = match self {
            Scheme::LdHash => {
                let mut c = [0u8; CODE_LEN];
                let n = code.len().min(CODE_LEN);
                c[..n].copy_from_slice(&code[..n]);
                buf = decode(&c);
                HASH_KEY_LEN
            }
            Scheme::Uuid => {
                let mut c = [0u8; UUID_CODE_LEN];
                let n = code.len().min(UUID_CODE_LEN);
                c[..n].copy_from_slice(&code[..n]);
                buf[..UUID_KEY_LEN].copy_from_slice(&decode_uuid(&c));
                UUID_KEY_LEN
            }
        };
        DecodedKey { buf, len }
    }

    /// The bucket `self.encode(key)` would fall in, from the key's first characters alone:
    /// a hint to start loading the index entry early; meaningless for a key the scheme
    /// cannot encode.
    #[inline]
    pub fn bucket_of_key(self, key: &[u8], bits: u32) -> u64 {
        match self {
            Scheme::LdHash => bucket_of_key(key, bits),
            Scheme::Uuid => {
                if bits == 0 {
                    return 0;
                }
                let mut top = 0u64;
                for j in 0..8 {
                    let v = key.get(j).map_or(0, |&c| HEX_VALUE[usize::from(c)] & 0x0F);
                    top |= u64::from(v) << (60 - 4 * j);
                }
                top >> (64 - bits.min(32))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_codes_round_trip_and_sort_like_the_keys() {
        let keys = [
            "00000000-0000-0000-0000-000000000000",
            "0123abcd-4567-89ef-0a1b-2c3d4e5f6789",
            "9fffffff-ffff-ffff-ffff-ffffffffffff",
            "a0000000-0000-0000-0000-000000000000",
            "ffffffff-ffff-ffff-ffff-fffffffffffe",
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
        ];
        for pair in keys.windows(2) {
            let (a, b) = (pair[0].as_bytes(), pair[1].as_bytes());
            assert!(encode_uuid(a).unwrap() < encode_uuid(b).unwrap());
        }
        for key in keys {
            let code = encode_uuid(key.as_bytes()).unwrap();
            assert_eq!(decode_uuid(&code).as_slice(), key.as_bytes());
            assert_eq!(Scheme::Uuid.decode(&code).as_slice(), key.as_bytes());
            for bits in [0, 1, 9, 21, 32] {
                assert_eq!(
                    Scheme::Uuid.bucket_of_key(key.as_bytes(), bits),
                    bucket(&code, bits)
                );
            }
        }
        for bad in [
            "0123ABCD-4567-89ef-0a1b-2c3d4e5f6789",
            "0123abcd-4567-89ef-0a1b-2c3d4e5f678",
            "0123abcd-4567-89ef-0a1b-2c3d4e5f67890",
            "0123abcd+4567-89ef-0a1b-2c3d4e5f6789",
            "0123abcd-4567-89ef-0a1b-2c3d4e5f678g",
            "{123abcd-4567-89ef-0a1b-2c3d4e5f6789",
            "0123abcd04567-89ef-0a1b-2c3d4e5f6789",
        ] {
            assert!(!is_uuid_key(bad.as_bytes()), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn uuid_order_matches_string_order(a in any::<[u8; 16]>(), b in any::<[u8; 16]>()) {
            let (ka, kb) = (decode_uuid(&a), decode_uuid(&b));
            prop_assert!(is_uuid_key(&ka));
            prop_assert_eq!(encode_uuid(&ka), Some(a));
            prop_assert_eq!(a.cmp(&b), ka.cmp(&kb));
        }
    }

    #[test]
    fn bucket_of_key_matches_the_code() {
        let mut keys = vec![
            b"++++++++++++++++++++++++++++++++++++++++++0=".to_vec(),
            b"zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzw=".to_vec(),
        ];
        keys.extend((0..50).map(|i| crate::key::context_hash(&format!("user-{i}")).into_bytes()));
        for key in &keys {
            let code = encode(key).unwrap();
            for bits in [0, 1, 7, 21, 26, 30, 32] {
                assert_eq!(bucket_of_key(key, bits), bucket(&code, bits), "{bits}");
            }
        }
    }
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use proptest::prelude::*;

    fn b64(x: &[u8; 32]) -> String {
        STANDARD.encode(x)
    }

    #[test]
    fn tables_are_consistent() {
        for (rank, &c) in BY_RANK.iter().enumerate() {
            assert_eq!(RANK[c as usize] as usize, rank);
        }
        assert!(BY_RANK.windows(2).all(|w| w[0] < w[1]));
        assert!(LAST_BY_RANK.windows(2).all(|w| w[0] < w[1]));
        // The 16 last-digit characters are exactly those whose base64 value is a multiple of 4.
        let std_alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut expected: Vec<u8> = std_alphabet.iter().copied().step_by(4).collect();
        expected.sort_unstable();
        assert_eq!(expected, LAST_BY_RANK.to_vec());
        assert_eq!(RANK[b'=' as usize], INVALID);
    }

    #[test]
    fn worked_example() {
        // The worked example of format-spec.md §5.5.
        let key = b"CEXjZY7cHJG/ydFy7q4+YEFwVrG3/pkJwA4FAjrbfx0=";
        let code = encode(key).unwrap();
        assert_eq!(&decode(&code), key);
        // 'C' has rank 14, 'E' 16, 'X' 35, 'j' 47.
        assert_eq!(RANK[b'C' as usize], 14);
        assert_eq!(RANK[b'E' as usize], 16);
        assert_eq!(RANK[b'X' as usize], 35);
        assert_eq!(RANK[b'j' as usize], 47);
        // 14<<18 | 16<<12 | 35<<6 | 47 = 0x3908EF
        let first = (14u32 << 18) | (16 << 12) | (35 << 6) | 47;
        assert_eq!(&code[..3], &first.to_be_bytes()[1..]);
        // '0' is the last digit: rank 0 among the 16; 'f' = 38+5 = 43, 'x' = 38+23 = 61.
        let tail = (43u16 << 10) | (61 << 4);
        assert_eq!(&code[30..], &tail.to_be_bytes());
        let hex: String = code.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "3908ef9642684d5481fa947e27618091047c877485075c15f0c19132fde7afd0"
        );
    }

    #[test]
    fn extremes() {
        let lo = b64(&[0u8; 32]);
        let hi = b64(&[0xFF; 32]);
        assert!(is_hash_key(lo.as_bytes()) && is_hash_key(hi.as_bytes()));
        let min = format!("{}0=", "+".repeat(42));
        let max = format!("{}w=", "z".repeat(42));
        assert_eq!(encode(min.as_bytes()), Some([0u8; 32]));
        assert_eq!(encode(max.as_bytes()), Some([0xFF; 32]));
        assert_eq!(&decode(&[0u8; 32]), min.as_bytes());
        assert_eq!(&decode(&[0xFF; 32]), max.as_bytes());
    }

    #[test]
    fn rejects_non_canonical() {
        let good = b64(&[7u8; 32]).into_bytes();
        assert!(is_hash_key(&good));
        // Wrong lengths.
        assert!(!is_hash_key(&good[..43]));
        assert!(!is_hash_key(b""));
        let mut long = good.clone();
        long.push(b'=');
        assert!(!is_hash_key(&long));
        // No padding, or padding elsewhere.
        let mut v = good.clone();
        v[43] = b'A';
        assert!(!is_hash_key(&v));
        let mut v = good.clone();
        v[10] = b'=';
        assert!(!is_hash_key(&v));
        // URL-safe alphabet and other bytes.
        for c in [b'-', b'_', b' ', b'\0', 0xFF, b'.'] {
            for pos in [0, 20, 41, 42] {
                let mut v = good.clone();
                v[pos] = c;
                assert!(!is_hash_key(&v), "{c} at {pos}");
            }
        }
        // Last digit with non-zero low bits: every character outside the 16.
        for &c in BY_RANK.iter() {
            let mut v = good.clone();
            v[42] = c;
            assert_eq!(is_hash_key(&v), LAST_BY_RANK.contains(&c), "{}", c as char);
        }
    }

    proptest! {
        #[test]
        fn code_order_matches_string_order(x in any::<[u8; 32]>(), y in any::<[u8; 32]>()) {
            let (sx, sy) = (b64(&x), b64(&y));
            let (cx, cy) = (encode(sx.as_bytes()).unwrap(), encode(sy.as_bytes()).unwrap());
            prop_assert_eq!(cx.cmp(&cy), sx.cmp(&sy));
            prop_assert_eq!(&decode(&cx)[..], sx.as_bytes());
            prop_assert_eq!(&decode(&cy)[..], sy.as_bytes());
        }

        #[test]
        fn decode_then_encode_is_identity(code in any::<[u8; 32]>()) {
            let s = decode(&code);
            prop_assert_eq!(encode(&s), Some(code));
            // And the string is what base64 gives for the bytes it decodes to.
            let bytes = STANDARD.decode(s).unwrap();
            let again = STANDARD.encode(bytes);
            prop_assert_eq!(again.as_bytes(), &s[..]);
        }

        #[test]
        fn is_hash_key_agrees_with_base64(
            digits in proptest::collection::vec(0usize..64, 43),
            pad in prop_oneof![Just(b'='), any::<u8>()],
        ) {
            let mut s: Vec<u8> = digits.iter().map(|&d| BY_RANK[d]).collect();
            s.push(pad);
            let canonical = STANDARD
                .decode(&s)
                .map(|d| d.len() == 32 && STANDARD.encode(&d).as_bytes() == &s[..])
                .unwrap_or(false);
            prop_assert_eq!(is_hash_key(&s), canonical);
        }
    }
}
