//! A list's changes since its table was built, held as immutable sorted runs.
//!
//! Each write that changes a list adds one [`Run`]: the keys it changed, sorted, each with
//! whether the list holds the key afterwards. A lookup asks the runs newest first; the first
//! run that names the key decides, and a key no run names is answered by the table. Runs are
//! never modified, so a new snapshot shares every run of the last one and a write costs its
//! own keys plus an occasional merge: when the newest run grows to half the size of the one
//! before it, the two merge (newer entries win), which keeps the run count logarithmic in the
//! overlay's size and copies each key a logarithmic number of times.
//!
//! Point lookups do not binary search: each run carries an open-addressed hash index of
//! 8-byte slots (a 32-bit tag and the entry's position), so a key a run does not name costs
//! one slot read, and one that it names one slot plus the key's bytes.

use crate::error::Result;
use crate::keys::Keys;
use std::cmp::Ordering;
use std::sync::Arc;
use xxhash_rust::xxh3::xxh3_64;

/// Marks an empty hash slot.
const EMPTY: u32 = u32::MAX;

/// Runs larger than this are searched by bisection instead of a hash index (slot positions
/// are 32-bit). Four billion overlay keys is far beyond any practical overlay.
const MAX_INDEXED: usize = (u32::MAX / 4) as usize;

/// The hash a lookup computes once and uses against every run.
#[derive(Clone, Copy)]
pub(crate) struct KeyHash(u64);

impl KeyHash {
    pub fn of(key: &[u8]) -> Self {
        KeyHash(xxh3_64(key))
    }

    fn tag(self) -> u32 {
        (self.0 >> 32) as u32
    }

    fn home(self, mask: usize) -> usize {
        (self.0 as usize) & mask
    }
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    tag: u32,
    entry: u32,
}

const EMPTY_SLOT: Slot = Slot {
    tag: 0,
    entry: EMPTY,
};

/// Bit of an entry word: the list holds the key after the run (added), or not (removed).
const PRESENT: u64 = 1 << 63;
/// Bit of an entry word: which of the run's key buffers holds the key.
const SOURCE: u64 = 1 << 62;
/// Bits of an entry word: the key's position in its list.
const POSITION: u64 = SOURCE - 1;

/// One immutable run: keys in strictly increasing byte order, each with whether the list
/// holds it after the writes the run covers.
///
/// The keys stay where the write's [`Keys`] put them: a run built from a change points into
/// its add and remove buffers (shared with the change, and with the log entry), so a write of
/// a million keys holds their bytes once. A merged run packs its keys into a buffer of its own.
#[derive(Debug, Default)]
pub(crate) struct Run {
    /// The lists the keys live in: a change's add and remove lists, or one list of the run's
    /// own.
    sources: [Keys; 2],
    /// One word per entry, in key order: [`PRESENT`], [`SOURCE`] and the key's position.
    entries: Vec<u64>,
    /// Open-addressed hash index, a power of two at most half full; empty when the run is
    /// not indexed (bisection is used instead).
    slots: Vec<Slot>,
}

/// An entry's key, read from the run's buffers.
fn key_of(sources: &[Keys; 2], word: u64) -> Option<&[u8]> {
    sources
        .get(usize::from(word & SOURCE != 0))?
        .key_at(word & POSITION)
}

impl Run {
    /// The run one change makes: `add`, then `remove`, sorted, of each key only what the list
    /// holds after the change, and of those only the keys `changes` says the change changes
    /// (it is asked in key order with the key and whether the list holds it afterwards).
    /// The work space is 8 bytes an operation, and the run keeps it.
    pub fn from_change(
        add: &Keys,
        remove: &Keys,
        mut changes: impl FnMut(&[u8], bool) -> Result<bool>,
    ) -> Result<Run> {
        let sources = [add.clone(), remove.clone()];
        let mut entries: Vec<u64> = Vec::with_capacity(add.len() + remove.len());
        for (source, flags) in [(add, PRESENT), (remove, SOURCE)] {
            entries.extend(source.positions().map(|(at, _)| flags | (at & POSITION)));
        }
        // Sorted by key and, for a key named more than once, adds before removes (adds apply
        // first); of each key only the last is kept.
        entries.sort_unstable_by(|&a, &b| {
            key_of(&sources, a)
                .cmp(&key_of(&sources, b))
                .then((b & PRESENT).cmp(&(a & PRESENT)))
        });
        let mut kept = 0usize;
        let mut i = 0usize;
        while let Some(&first) = entries.get(i) {
            let key = key_of(&sources, first);
            let mut last = first;
            i += 1;
            while let Some(&next) = entries.get(i) {
                if key_of(&sources, next) != key {
                    break;
                }
                last = next;
                i += 1;
            }
            let Some(key) = key else { continue };
            if changes(key, last & PRESENT != 0)? {
                if let Some(slot) = entries.get_mut(kept) {
                    *slot = last;
                }
                kept += 1;
            }
        }
        entries.truncate(kept);
        entries.shrink_to_fit();
        let mut run = Run {
            sources,
            entries,
            slots: Vec::new(),
        };
        // A run outlives its write: when it keeps under half the bytes of the buffers it
        // points into (a sync resending keys the list already holds), it copies its keys out
        // rather than keep the buffers alive.
        let held: usize = run.sources.iter().map(Keys::held_bytes).sum();
        if run.key_bytes() < held / 2 {
            run = run.packed();
        }
        run.build_index();
        Ok(run)
    }

    /// Builds a run from entries in strictly increasing key order.
    #[cfg(test)]
    pub fn from_sorted(entries: &[(&[u8], bool)]) -> Self {
        let mut run = Run::packing(entries.len());
        for &(key, present) in entries {
            run.push(key, present);
        }
        run.build_index();
        run
    }

    /// An empty run whose keys will be packed into a buffer of its own.
    fn packing(entries: usize) -> Self {
        Run {
            entries: Vec::with_capacity(entries),
            ..Run::default()
        }
    }

    /// Bytes the run's keys take in a buffer, length prefixes included.
    fn key_bytes(&self) -> usize {
        self.iter().map(|(key, _)| 4 + key.len()).sum()
    }

    /// The same entries, their keys copied into a list of the run's own (not indexed).
    fn packed(&self) -> Run {
        let mut run = Run::packing(self.len());
        for (key, present) in self.iter() {
            run.push(key, present);
        }
        run.sources[0].shrink_to_fit();
        run
    }

    /// Appends an entry, its key copied into the run's own list.
    fn push(&mut self, key: &[u8], present: bool) {
        debug_assert!(self.last_key().is_none_or(|last| last < key));
        let at = self.sources[0].push_at(key);
        self.entries
            .push(if present { PRESENT } else { 0 } | (at & POSITION));
    }

    fn last_key(&self) -> Option<&[u8]> {
        self.len().checked_sub(1).and_then(|i| self.key(i))
    }

    fn build_index(&mut self) {
        let len = self.len();
        if len == 0 || len > MAX_INDEXED {
            self.slots = Vec::new();
            return;
        }
        let capacity = (len * 2).next_power_of_two();
        let mask = capacity - 1;
        let mut slots = vec![EMPTY_SLOT; capacity];
        for entry in 0..len {
            let Some(key) = self.key(entry) else { continue };
            let hash = KeyHash::of(key);
            let mut at = hash.home(mask);
            // At most half the slots are used, so an empty one is always found.
            while let Some(slot) = slots.get_mut(at) {
                if slot.entry == EMPTY {
                    *slot = Slot {
                        tag: hash.tag(),
                        entry: entry as u32,
                    };
                    break;
                }
                at = (at + 1) & mask;
            }
        }
        self.slots = slots;
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Entry `i`'s key.
    fn key(&self, i: usize) -> Option<&[u8]> {
        key_of(&self.sources, *self.entries.get(i)?)
    }

    /// Entry `i`: key and presence.
    pub fn entry(&self, i: usize) -> Option<(&[u8], bool)> {
        let word = *self.entries.get(i)?;
        Some((key_of(&self.sources, word)?, word & PRESENT != 0))
    }

    /// Entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], bool)> {
        (0..self.len()).filter_map(|i| self.entry(i))
    }

    /// Whether the list holds `key` according to this run, or `None` if the run does not
    /// name it.
    pub fn lookup(&self, key: &[u8], hash: KeyHash) -> Option<bool> {
        if self.slots.is_empty() {
            return self.bisect(key);
        }
        let mask = self.slots.len() - 1;
        let mut at = hash.home(mask);
        loop {
            let slot = self.slots.get(at)?;
            if slot.entry == EMPTY {
                return None;
            }
            if slot.tag == hash.tag() {
                let (found, present) = self.entry(slot.entry as usize)?;
                if found == key {
                    return Some(present);
                }
            }
            at = (at + 1) & mask;
        }
    }

    fn bisect(&self, key: &[u8]) -> Option<bool> {
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let mid = low + (high - low) / 2;
            let (found, present) = self.entry(mid)?;
            match found.cmp(key) {
                Ordering::Less => low = mid + 1,
                Ordering::Greater => high = mid,
                Ordering::Equal => return Some(present),
            }
        }
        None
    }

    /// The run holding `older`'s entries overridden by `newer`'s, its keys packed into one
    /// buffer of its own.
    fn merge(older: &Run, newer: &Run, index: bool) -> Run {
        let mut run = Run::packing(older.len() + newer.len());
        let mut a = older.iter().peekable();
        let mut b = newer.iter().peekable();
        loop {
            let next = match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some(_), None) => a.next(),
                (None, Some(_)) => b.next(),
                (Some(x), Some(y)) => match x.0.cmp(y.0) {
                    Ordering::Less => a.next(),
                    Ordering::Greater => b.next(),
                    Ordering::Equal => {
                        a.next();
                        b.next()
                    }
                },
            };
            if let Some((key, present)) = next {
                run.push(key, present);
            }
        }
        run.sources[0].shrink_to_fit();
        if index {
            run.build_index();
        }
        run
    }
}

/// A list's overlay: runs oldest first.
#[derive(Debug, Clone, Default)]
pub(crate) struct Overlay {
    runs: Vec<Arc<Run>>,
}

impl Overlay {
    /// True if no write changed the list since its table was built.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Whether the list holds `key` according to the overlay, or `None` to ask the table.
    pub fn lookup(&self, key: &[u8]) -> Option<bool> {
        if self.runs.is_empty() {
            return None;
        }
        self.lookup_hashed(key, KeyHash::of(key))
    }

    /// As [`lookup`](Overlay::lookup), with the key's hash computed once by the caller (who
    /// asks many lists about one key).
    pub fn lookup_hashed(&self, key: &[u8], hash: KeyHash) -> Option<bool> {
        self.runs.iter().rev().find_map(|run| run.lookup(key, hash))
    }

    /// Adds the newest run, merging runs so that each is more than twice the size of the
    /// next newer one.
    pub fn push(&mut self, run: Run) {
        if run.len() == 0 {
            return;
        }
        self.runs.push(Arc::new(run));
        while let [.., older, newer] = self.runs.as_slice() {
            if older.len() > 2 * newer.len() {
                break;
            }
            let merged = Arc::new(Run::merge(older, newer, true));
            self.runs.truncate(self.runs.len() - 2);
            self.runs.push(merged);
        }
    }

    /// Entries held across all runs (a key named by several runs counts once per run): the
    /// memory the overlay takes, in keys.
    pub fn entries(&self) -> u64 {
        self.runs.iter().map(|r| r.len() as u64).sum()
    }

    /// All runs merged into one, newest entries winning: the overlay's net effect in key
    /// order.
    pub fn merged(&self) -> Arc<Run> {
        let mut runs = self.runs.iter();
        let Some(first) = runs.next() else {
            return Arc::new(Run::default());
        };
        let mut merged = first.clone();
        for run in runs {
            merged = Arc::new(Run::merge(&merged, run, false));
        }
        merged
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn run_of(entries: &BTreeMap<Vec<u8>, bool>) -> Run {
        let entries: Vec<(&[u8], bool)> = entries.iter().map(|(k, p)| (k.as_slice(), *p)).collect();
        Run::from_sorted(&entries)
    }

    #[test]
    fn lookups_follow_the_newest_run() {
        let mut overlay = Overlay::default();
        let mut model: BTreeMap<Vec<u8>, bool> = BTreeMap::new();
        // Writes of varying sizes, each flipping some keys; every key 0..600 is checked
        // against the model after each write, through the index and through the merge.
        let mut state = 12345u64;
        for write in 0..200u64 {
            let mut batch = BTreeMap::new();
            for _ in 0..(1 + write % 37) {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let key = format!("k{}", (state >> 33) % 600).into_bytes();
                let present = (state >> 20) & 1 == 1;
                batch.insert(key, present);
            }
            for (k, p) in &batch {
                model.insert(k.clone(), *p);
            }
            overlay.push(run_of(&batch));
            assert!(overlay.runs.len() <= 2 + (overlay.entries() as f64).log2() as usize);
            for i in 0..600 {
                let key = format!("k{i}").into_bytes();
                assert_eq!(overlay.lookup(&key), model.get(&key).copied(), "key {i}");
            }
        }
        let merged = overlay.merged();
        let all: Vec<(Vec<u8>, bool)> = merged.iter().map(|(k, p)| (k.to_vec(), p)).collect();
        let expected: Vec<(Vec<u8>, bool)> = model.into_iter().collect();
        assert_eq!(all, expected);
    }

    #[test]
    fn unindexed_runs_bisect() {
        let entries: BTreeMap<Vec<u8>, bool> = (0..100u32)
            .map(|i| (format!("{i:04}").into_bytes(), i % 3 == 0))
            .collect();
        let mut run = run_of(&entries);
        run.slots = Vec::new();
        for i in 0..120u32 {
            let key = format!("{i:04}").into_bytes();
            let expected = (i < 100).then_some(i % 3 == 0);
            assert_eq!(run.lookup(&key, KeyHash::of(&key)), expected);
        }
    }

    #[test]
    fn empty_runs_are_not_kept() {
        let mut overlay = Overlay::default();
        overlay.push(Run::from_sorted(&[]));
        assert!(overlay.is_empty());
        assert_eq!(overlay.lookup(b"x"), None);
        assert_eq!(overlay.merged().len(), 0);
    }
}
