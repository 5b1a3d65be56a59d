//! What a write says: changes to segments, grouped into atomic batches.

use crate::keys::Keys;
use serde::{Deserialize, Serialize};

/// One of a segment's two key lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum List {
    /// Keys in the segment.
    Included,
    /// Keys explicitly out of the segment (included beats excluded).
    Excluded,
}

impl List {
    /// Both lists, included first.
    pub const BOTH: [List; 2] = [List::Included, List::Excluded];

    /// 0 for included, 1 for excluded.
    pub fn index(self) -> usize {
        match self {
            List::Included => 0,
            List::Excluded => 1,
        }
    }

    /// The lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            List::Included => "included",
            List::Excluded => "excluded",
        }
    }
}

/// Keys to add to and remove from one list. Within one change, adds apply first and removes
/// second, so a key named in both ends up **removed**.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListChange {
    /// Keys to add.
    pub add: Keys,
    /// Keys to remove.
    pub remove: Keys,
}

impl ListChange {
    /// True when the change names no key.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

/// A change to one segment, as a sync feed sends it. A change to a ref the store does not know
/// creates the segment (with `kind`, default `user`, and `name` as its initial name); for an
/// existing segment `kind` and `name` are ignored: a sync never overwrites details.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentChange {
    /// The segment ref, e.g. `beta-users.g3`.
    pub segment: String,
    /// Context kind for a segment this change creates.
    pub kind: Option<String>,
    /// Name for a segment this change creates.
    pub name: Option<String>,
    /// Changes to the included list.
    pub included: ListChange,
    /// Changes to the excluded list.
    pub excluded: ListChange,
}

impl SegmentChange {
    /// An empty change to `segment`.
    pub fn new(segment: impl Into<String>) -> Self {
        SegmentChange {
            segment: segment.into(),
            ..Default::default()
        }
    }

    /// The change for `list`.
    pub fn list_mut(&mut self, list: List) -> &mut ListChange {
        match list {
            List::Included => &mut self.included,
            List::Excluded => &mut self.excluded,
        }
    }

    /// The change for `list`.
    pub fn list(&self, list: List) -> &ListChange {
        match list {
            List::Included => &self.included,
            List::Excluded => &self.excluded,
        }
    }

    /// Number of key operations in the change.
    pub fn op_count(&self) -> usize {
        self.included.add.len()
            + self.included.remove.len()
            + self.excluded.add.len()
            + self.excluded.remove.len()
    }
}

/// A LaunchDarkly big-segment patch: one segment's changes guarded by the sync cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patch {
    /// The segment's changes (`segment` is the ref, `segmentId` in the feed).
    pub change: SegmentChange,
    /// The cursor this patch moves the store to.
    pub version: String,
    /// The cursor the store must be at for the patch to apply (`""` for none).
    pub previous_version: String,
}

/// An atomic, durable write: all of it applies or none does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// Segment changes, applied in order.
    pub changes: Vec<SegmentChange>,
    /// If set, the write applies only when the stored cursor equals this.
    pub expect_cursor: Option<String>,
    /// If set, the stored cursor becomes this.
    pub set_cursor: Option<String>,
    /// If set, `synchronized_on` (Unix ms) becomes this.
    pub synchronized_on: Option<u64>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Batch::default()
    }

    /// Adds a segment change.
    pub fn change(mut self, change: SegmentChange) -> Self {
        self.changes.push(change);
        self
    }

    /// Adds `key` to `list` of `segment`. Calls apply in the order made: an add after a
    /// remove in the same list starts a new change, since within one change removes apply
    /// after adds.
    pub fn add(mut self, segment: &str, list: List, key: impl AsRef<[u8]>) -> Self {
        let after_remove = self
            .changes
            .last()
            .is_some_and(|c| c.segment == segment && !c.list(list).remove.is_empty());
        if after_remove {
            self.changes.push(SegmentChange::new(segment));
        }
        self.change_for(segment).list_mut(list).add.push(key);
        self
    }

    /// Removes `key` from `list` of `segment`.
    pub fn remove(mut self, segment: &str, list: List, key: impl AsRef<[u8]>) -> Self {
        self.change_for(segment).list_mut(list).remove.push(key);
        self
    }

    /// Guards the batch on the cursor and advances it: the LaunchDarkly patch rule.
    pub fn with_cursor(mut self, previous: impl Into<String>, next: impl Into<String>) -> Self {
        self.expect_cursor = Some(previous.into());
        self.set_cursor = Some(next.into());
        self
    }

    /// Sets `synchronized_on` in the same step.
    pub fn synchronized_on(mut self, unix_ms: u64) -> Self {
        self.synchronized_on = Some(unix_ms);
        self
    }

    /// Total key operations.
    pub fn op_count(&self) -> usize {
        self.changes.iter().map(SegmentChange::op_count).sum()
    }

    fn change_for(&mut self, segment: &str) -> &mut SegmentChange {
        let found = self.changes.last().is_some_and(|c| c.segment == segment);
        if !found {
            self.changes.push(SegmentChange::new(segment));
        }
        match self.changes.last_mut() {
            Some(change) => change,
            None => unreachable!("a change was pushed above"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_calls_keep_their_order() {
        let b = Batch::new()
            .remove("s", List::Included, "k")
            .add("s", List::Included, "k")
            .add("s", List::Included, "j")
            .remove("s", List::Excluded, "x");
        assert_eq!(b.changes.len(), 2, "{b:?}");
        assert_eq!(b.changes[0].included.remove, vec![b"k".to_vec()]);
        assert_eq!(
            b.changes[1].included.add,
            vec![b"k".to_vec(), b"j".to_vec()]
        );
        assert_eq!(b.changes[1].excluded.remove, vec![b"x".to_vec()]);
        let merged = Batch::new()
            .add("s", List::Included, "a")
            .remove("s", List::Included, "b")
            .add("s", List::Excluded, "c");
        assert_eq!(merged.changes.len(), 1);
        assert_eq!(merged.op_count(), 3);
    }
}
