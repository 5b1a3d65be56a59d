//! A list of keys held in one buffer: the form a change carries its keys in, from the parser
//! through the log record to the overlay run, without an allocation or a copy per key.

use std::fmt;
use std::sync::Arc;

/// Bytes a key's length prefix takes in a block.
const LEN_PREFIX: usize = 4;
/// log2 of [`BLOCK`].
const BLOCK_BITS: u32 = 20;
/// A block's size: a list holds its keys in blocks of up to 1 MiB, each key whole in one.
/// Blocks keep a large list from ever being copied into a buffer twice its size as it grows.
const BLOCK: usize = 1 << BLOCK_BITS;

/// Keys, in the order given, in blocks of up to 1 MiB laid out as a log record lays out a key
/// array (each key as `len u32 | bytes`, format-spec §4.4). Cloning shares the blocks; a push
/// to a shared list copies them first.
///
/// A list of a million 44-byte keys takes 48 MB, where a `Vec<Vec<u8>>` took 68 MB in a
/// million allocations. A write sends the blocks to the log as they are, and the overlay
/// points into them rather than copying the keys.
///
/// ```
/// use segstore::Keys;
///
/// let mut keys: Keys = ["u1", "u2"].into_iter().collect();
/// keys.push("u3");
/// assert_eq!(keys.len(), 3);
/// assert_eq!(keys.iter().last(), Some(&b"u3"[..]));
/// assert_eq!(keys, ["u1", "u2", "u3"]);
/// ```
#[derive(Clone, Default)]
pub struct Keys {
    blocks: Arc<Vec<Vec<u8>>>,
    count: usize,
}

impl Keys {
    /// An empty list.
    pub fn new() -> Self {
        Keys::default()
    }

    /// Appends `key`. A key longer than `u32::MAX` bytes is cut to that length; writes refuse
    /// keys longer than [`MAX_KEY_LEN`](crate::MAX_KEY_LEN) long before that.
    pub fn push(&mut self, key: impl AsRef<[u8]>) {
        self.push_at(key.as_ref());
    }

    /// Appends `key` and returns its position (see [`Keys::key_at`]).
    pub(crate) fn push_at(&mut self, key: &[u8]) -> u64 {
        let len = u32::try_from(key.len()).unwrap_or(u32::MAX);
        let key = key.get(..len as usize).unwrap_or(key);
        let needed = LEN_PREFIX + key.len();
        let blocks = Arc::make_mut(&mut self.blocks);
        let fits = blocks
            .last()
            .is_some_and(|block| block.len() + needed <= BLOCK);
        if !fits {
            // The first block grows from small; once a list fills one, it is large, and the
            // next blocks are made whole. A key too long for a block gets one of its own.
            let capacity = if blocks.is_empty() { 0 } else { BLOCK };
            blocks.push(Vec::with_capacity(capacity.max(needed)));
        }
        let index = blocks.len() - 1;
        let Some(block) = blocks.last_mut() else {
            unreachable!("a block was pushed above");
        };
        let at = block.len();
        if block.capacity() - at < needed {
            block.reserve_exact(needed.max(at).min(BLOCK - at).max(needed));
        }
        block.extend_from_slice(&len.to_le_bytes());
        block.extend_from_slice(key);
        self.count += 1;
        ((index as u64) << BLOCK_BITS) | at as u64
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when the list holds no key.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The keys, in order.
    pub fn iter(&self) -> KeysIter<'_> {
        KeysIter {
            blocks: self.blocks.iter(),
            block: &[],
            left: self.count,
        }
    }

    /// The keys as separate vectors.
    pub fn to_vecs(&self) -> Vec<Vec<u8>> {
        self.iter().map(<[u8]>::to_vec).collect()
    }

    /// Frees the room reserved beyond the keys held.
    pub fn shrink_to_fit(&mut self) {
        let spare = self.blocks.last().is_some_and(|b| b.capacity() > b.len());
        if spare {
            if let Some(last) = Arc::make_mut(&mut self.blocks).last_mut() {
                last.shrink_to_fit();
            }
        }
    }

    /// The blocks, in order: together, the key array of a log record.
    pub(crate) fn blocks(&self) -> impl Iterator<Item = &[u8]> {
        self.blocks.iter().map(Vec::as_slice)
    }

    /// Bytes the blocks hold.
    pub(crate) fn held_bytes(&self) -> usize {
        self.blocks.iter().map(Vec::len).sum()
    }

    /// The keys with their positions, in order.
    pub(crate) fn positions(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.blocks.iter().enumerate().flat_map(|(index, block)| {
            let mut at = 0;
            std::iter::from_fn(move || {
                let (key, end) = key_in(block, at)?;
                let position = ((index as u64) << BLOCK_BITS) | at as u64;
                at = end;
                Some((position, key))
            })
        })
    }

    /// The key at `position`, as [`Keys::push_at`] or [`Keys::positions`] gave it.
    pub(crate) fn key_at(&self, position: u64) -> Option<&[u8]> {
        let block = self
            .blocks
            .get(usize::try_from(position >> BLOCK_BITS).ok()?)?;
        key_in(block, (position & (BLOCK as u64 - 1)) as usize).map(|(key, _)| key)
    }

    /// The `count` keys at the start of `bytes` (a log record's key array after its count),
    /// each 1..=`max_len` bytes; returns them and the bytes they took.
    pub(crate) fn from_wire(
        bytes: &[u8],
        count: usize,
        max_len: usize,
    ) -> Result<(Keys, usize), WireError> {
        let mut keys = Keys::new();
        let mut at = 0usize;
        for index in 0..count {
            let (key, end) = key_in(bytes, at).ok_or(WireError::Truncated { index, at })?;
            if key.is_empty() || key.len() > max_len {
                return Err(WireError::BadLength {
                    index,
                    at,
                    len: key.len(),
                });
            }
            keys.push_at(key);
            at = end;
        }
        keys.shrink_to_fit();
        Ok((keys, at))
    }
}

/// Why [`Keys::from_wire`] refused a key array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WireError {
    /// Key `index`, at byte `at`, runs past the end.
    Truncated { index: usize, at: usize },
    /// Key `index`, at byte `at`, has a length out of range.
    BadLength { index: usize, at: usize, len: usize },
}

/// The key whose length prefix is at byte `at` of `bytes`, and the offset just past it.
fn key_in(bytes: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let prefix: [u8; LEN_PREFIX] = bytes
        .get(at..at.checked_add(LEN_PREFIX)?)?
        .try_into()
        .ok()?;
    let start = at + LEN_PREFIX;
    let end = start.checked_add(u32::from_le_bytes(prefix) as usize)?;
    Some((bytes.get(start..end)?, end))
}

/// The keys of a [`Keys`], in order.
#[derive(Clone)]
pub struct KeysIter<'a> {
    blocks: std::slice::Iter<'a, Vec<u8>>,
    block: &'a [u8],
    left: usize,
}

impl<'a> Iterator for KeysIter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        while self.block.is_empty() {
            self.block = self.blocks.next()?;
        }
        let (key, end) = key_in(self.block, 0)?;
        self.block = self.block.get(end..).unwrap_or_default();
        self.left -= 1;
        Some(key)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for KeysIter<'_> {}

impl<'a> IntoIterator for &'a Keys {
    type Item = &'a [u8];
    type IntoIter = KeysIter<'a>;

    fn into_iter(self) -> KeysIter<'a> {
        self.iter()
    }
}

impl<K: AsRef<[u8]>> FromIterator<K> for Keys {
    fn from_iter<I: IntoIterator<Item = K>>(iter: I) -> Self {
        let mut keys = Keys::new();
        keys.extend(iter);
        keys
    }
}

impl<K: AsRef<[u8]>> Extend<K> for Keys {
    fn extend<I: IntoIterator<Item = K>>(&mut self, iter: I) {
        for key in iter {
            self.push(key);
        }
    }
}

impl From<Vec<Vec<u8>>> for Keys {
    fn from(keys: Vec<Vec<u8>>) -> Self {
        keys.into_iter().collect()
    }
}

impl PartialEq for Keys {
    fn eq(&self, other: &Keys) -> bool {
        self.count == other.count && self.iter().eq(other.iter())
    }
}

impl Eq for Keys {}

impl<K: AsRef<[u8]>> PartialEq<[K]> for Keys {
    fn eq(&self, other: &[K]) -> bool {
        self.len() == other.len() && self.iter().zip(other).all(|(a, b)| a == b.as_ref())
    }
}

impl<K: AsRef<[u8]>, const N: usize> PartialEq<[K; N]> for Keys {
    fn eq(&self, other: &[K; N]) -> bool {
        *self == other[..]
    }
}

impl<K: AsRef<[u8]>> PartialEq<Vec<K>> for Keys {
    fn eq(&self, other: &Vec<K>) -> bool {
        *self == other[..]
    }
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(String::from_utf8_lossy))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(keys: &Keys) -> Vec<u8> {
        keys.blocks().flatten().copied().collect()
    }

    #[test]
    fn keys_round_trip_through_the_wire_form() {
        let mut keys = Keys::new();
        let mut model = Vec::new();
        let mut positions = Vec::new();
        for i in 0..100_000u32 {
            let key = format!("key-{}", i.wrapping_mul(2_654_435_761)).repeat(1 + i as usize % 3);
            positions.push(keys.push_at(key.as_bytes()));
            model.push(key.into_bytes());
        }
        assert!(keys.blocks.len() > 2, "the keys span blocks");
        assert_eq!(keys.len(), model.len());
        assert_eq!(keys.to_vecs(), model);
        assert_eq!(keys, model);
        let listed: Vec<(u64, Vec<u8>)> = keys.positions().map(|(p, k)| (p, k.to_vec())).collect();
        let pushed: Vec<(u64, Vec<u8>)> = positions.iter().copied().zip(model.clone()).collect();
        assert_eq!(listed, pushed);
        for (position, key) in &pushed {
            assert_eq!(keys.key_at(*position), Some(key.as_slice()));
        }
        let mut bytes = wire(&keys);
        assert_eq!(bytes.len(), keys.held_bytes());
        bytes.extend_from_slice(b"tail");
        let (read, used) = Keys::from_wire(&bytes, keys.len(), 4096).unwrap();
        assert_eq!(read, keys);
        assert_eq!(used, bytes.len() - 4);
        assert_eq!(Keys::from(model.clone()), keys);
    }

    #[test]
    fn growth_leaves_at_most_one_block_unused() {
        let mut keys = Keys::new();
        for i in 0..200_000u32 {
            keys.push(format!("{i:044}"));
            // At most the block being filled, and the tail of each full block a key did not
            // fit in.
            let reserved: usize = keys.blocks.iter().map(Vec::capacity).sum();
            let tails = keys.blocks.len() * (LEN_PREFIX + 44);
            assert!(reserved <= keys.held_bytes() + BLOCK + tails, "{i}");
            assert!(keys.blocks.iter().all(|b| b.len() <= BLOCK));
        }
        keys.shrink_to_fit();
        let last = keys.blocks.last().unwrap();
        assert_eq!(last.capacity(), last.len());
        let reserved: usize = keys.blocks.iter().map(Vec::capacity).sum();
        assert!(reserved <= keys.held_bytes() + keys.blocks.len() * (LEN_PREFIX + 44));
    }

    #[test]
    fn a_key_longer_than_a_block_gets_one_of_its_own() {
        let long = vec![b'x'; BLOCK + 10];
        let keys: Keys = [&b"a"[..], &long, b"b"].into_iter().collect();
        assert_eq!(keys.to_vecs(), vec![b"a".to_vec(), long, b"b".to_vec()]);
        assert_eq!(keys.blocks.len(), 3);
    }

    #[test]
    fn a_shared_list_is_copied_before_a_push() {
        let mut a: Keys = ["x", "y"].into_iter().collect();
        let b = a.clone();
        a.push("z");
        assert_eq!(b, ["x", "y"]);
        assert_eq!(a, ["x", "y", "z"]);
    }

    #[test]
    fn damaged_wire_bytes_are_refused() {
        let keys: Keys = ["abc", "de"].into_iter().collect();
        let bytes = wire(&keys);
        for cut in 0..bytes.len() {
            assert!(
                Keys::from_wire(&bytes[..cut], 2, 4096).is_err(),
                "cut {cut}"
            );
        }
        let mut empty = bytes.clone();
        empty[..4].copy_from_slice(&0u32.to_le_bytes());
        assert!(matches!(
            Keys::from_wire(&empty, 2, 4096),
            Err(WireError::BadLength { index: 0, .. })
        ));
        assert!(matches!(
            Keys::from_wire(&bytes, 2, 2),
            Err(WireError::BadLength {
                index: 0,
                len: 3,
                ..
            })
        ));
        let mut huge = bytes;
        huge[7..11].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Keys::from_wire(&huge, 2, usize::MAX).is_err());
    }
}
