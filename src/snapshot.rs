//! An immutable view of the store: tables plus the log's overlay, as of one write.
//!
//! A [`Snapshot`] never changes. The writer makes a new one per write (sharing structure with
//! the last through persistent collections) and publishes it with a pointer swap, so a reader
//! holding one is never blocked and never sees half a write.

use crate::change::{List, SegmentChange};
use crate::entry::{Details, Entry, TableRef};
use crate::error::{Error, Result};
use crate::index::MembershipIndex;
use crate::keys::Keys;
use crate::overlay::{KeyHash, Overlay, Run};
use crate::segment_map::SegmentMap;
use crate::table::Table;
use imbl::{OrdMap, OrdSet};
use std::sync::Arc;

/// The default context kind.
pub const DEFAULT_KIND: &str = "user";

/// A table file in use, with the id that names it.
#[derive(Debug)]
pub(crate) struct LoadedTable {
    pub table_ref: TableRef,
    pub table: Table,
}

/// One list: a base table plus the overlay of keys added and removed since it was built.
///
/// `added` counts keys the list holds that the table does not, `removed` table keys the list
/// no longer holds; both are kept as writes apply, so the list's size is
/// `table + added - removed` without walking the overlay.
#[derive(Debug, Clone, Default)]
pub(crate) struct ListState {
    pub table: Option<Arc<LoadedTable>>,
    pub overlay: Overlay,
    added: u64,
    removed: u64,
}

impl ListState {
    /// A list holding exactly `table`'s keys.
    pub fn from_table(table: Option<Arc<LoadedTable>>) -> Self {
        ListState {
            table,
            ..ListState::default()
        }
    }

    fn table_contains(&self, key: &[u8]) -> Result<bool> {
        match &self.table {
            Some(t) => t.table.contains(key),
            None => Ok(false),
        }
    }

    /// True if the list holds `key` (an error only from a table opened with
    /// `Verification::Structure` whose bytes turn out corrupt).
    pub fn contains(&self, key: &[u8]) -> Result<bool> {
        match self.overlay.lookup(key) {
            Some(present) => Ok(present),
            None => self.table_contains(key),
        }
    }

    /// Applies one change to this list: `add`, then `remove`, as one new overlay run. On an
    /// error the list is unchanged.
    fn apply(&mut self, add: &Keys, remove: &Keys) -> Result<()> {
        if add.is_empty() && remove.is_empty() {
            return Ok(());
        }
        // Keep the keys whose state changes, counting what the table does not say.
        let (mut added, mut removed) = (self.added, self.removed);
        let run = Run::from_change(add, remove, |key, wanted| {
            let in_table = self.table_contains(key)?;
            let present = self.overlay.lookup(key).unwrap_or(in_table);
            if present == wanted {
                return Ok(false);
            }
            match (wanted, in_table) {
                (true, true) => removed = removed.saturating_sub(1),
                (true, false) => added += 1,
                (false, true) => removed += 1,
                (false, false) => added = added.saturating_sub(1),
            }
            Ok(true)
        })?;
        self.overlay.push(run);
        (self.added, self.removed) = (added, removed);
        Ok(())
    }

    /// Number of keys in the list.
    pub fn len(&self) -> u64 {
        let base = self.table.as_ref().map_or(0, |t| t.table.len());
        (base + self.added).saturating_sub(self.removed)
    }

    /// True if the overlay changes nothing.
    pub fn overlay_is_empty(&self) -> bool {
        self.overlay.is_empty()
    }

    /// Keys in byte order.
    pub fn keys(&self) -> Result<ListKeys<'_>> {
        self.keys_with(self.overlay.merged())
    }

    /// Keys in byte order, given the overlay already merged into one run.
    pub fn keys_with(&self, merged: Arc<Run>) -> Result<ListKeys<'_>> {
        let table = match &self.table {
            Some(t) => Some(t.table.keys()?.peekable()),
            None => None,
        };
        Ok(ListKeys {
            table,
            overlay: merged,
            next: 0,
        })
    }
}

/// Keys of one list in byte order: the table's keys merged with the overlay.
pub struct ListKeys<'a> {
    table: Option<std::iter::Peekable<crate::table::TableKeys<'a>>>,
    /// The overlay's net effect, and the position of its next entry.
    overlay: Arc<Run>,
    next: usize,
}

impl Iterator for ListKeys<'_> {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        loop {
            let from_table = match self.table.as_mut() {
                Some(t) => t.peek().map(Vec::as_slice),
                None => None,
            };
            let from_overlay = self.overlay.entry(self.next);
            let order = match (from_table, from_overlay) {
                (None, None) => return None,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(t), Some((o, _))) => t.cmp(o),
            };
            // The table's key when it comes first; the overlay's entry (which decides) when
            // it comes first or names the same key.
            if order == std::cmp::Ordering::Less {
                return self.table.as_mut().and_then(Iterator::next);
            }
            if order == std::cmp::Ordering::Equal {
                if let Some(t) = self.table.as_mut() {
                    t.next();
                }
            }
            self.next += 1;
            if let Some((key, true)) = from_overlay {
                return Some(key.to_vec());
            }
        }
    }
}

/// One segment's state.
#[derive(Debug, Clone)]
pub(crate) struct SegmentState {
    pub kind: Arc<str>,
    pub details: Details,
    pub lists: [ListState; 2],
}

impl SegmentState {
    fn new(kind: &str) -> Self {
        SegmentState {
            kind: Arc::from(kind),
            details: Details::default(),
            lists: Default::default(),
        }
    }

    fn list_mut(&mut self, list: List) -> &mut ListState {
        match list {
            List::Included => &mut self.lists[0],
            List::Excluded => &mut self.lists[1],
        }
    }

    pub fn list(&self, list: List) -> &ListState {
        match list {
            List::Included => &self.lists[0],
            List::Excluded => &self.lists[1],
        }
    }
}

/// What `check` answers for one segment and key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// The key is in the included list (whatever the excluded list says).
    Included,
    /// The key is in the excluded list only.
    Excluded,
    /// Neither list holds the key, or the segment does not exist.
    Unknown,
}

impl Status {
    /// `included`, `excluded` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Included => "included",
            Status::Excluded => "excluded",
            Status::Unknown => "unknown",
        }
    }
}

/// The segments that mention a key: `true` if included, `false` if excluded only. Sorted by
/// segment ref; immutable and cheap to share across threads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    entries: Vec<(Arc<str>, bool)>,
}

impl Membership {
    /// `(segment ref, included)` pairs in ref order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, bool)> {
        self.entries.iter().map(|(s, b)| (&**s, *b))
    }

    /// The answer for one segment, or `None` if the key is in neither of its lists.
    pub fn get(&self, segment: &str) -> Option<bool> {
        self.entries
            .binary_search_by(|(s, _)| (**s).cmp(segment))
            .ok()
            .and_then(|i| self.entries.get(i))
            .map(|(_, b)| *b)
    }

    /// Number of segments that mention the key.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True for a key no segment mentions.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The refs of the segments whose lists hold one key, each list apart, each sorted: what
/// [`Snapshot::mentions`] answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mentions {
    /// Segments whose included list holds the key.
    pub included: Vec<Arc<str>>,
    /// Segments whose excluded list holds the key (whether or not their included list does).
    pub excluded: Vec<Arc<str>>,
}

/// The sync metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// Unix ms of the last successful sync; `None` if the store was never synced.
    pub synchronized_on: Option<u64>,
    /// The sync cursor (`""` before the first patch).
    pub cursor: String,
}

/// A segment's description, as [`Snapshot::segments`] lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SegmentInfo {
    /// Ref.
    pub segment: String,
    /// Context kind.
    pub kind: String,
    /// Local details.
    pub details: Details,
    /// Keys in the included list.
    pub included: u64,
    /// Keys in the excluded list.
    pub excluded: u64,
}

/// The membership index as a snapshot uses it: the index, and the segment ref and the hashed
/// tables (included, excluded) of each ordinal it names: the tables it was built from.
#[derive(Debug)]
pub(crate) struct IndexState {
    pub index: MembershipIndex,
    pub ordinals: Vec<Arc<str>>,
    pub tables: Vec<[Option<Arc<LoadedTable>>; 2]>,
}

/// An immutable view of the whole store at one point in its history.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub(crate) segments: SegmentMap<SegmentState>,
    /// The membership index of the manifest this snapshot stands on, if any.
    pub(crate) index: Option<Arc<IndexState>>,
    /// Lists the index does not answer for: held in fst tables, or whose table changed (a
    /// bulk replace, a delete, a create) since the index was built. `membership` probes
    /// these one by one.
    pub(crate) probe: OrdSet<(Arc<str>, List)>,
    /// Lists whose table is still the one the index was built from, changed since only by
    /// batches: the index answers for the table, and `membership` asks only their overlays
    /// (a hash probe of a small run each) for what the batches changed.
    /// Each holds a copy of the list's overlay (shared runs), kept current by every batch, so
    /// that `membership` reads them in one pass without looking the segments up.
    pub(crate) overlaid: OrdMap<(Arc<str>, List), Overlay>,
    /// How many lists of `probe` and `overlaid` are there because they changed since the
    /// index was built (what automatic compaction counts).
    pub(crate) changed_since_index: usize,
    pub(crate) cursor: String,
    pub(crate) synchronized_on: Option<u64>,
    /// Sequence number of the last record applied (0 before any).
    pub(crate) last_seq: u64,
}

impl Snapshot {
    /// Answers "is `key` in `segment`?": included beats excluded; an unknown segment or key
    /// is [`Status::Unknown`].
    ///
    /// # Errors
    ///
    /// Lookups fail only in a store opened with `Verification::Structure`, when the bytes a
    /// lookup reads for the first time do not match their checksums ([`Error::Corrupt`]): no
    /// answer comes from unchecked bytes. With the default `Checksum` every table was checked
    /// whole at open, and lookups never fail.
    ///
    /// ```
    /// use segstore::{Batch, List, Options, Status, Store};
    /// let dir = tempfile::tempdir()?;
    /// let store = Store::create(dir.path(), Options::default())?;
    /// store.write(Batch::new().add("beta.g1", List::Included, "user-1"))?;
    /// assert_eq!(store.snapshot().check("beta.g1", b"user-1")?, Status::Included);
    /// assert_eq!(store.snapshot().check("beta.g1", b"user-2")?, Status::Unknown);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn check(&self, segment: &str, key: &[u8]) -> Result<Status> {
        let Some(state) = self.segments.get(segment) else {
            return Ok(Status::Unknown);
        };
        Ok(if state.lists[0].contains(key)? {
            Status::Included
        } else if state.lists[1].contains(key)? {
            Status::Excluded
        } else {
            Status::Unknown
        })
    }

    /// Whether `list` of `segment` holds `key` (false for an unknown segment). Unlike
    /// [`check`](Snapshot::check), the two lists are asked separately. Fails as `check` does.
    pub fn contains(&self, segment: &str, list: List, key: &[u8]) -> Result<bool> {
        match self.segments.get(segment) {
            Some(state) => state.list(list).contains(key),
            None => Ok(false),
        }
    }

    /// Every segment that mentions `key`. An unknown key is an empty membership.
    ///
    /// With a membership index (built at compaction over the hashed tables) this is one
    /// index probe plus a probe of each list the index does not answer for; without one it
    /// probes every segment. Fails as [`check`](Snapshot::check) does.
    pub fn membership(&self, key: &[u8]) -> Result<Membership> {
        let mut found = self.lists_holding(key)?;
        // Sort by ref, included first, and keep the first of each ref: included beats excluded.
        found.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        found.dedup_by(|later, first| later.0 == first.0);
        Ok(Membership { entries: found })
    }

    /// The lists that hold `key`, each list apart: the refs of the segments whose included
    /// list holds it, and those whose excluded list holds it (a segment may be in both). This
    /// is the raw view that a Redis-layout reader sees as two sets; [`membership`] applies the
    /// contract's "included beats excluded" on top of it. Fails as [`check`](Snapshot::check)
    /// does.
    ///
    /// ```
    /// use segstore::{Batch, List, Options, Store};
    /// let dir = tempfile::tempdir()?;
    /// let store = Store::create(dir.path(), Options::default())?;
    /// store.write(
    ///     Batch::new()
    ///         .add("a.g1", List::Included, "k")
    ///         .add("a.g1", List::Excluded, "k")
    ///         .add("b.g1", List::Excluded, "k"),
    /// )?;
    /// let mentions = store.snapshot().mentions(b"k")?;
    /// assert_eq!(mentions.included, ["a.g1".into()]);
    /// assert_eq!(mentions.excluded, ["a.g1".into(), "b.g1".into()]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// [`membership`]: Snapshot::membership
    pub fn mentions(&self, key: &[u8]) -> Result<Mentions> {
        let mut mentions = Mentions::default();
        for (segment, included) in self.lists_holding(key)? {
            if included {
                mentions.included.push(segment);
            } else {
                mentions.excluded.push(segment);
            }
        }
        mentions.included.sort_unstable();
        mentions.included.dedup();
        mentions.excluded.sort_unstable();
        mentions.excluded.dedup();
        Ok(mentions)
    }

    /// `(segment, included)` for every list holding `key`, unordered; a segment appears once
    /// per list that holds the key.
    fn lists_holding(&self, key: &[u8]) -> Result<Vec<(Arc<str>, bool)>> {
        let mut found: Vec<(Arc<str>, bool)> = Vec::new();
        let Some(index) = &self.index else {
            for (segment, state) in self.segments.iter() {
                for list in List::BOTH {
                    if state.list(list).contains(key)? {
                        found.push((segment.clone(), list == List::Included));
                    }
                }
            }
            return Ok(found);
        };
        let hash = (!self.overlaid.is_empty()).then(|| KeyHash::of(key));
        // Only hash keys are in hashed tables: for any other key the index has nothing.
        if let Some(code) = crate::table::code::encode(key) {
            let confirm = index.index.needs_confirming();
            index.index.for_each_candidate(&code, |ordinal, list| {
                let Some(segment) = index.ordinals.get(ordinal as usize) else {
                    return Ok(());
                };
                if !self.probe.is_empty() || hash.is_some() {
                    let entry = (segment.clone(), list);
                    if self.probe.contains(&entry) {
                        return Ok(());
                    }
                    // The table holds the key; a batch since may have removed it.
                    let removed = hash
                        .zip(self.overlaid.get(&entry))
                        .is_some_and(|(hash, o)| o.lookup_hashed(key, hash) == Some(false));
                    if removed {
                        return Ok(());
                    }
                }
                if confirm {
                    // A filter index's tag can match a key the list lacks: ask the table.
                    let table = index
                        .tables
                        .get(ordinal as usize)
                        .and_then(|t| t.get(list.index()))
                        .and_then(Option::as_ref);
                    match table {
                        Some(t) if t.table.contains_code(&code)? => {}
                        _ => return Ok(()),
                    }
                }
                found.push((segment.clone(), list == List::Included));
                Ok(())
            })?;
        }
        for (segment, list) in &self.probe {
            if let Some(state) = self.segments.get(segment) {
                if state.list(*list).contains(key)? {
                    found.push((segment.clone(), *list == List::Included));
                }
            }
        }
        if let Some(hash) = hash {
            // Keys a batch added to a list whose table (the index says) lacks them; those its
            // table holds were answered above, and a repeat is removed by the callers.
            for ((segment, list), overlay) in &self.overlaid {
                if overlay.lookup_hashed(key, hash) == Some(true) {
                    found.push((segment.clone(), *list == List::Included));
                }
            }
        }
        Ok(found)
    }

    /// The sync metadata.
    pub fn metadata(&self) -> Metadata {
        Metadata {
            synchronized_on: self.synchronized_on,
            cursor: self.cursor.clone(),
        }
    }

    /// The number of segments (without building [`segments`](Snapshot::segments)' list).
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Every segment, in ref order, with its counts.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.segments
            .iter()
            .map(|(segment, state)| info(segment, state))
            .collect()
    }

    /// The refs `{key}.g{N}` (N decimal) of the segments of one key, in ref order: the
    /// generations of one segment key. Other refs that start the same are left out.
    pub fn generations(&self, key: &str) -> Vec<String> {
        let from: Arc<str> = Arc::from(format!("{key}.g"));
        self.segments
            .refs_from(from.clone())
            .take_while(|segment| segment.starts_with(&*from))
            .filter(|segment| {
                let digits = &segment[from.len()..];
                !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
            })
            .map(|segment| segment.to_string())
            .collect()
    }

    /// One segment, or `None`.
    pub fn segment(&self, segment: &str) -> Option<SegmentInfo> {
        self.segments.get(segment).map(|s| info(segment, s))
    }

    /// The keys of one list in byte order.
    pub fn export(&self, segment: &str, list: List) -> Result<ListKeys<'_>> {
        let state = self
            .segments
            .get(segment)
            .ok_or_else(|| Error::UnknownSegment(segment.to_owned()))?;
        state.list(list).keys()
    }

    /// Sequence number of the last write this snapshot includes.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Keys held in overlays across all lists (a key changed by writes far apart may be held
    /// more than once until the overlay merges): the memory the log's effect takes until the
    /// next compaction.
    pub fn overlay_keys(&self) -> u64 {
        self.segments
            .values()
            .flat_map(|s| s.lists.iter())
            .map(|l| l.overlay.entries())
            .sum()
    }

    /// Applies one log entry. `resolve` opens the table a `ReplaceList` names.
    pub(crate) fn apply(
        &mut self,
        seq: u64,
        entry: &Entry,
        resolve: &mut dyn FnMut(&TableRef) -> Result<Arc<LoadedTable>>,
    ) -> Result<()> {
        match entry {
            Entry::Write {
                changes,
                set_cursor,
                synchronized_on,
            } => {
                for change in changes {
                    self.apply_change(change)?;
                }
                if let Some(cursor) = set_cursor {
                    self.cursor.clone_from(cursor);
                }
                if let Some(at) = synchronized_on {
                    self.synchronized_on = Some(*at);
                }
            }
            Entry::CreateSegment { segment, kind } => {
                self.mark_changed(segment, List::BOTH);
                self.segments.insert(
                    Arc::from(segment.as_str()),
                    Arc::new(SegmentState::new(kind)),
                );
            }
            Entry::DeleteSegment { segment } => {
                self.mark_changed(segment, List::BOTH);
                self.segments.remove(segment.as_str());
            }
            Entry::SetDetails { segment, details } => {
                self.segments
                    .update_existing(segment, |state| state.details = details.clone());
            }
            Entry::ReplaceList {
                segment,
                kind,
                list,
                table,
            } => {
                let loaded = match table {
                    Some(t) => Some(resolve(t)?),
                    None => None,
                };
                self.mark_changed(segment, [*list]);
                self.update_segment(segment, kind, None, |state| {
                    *state.list_mut(*list) = ListState::from_table(loaded);
                });
            }
            Entry::Rotate { .. } => {}
        }
        self.last_seq = seq;
        Ok(())
    }

    /// Notes that lists of `segment` may no longer hold the tables the membership index was
    /// built from (their tables were replaced, or the segment deleted or created).
    fn mark_changed<const N: usize>(&mut self, segment: &str, lists: [List; N]) {
        if self.index.is_none() {
            return;
        }
        for list in lists {
            let entry = (Arc::from(segment), list);
            let counted = self.overlaid.remove(&entry).is_some();
            if self.probe.insert(entry).is_none() && !counted {
                self.changed_since_index += 1;
            }
        }
    }

    /// Notes that a batch changed `list` of `segment`: its table is untouched, so unless it is
    /// probed anyway, the index keeps answering for the table and its overlay for the rest.
    fn mark_overlaid(&mut self, segment: &str, list: List) {
        if self.index.is_none() {
            return;
        }
        let entry = (Arc::from(segment), list);
        if self.probe.contains(&entry) {
            return;
        }
        if self.overlaid.insert(entry, Overlay::default()).is_none() {
            self.changed_since_index += 1;
        }
    }

    /// Refreshes the copies of `segment`'s overlays in `overlaid` after a batch changed them.
    fn refresh_overlaid(&mut self, segment: &str) {
        if self.overlaid.is_empty() {
            return;
        }
        let Some(state) = self.segments.get(segment) else {
            return;
        };
        for list in List::BOTH {
            let entry = (Arc::from(segment), list);
            if let Some(copy) = self.overlaid.get_mut(&entry) {
                *copy = state.list(list).overlay.clone();
            }
        }
    }

    fn apply_change(&mut self, change: &SegmentChange) -> Result<()> {
        let kind = change.kind.as_deref().unwrap_or(DEFAULT_KIND);
        for list in List::BOTH {
            if !change.list(list).is_empty() {
                self.mark_overlaid(&change.segment, list);
            }
        }
        let mut result = Ok(());
        self.update_segment(&change.segment, kind, change.name.as_deref(), |state| {
            for list in List::BOTH {
                let lc = change.list(list);
                if result.is_ok() {
                    result = state.list_mut(list).apply(&lc.add, &lc.remove);
                }
            }
        });
        self.refresh_overlaid(&change.segment);
        result
    }

    /// Changes the segment's state, creating it (with `kind` and `name`) if missing.
    fn update_segment(
        &mut self,
        segment: &str,
        kind: &str,
        name: Option<&str>,
        change: impl FnOnce(&mut SegmentState),
    ) {
        let create = || {
            let mut state = SegmentState::new(kind);
            state.details.name = name.map(str::to_owned);
            state
        };
        self.segments.update(segment, create, change);
    }
}

fn info(segment: &str, state: &SegmentState) -> SegmentInfo {
    SegmentInfo {
        segment: segment.to_owned(),
        kind: state.kind.to_string(),
        details: state.details.clone(),
        included: state.lists[0].len(),
        excluded: state.lists[1].len(),
    }
}
