//! The keyspace as a transaction sees it: a snapshot of the store, plus the writes the
//! transaction has made so far. Every command runs against a view, so a read inside
//! `MULTI` sees the writes queued before it, and the net change becomes one [`Batch`].

use super::keyspace::Keyspace;
use crate::change::{Batch, List, SegmentChange};
use crate::error::Result;
use crate::snapshot::Snapshot;
use redis_protocol::bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// A snapshot and the changes made over it.
#[derive(Debug)]
pub struct View {
    snapshot: Arc<Snapshot>,
    /// The lock key's value before this view changed it.
    lock_before: Option<Bytes>,
    /// Set memberships changed here: (list, hash) → ref → membership in the snapshot, and now.
    sets: HashMap<(List, Bytes), BTreeMap<Arc<str>, Changed>>,
    /// The cursor key as this view left it: `Some(Some(v))` set, `Some(None)` deleted.
    cursor: Option<Option<String>>,
    /// Whether the cursor key exists holding `""` before this view (the store keeps an empty
    /// cursor as no cursor; the server remembers a `SET` of `""` while it runs).
    empty_cursor_before: bool,
    synchronized_on: Option<u64>,
    lock: Option<Option<Bytes>>,
    /// Redis keys modified here (what a `WATCH` on them must notice), in order, repeats
    /// allowed.
    touched: Vec<Bytes>,
}

/// One ref's membership of one set that a view changed: as the snapshot has it, and now. The
/// snapshot's answer is kept so the net change needs no second lookup.
#[derive(Debug, Clone, Copy)]
struct Changed {
    before: bool,
    now: bool,
}

/// A view's effect, once it is committed.
#[derive(Debug)]
pub struct Changes {
    /// The store write, if the view changed the store.
    pub batch: Option<Batch>,
    /// The lock key's new value, if the view set or deleted it.
    pub lock: Option<Option<Bytes>>,
    /// If the view set or deleted the cursor: whether the cursor key now exists holding `""`.
    pub empty_cursor: Option<bool>,
    /// The Redis keys modified.
    pub touched: Vec<Bytes>,
}

impl View {
    /// A view of `snapshot`, with the lock key holding `lock`; `empty_cursor` says whether
    /// an empty cursor is a key holding `""` (rather than no key).
    pub fn new(snapshot: Arc<Snapshot>, lock: Option<Bytes>, empty_cursor: bool) -> View {
        View {
            snapshot,
            empty_cursor_before: empty_cursor,
            lock_before: lock,
            sets: HashMap::new(),
            cursor: None,
            synchronized_on: None,
            lock: None,
            touched: Vec::new(),
        }
    }

    /// `synchronized_on`, if ever set.
    pub fn synchronized_on(&self) -> Option<u64> {
        self.synchronized_on
            .or_else(|| self.snapshot.metadata().synchronized_on)
    }

    /// The cursor key's value, `None` when the key does not exist.
    pub fn cursor(&self) -> Option<String> {
        match &self.cursor {
            Some(now) => now.clone(),
            None => {
                let cursor = self.snapshot.metadata().cursor;
                (!cursor.is_empty() || self.empty_cursor_before).then_some(cursor)
            }
        }
    }

    /// The lock key's value.
    pub fn lock(&self) -> Option<&Bytes> {
        match &self.lock {
            Some(now) => now.as_ref(),
            None => self.lock_before.as_ref(),
        }
    }

    /// The refs in one set, sorted. Lookups fail only on a store opened with
    /// `Verification::Structure` whose bytes turn out corrupt.
    pub fn members(&self, list: List, hash: &Bytes) -> Result<Vec<Arc<str>>> {
        let mut members = if crate::key::validate_key(hash).is_ok() {
            let mentions = self.snapshot.mentions(hash)?;
            match list {
                List::Included => mentions.included,
                List::Excluded => mentions.excluded,
            }
        } else {
            Vec::new()
        };
        if let Some(changed) = self.sets.get(&(list, hash.clone())) {
            members.retain(|m| changed.get(m).is_none_or(|c| c.now));
            for (member, c) in changed {
                if c.now && members.binary_search(member).is_err() {
                    members.push(member.clone());
                }
            }
            members.sort_unstable();
        }
        Ok(members)
    }

    /// Whether one set holds `member`.
    pub fn is_member(&self, list: List, hash: &Bytes, member: &str) -> Result<bool> {
        match self
            .sets
            .get(&(list, hash.clone()))
            .and_then(|changed| changed.get(member))
        {
            Some(c) => Ok(c.now),
            None => self.in_snapshot(list, hash, member),
        }
    }

    fn in_snapshot(&self, list: List, hash: &Bytes, member: &str) -> Result<bool> {
        if crate::key::validate_key(hash).is_err() {
            return Ok(false);
        }
        self.snapshot.contains(member, list, hash)
    }

    /// True when one set has a member.
    pub fn set_exists(&self, list: List, hash: &Bytes) -> Result<bool> {
        let untouched = !self.sets.contains_key(&(list, hash.clone()));
        if untouched {
            if crate::key::validate_key(hash).is_err() {
                return Ok(false);
            }
            let mentions = self.snapshot.mentions(hash)?;
            return Ok(match list {
                List::Included => !mentions.included.is_empty(),
                List::Excluded => !mentions.excluded.is_empty(),
            });
        }
        Ok(!self.members(list, hash)?.is_empty())
    }

    /// Adds (`member = true`) or removes refs from one set; returns how many changed, and
    /// notes the key as modified if any did. On an error the view is unchanged.
    pub fn update_set(
        &mut self,
        keys: &Keyspace,
        list: List,
        hash: &Bytes,
        refs: &[&str],
        member: bool,
    ) -> Result<i64> {
        // Every lookup first, so that a failed one changes nothing.
        let mut currents = Vec::with_capacity(refs.len());
        for r in refs {
            let known = self
                .sets
                .get(&(list, hash.clone()))
                .and_then(|set| set.get(*r))
                .copied();
            currents.push(match known {
                Some(c) => c,
                None => {
                    let before = self.in_snapshot(list, hash, r)?;
                    Changed {
                        before,
                        now: before,
                    }
                }
            });
        }
        let mut changed = 0;
        for (r, mut current) in refs.iter().zip(currents) {
            // A ref named twice: the first occurrence decided.
            if let Some(c) = self
                .sets
                .get(&(list, hash.clone()))
                .and_then(|set| set.get(*r))
            {
                current = *c;
            }
            if current.now != member {
                self.sets.entry((list, hash.clone())).or_default().insert(
                    Arc::from(*r),
                    Changed {
                        before: current.before,
                        now: member,
                    },
                );
                changed += 1;
            }
        }
        if changed > 0 {
            self.touched.push(keys.set_key(list, hash));
        }
        Ok(changed)
    }

    /// Empties one set; returns whether it had members.
    pub fn delete_set(&mut self, keys: &Keyspace, list: List, hash: &Bytes) -> Result<bool> {
        let members = self.members(list, hash)?;
        let refs: Vec<&str> = members.iter().map(|m| &**m).collect();
        Ok(self.update_set(keys, list, hash, &refs, false)? > 0)
    }

    /// Sets (`Some`) or deletes (`None`) the cursor.
    pub fn set_cursor(&mut self, key: Bytes, cursor: Option<String>) {
        self.cursor = Some(cursor);
        self.touched.push(key);
    }

    /// Sets `synchronized_on`.
    pub fn set_synchronized_on(&mut self, key: Bytes, unix_ms: u64) {
        self.synchronized_on = Some(unix_ms);
        self.touched.push(key);
    }

    /// Sets (`Some`) or deletes (`None`) the lock key.
    pub fn set_lock(&mut self, key: Bytes, value: Option<Bytes>) {
        self.lock = Some(value);
        self.touched.push(key);
    }

    /// The view's net effect on the store as one batch (none if it changed nothing there),
    /// with the lock and the keys touched.
    pub fn into_changes(self) -> Changes {
        let mut by_segment: BTreeMap<Arc<str>, SegmentChange> = BTreeMap::new();
        for ((list, hash), changed) in &self.sets {
            for (segment, c) in changed {
                if c.before == c.now {
                    continue;
                }
                let change = by_segment
                    .entry(segment.clone())
                    .or_insert_with(|| SegmentChange::new(&**segment));
                let list_change = change.list_mut(*list);
                if c.now {
                    list_change.add.push(hash);
                } else {
                    list_change.remove.push(hash);
                }
            }
        }
        let before = self.snapshot.metadata();
        // The store's cursor: a deleted key is the empty cursor.
        let new_cursor = self.cursor.clone().map(Option::unwrap_or_default);
        let cursor_changed = new_cursor.as_ref().is_some_and(|c| *c != before.cursor);
        let synced_changed = self
            .synchronized_on
            .is_some_and(|at| Some(at) != before.synchronized_on);
        let batch = if by_segment.is_empty() && !cursor_changed && !synced_changed {
            None
        } else {
            Some(Batch {
                changes: by_segment.into_values().collect(),
                expect_cursor: None,
                set_cursor: new_cursor.filter(|_| cursor_changed),
                synchronized_on: self.synchronized_on.filter(|_| synced_changed),
            })
        };
        Changes {
            batch,
            empty_cursor: self.cursor.as_ref().map(|now| now.as_deref() == Some("")),
            lock: self.lock,
            touched: self.touched,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Options, Store};

    #[test]
    fn a_view_layers_its_writes_over_the_snapshot_and_nets_them_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path(), Options::default()).unwrap();
        store
            .write(
                Batch::new()
                    .add("a.g1", List::Included, "h1")
                    .add("b.g1", List::Included, "h1")
                    .with_cursor("", "v1"),
            )
            .unwrap();
        let keys = Keyspace::new("ld");
        let h1 = Bytes::from("h1");
        let mut view = View::new(store.snapshot(), None, false);
        assert_eq!(
            view.members(List::Included, &h1).unwrap(),
            [Arc::<str>::from("a.g1"), Arc::from("b.g1")]
        );
        assert_eq!(
            view.update_set(&keys, List::Included, &h1, &["a.g1", "c.g1"], true)
                .unwrap(),
            1
        );
        assert_eq!(
            view.update_set(&keys, List::Included, &h1, &["b.g1", "zz.g1"], false)
                .unwrap(),
            1
        );
        assert_eq!(
            view.members(List::Included, &h1).unwrap(),
            [Arc::<str>::from("a.g1"), Arc::from("c.g1")]
        );
        // Added then removed again: no net change for that ref.
        view.update_set(&keys, List::Excluded, &h1, &["d.g1"], true)
            .unwrap();
        view.update_set(&keys, List::Excluded, &h1, &["d.g1"], false)
            .unwrap();
        assert!(!view.set_exists(List::Excluded, &h1).unwrap());
        view.set_cursor(Bytes::from("ld:big_segments_cursor"), Some("v1".into()));
        let changes = view.into_changes();
        let batch = changes.batch.unwrap();
        assert_eq!(batch.set_cursor, None, "the cursor did not change");
        let summary: Vec<_> = batch
            .changes
            .iter()
            .map(|c| {
                (
                    c.segment.as_str(),
                    c.included.add.len(),
                    c.included.remove.len(),
                    c.excluded.add.len() + c.excluded.remove.len(),
                )
            })
            .collect();
        assert_eq!(summary, [("b.g1", 0, 1, 0), ("c.g1", 1, 0, 0)]);
        assert_eq!(changes.touched.len(), 5, "four set writes and the cursor");
    }
}
