//! A snapshot's segments by ref: lookups by ref (every `check`), and ref order (listings,
//! ranges of refs, compaction).
//!
//! Two layers. The **base** is the manifest's segments, built once per manifest in bulk (a
//! sorted vector, which the manifest's order gives for free, and a hash index into it), so a
//! store of 100,000 segments opens without 100,000 inserts into a tree. The **changes** since
//! are a small persistent ordered map (a removal is `None`), so a snapshot still costs a
//! pointer copy and a write a path copy. A lookup asks the changes, then the base's hash
//! index: a few memory reads, where a search of an ordered map of 100,000 refs compares
//! about 18 of them, each behind a pointer.

use imbl::OrdMap;
use rustc_hash::FxHashMap;
use std::cmp::Ordering;
use std::iter::Peekable;
use std::sync::Arc;

/// The manifest's segments, in ref order, with a hash index.
#[derive(Debug)]
struct Base<V> {
    sorted: Vec<(Arc<str>, Arc<V>)>,
    /// Fx hashing: refs are short strings the store itself holds, and a SipHash of each of
    /// 100,000 refs was a fifth of an open.
    position: FxHashMap<Arc<str>, usize>,
}

impl<V> Default for Base<V> {
    fn default() -> Self {
        Base {
            sorted: Vec::new(),
            position: FxHashMap::default(),
        }
    }
}

/// Values by ref. Every change goes through this type.
#[derive(Debug, Clone)]
pub(crate) struct SegmentMap<V> {
    base: Arc<Base<V>>,
    /// Segments set (`Some`) or removed (`None`) since the base: these win over it.
    changed: OrdMap<Arc<str>, Option<Arc<V>>>,
    len: usize,
}

impl<V> Default for SegmentMap<V> {
    fn default() -> Self {
        SegmentMap {
            base: Arc::default(),
            changed: OrdMap::new(),
            len: 0,
        }
    }
}

impl<V: Clone> SegmentMap<V> {
    /// A map of `segments`, which must be in strictly increasing ref order (a manifest's
    /// records are, invariant M1); out-of-order or repeated refs are sorted and deduplicated
    /// (the last of a ref kept) rather than trusted.
    pub fn from_sorted(mut segments: Vec<(Arc<str>, Arc<V>)>) -> Self {
        if !segments.windows(2).all(|w| w[0].0 < w[1].0) {
            segments.reverse();
            segments.sort_by(|a, b| a.0.cmp(&b.0));
            segments.dedup_by(|later, first| later.0 == first.0);
        }
        let mut position = FxHashMap::with_capacity_and_hasher(segments.len(), Default::default());
        position.extend(
            segments
                .iter()
                .enumerate()
                .map(|(i, (name, _))| (name.clone(), i)),
        );
        let len = segments.len();
        SegmentMap {
            base: Arc::new(Base {
                sorted: segments,
                position,
            }),
            changed: OrdMap::new(),
            len,
        }
    }

    /// The value of `segment`.
    #[inline]
    pub fn get(&self, segment: &str) -> Option<&Arc<V>> {
        if !self.changed.is_empty() {
            if let Some(changed) = self.changed.get(segment) {
                return changed.as_ref();
            }
        }
        self.base_get(segment)
    }

    fn base_get(&self, segment: &str) -> Option<&Arc<V>> {
        let at = *self.base.position.get(segment)?;
        self.base.sorted.get(at).map(|(_, v)| v)
    }

    /// Whether `segment` is present.
    pub fn contains_key(&self, segment: &str) -> bool {
        self.get(segment).is_some()
    }

    /// The number of segments.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Every `(ref, value)`, in ref order.
    pub fn iter(&self) -> Iter<'_, V> {
        Iter {
            base: self.base.sorted.iter().peekable(),
            changed: (Box::new(self.changed.iter()) as ChangedIter<'_, V>).peekable(),
        }
    }

    /// Every value, in ref order.
    pub fn values(&self) -> impl Iterator<Item = &Arc<V>> {
        self.iter().map(|(_, v)| v)
    }

    /// The refs `>= from`, in ref order.
    pub fn refs_from(&self, from: Arc<str>) -> impl Iterator<Item = &Arc<str>> {
        let start = self.base.sorted.partition_point(|(name, _)| *name < from);
        Iter {
            base: self
                .base
                .sorted
                .get(start..)
                .unwrap_or_default()
                .iter()
                .peekable(),
            changed: (Box::new(self.changed.range(from..)) as ChangedIter<'_, V>).peekable(),
        }
        .map(|(name, _)| name)
    }

    /// Sets `segment` to `value`.
    pub fn insert(&mut self, segment: Arc<str>, value: Arc<V>) {
        if self.get(&segment).is_none() {
            self.len += 1;
        }
        self.changed.insert(segment, Some(value));
    }

    /// Removes `segment`.
    pub fn remove(&mut self, segment: &str) {
        if self.get(segment).is_some() {
            self.len -= 1;
            if self.base.position.contains_key(segment) {
                self.changed.insert(Arc::from(segment), None);
            } else {
                self.changed.remove(segment);
            }
        }
    }

    /// Changes `segment`'s value in place (copying it first if an older snapshot or the base
    /// shares it), creating it with `create` if missing.
    pub fn update<R>(
        &mut self,
        segment: &str,
        create: impl FnOnce() -> V,
        change: impl FnOnce(&mut V) -> R,
    ) -> R {
        let (name, mut value) = self.take(segment).unwrap_or_else(|| {
            self.len += 1;
            (Arc::from(segment), Arc::new(create()))
        });
        let result = change(Arc::make_mut(&mut value));
        self.changed.insert(name, Some(value));
        result
    }

    /// As [`update`](SegmentMap::update), for a segment that exists; `None` (and no change)
    /// if it does not.
    pub fn update_existing<R>(
        &mut self,
        segment: &str,
        change: impl FnOnce(&mut V) -> R,
    ) -> Option<R> {
        let (name, mut value) = self.take(segment)?;
        let result = change(Arc::make_mut(&mut value));
        self.changed.insert(name, Some(value));
        Some(result)
    }

    /// The segment's name and value, out of the changes (so that a value only this map
    /// holds is changed in place), or copied from the base; `None` if absent.
    fn take(&mut self, segment: &str) -> Option<(Arc<str>, Arc<V>)> {
        match self.changed.remove_with_key(segment) {
            Some((name, Some(value))) => Some((name, value)),
            Some((name, None)) => {
                // Removed: put the removal back.
                self.changed.insert(name, None);
                None
            }
            None => {
                let at = *self.base.position.get(segment)?;
                self.base
                    .sorted
                    .get(at)
                    .map(|(name, value)| (name.clone(), value.clone()))
            }
        }
    }
}

type ChangedIter<'a, V> = Box<dyn Iterator<Item = (&'a Arc<str>, &'a Option<Arc<V>>)> + 'a>;

/// `(ref, value)` in ref order: the base and the changes merged, the changes winning.
pub(crate) struct Iter<'a, V> {
    base: Peekable<std::slice::Iter<'a, (Arc<str>, Arc<V>)>>,
    changed: Peekable<ChangedIter<'a, V>>,
}

impl<'a, V> Iterator for Iter<'a, V> {
    type Item = (&'a Arc<str>, &'a Arc<V>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let order = match (self.base.peek(), self.changed.peek()) {
                (None, None) => return None,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some((b, _)), Some((c, _))) => b.cmp(c),
            };
            let changed = match order {
                Ordering::Less => {
                    let (name, value) = self.base.next()?;
                    return Some((name, value));
                }
                Ordering::Equal => {
                    self.base.next();
                    self.changed.next()?
                }
                Ordering::Greater => self.changed.next()?,
            };
            if let (name, Some(value)) = changed {
                return Some((name, value));
            }
            // A removal: nothing to yield for this ref.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u32),
        Remove(u8),
        Add(u8, u32),
        AddExisting(u8, u32),
        Snapshot,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..20, any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            (0u8..20).prop_map(Op::Remove),
            (0u8..20, 0u32..100).prop_map(|(k, v)| Op::Add(k, v)),
            (0u8..20, 0u32..100).prop_map(|(k, v)| Op::AddExisting(k, v)),
            Just(Op::Snapshot),
        ]
    }

    fn check(map: &SegmentMap<u64>, model: &BTreeMap<String, u64>) {
        assert_eq!(map.len(), model.len());
        let ordered: Vec<(String, u64)> = map.iter().map(|(k, v)| (k.to_string(), **v)).collect();
        let want: Vec<(String, u64)> = model.iter().map(|(k, v)| (k.clone(), *v)).collect();
        assert_eq!(ordered, want);
        for (k, v) in model {
            assert_eq!(map.get(k).map(|v| **v), Some(*v));
        }
        assert_eq!(map.get("absent"), None);
        for from in ["", "s1", "s15", "s9", "t"] {
            let got: Vec<String> = map
                .refs_from(Arc::from(from))
                .map(|k| k.to_string())
                .collect();
            let want: Vec<String> = model
                .range(from.to_owned()..)
                .map(|(k, _)| k.clone())
                .collect();
            assert_eq!(got, want, "refs from {from:?}");
        }
        let values: Vec<u64> = map.values().map(|v| **v).collect();
        assert_eq!(values, model.values().copied().collect::<Vec<_>>());
    }

    proptest! {
        /// Both orders always hold what a plain ordered map would, and older copies never
        /// change.
        #[test]
        fn matches_an_ordered_map(initial in 0u8..20, ops in prop::collection::vec(op(), 0..200)) {
            // Half the cases start from a built map, as a snapshot of a manifest does.
            let start: Vec<(Arc<str>, Arc<u64>)> = (0..initial).map(|k| (Arc::from(format!("s{k}")), Arc::new(u64::from(k)))).collect();
            let mut model: BTreeMap<String, u64> = (0..initial).map(|k| (format!("s{k}"), u64::from(k))).collect();
            let mut map: SegmentMap<u64> = if initial == 0 { SegmentMap::default() } else { SegmentMap::from_sorted(start) };
            check(&map, &model);
            let mut kept: Vec<(SegmentMap<u64>, BTreeMap<String, u64>)> = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        map.insert(Arc::from(format!("s{k}")), Arc::new(u64::from(v)));
                        model.insert(format!("s{k}"), u64::from(v));
                    }
                    Op::Remove(k) => {
                        map.remove(&format!("s{k}"));
                        model.remove(&format!("s{k}"));
                    }
                    Op::Add(k, v) => {
                        let got = map.update(&format!("s{k}"), || 0, |x| { *x += u64::from(v); *x });
                        let m = model.entry(format!("s{k}")).or_insert(0);
                        *m += u64::from(v);
                        prop_assert_eq!(got, *m);
                    }
                    Op::AddExisting(k, v) => {
                        let got = map.update_existing(&format!("s{k}"), |x| { *x += u64::from(v); *x });
                        let want = model.get_mut(&format!("s{k}")).map(|m| { *m += u64::from(v); *m });
                        prop_assert_eq!(got, want);
                    }
                    Op::Snapshot => kept.push((map.clone(), model.clone())),
                }
                check(&map, &model);
            }
            for (map, model) in &kept {
                check(map, model);
            }
        }
    }
}
