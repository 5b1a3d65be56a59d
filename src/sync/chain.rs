//! The cursor rules for LaunchDarkly patches, as batches: which patches chain, and how a run
//! of chained patches becomes cursor-guarded [`Batch`]es.
//!
//! A patch applies only when its `previousVersion` equals the stored cursor, and leaves the
//! cursor at its `version`. A run of patches *chains* when each patch's `previousVersion`
//! equals the `version` of the patch before it; such a run can then be written as one batch
//! guarded by the first patch's `previousVersion` and advancing the cursor to the last patch's
//! `version`, which is exactly what applying the patches one by one would do.

use crate::change::{Batch, Patch};

/// Two neighbouring patches of one event that do not chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "patch {position} of the event expects previous version {expected:?}, but patch {} leaves \
     the cursor at {found:?}",
    position - 1
)]
pub struct BrokenChain {
    /// 1-based position, within the event, of the patch that does not chain (always ≥ 2).
    pub position: usize,
    /// That patch's `previousVersion`.
    pub expected: String,
    /// The `version` of the patch before it.
    pub found: String,
}

/// Checks that `patches` chain: each patch's `previousVersion` equals the `version` of the
/// patch before it. The first patch is not checked here: the store checks it against the
/// stored cursor when the batch is written.
pub fn check_chain(patches: &[Patch]) -> Result<(), BrokenChain> {
    for (i, pair) in patches.windows(2).enumerate() {
        if let [before, after] = pair {
            if after.previous_version != before.version {
                return Err(BrokenChain {
                    position: i + 2,
                    expected: after.previous_version.clone(),
                    found: before.version.clone(),
                });
            }
        }
    }
    Ok(())
}

/// How many leading patches apply, one after another, to a store whose cursor is `cursor`.
/// The patch after them (if any) is the first whose `previousVersion` does not match.
pub fn applicable_prefix(cursor: &str, patches: &[Patch]) -> usize {
    let mut at = cursor;
    for (i, patch) in patches.iter().enumerate() {
        if patch.previous_version != at {
            return i;
        }
        at = &patch.version;
    }
    patches.len()
}

/// Turns one event's patches into cursor-guarded batches, after checking that they chain.
///
/// Normally the result is **one** batch: guarded by the first patch's `previousVersion`,
/// advancing the cursor to the last patch's `version`, carrying `synchronized_on`. An event
/// with more than `max_ops` key operations is cut at patch boundaries into several batches, each
/// guarded by the cursor the previous one leaves (so no patch is ever half-applied, and a crash
/// between two of them leaves the cursor at a patch boundary); `synchronized_on` then goes on
/// the last one only. An empty event gives no batch.
pub fn event_batches(
    patches: Vec<Patch>,
    max_ops: usize,
    synchronized_on: Option<u64>,
) -> Result<Vec<Batch>, BrokenChain> {
    check_chain(&patches)?;
    let mut batches: Vec<Batch> = Vec::new();
    let mut open: Option<Batch> = None;
    let mut open_ops = 0usize;
    for patch in patches {
        let ops = patch.change.op_count();
        if open.is_some() && open_ops.saturating_add(ops) > max_ops {
            batches.extend(open.take());
            open_ops = 0;
        }
        let batch = open.get_or_insert_with(|| Batch {
            expect_cursor: Some(patch.previous_version.clone()),
            ..Batch::default()
        });
        batch.set_cursor = Some(patch.version);
        batch.changes.push(patch.change);
        open_ops = open_ops.saturating_add(ops);
    }
    batches.extend(open);
    if let Some(last) = batches.last_mut() {
        last.synchronized_on = synchronized_on;
    }
    Ok(batches)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::SegmentChange;

    fn patch(prev: &str, version: &str, adds: usize) -> Patch {
        let mut change = SegmentChange::new("seg.g1");
        change.included.add = (0..adds).map(|i| format!("k{i}").into_bytes()).collect();
        Patch {
            change,
            version: version.to_owned(),
            previous_version: prev.to_owned(),
        }
    }

    #[test]
    fn a_chained_event_is_one_guarded_batch() {
        let patches = vec![
            patch("", "v1", 2),
            patch("v1", "v1", 1),
            patch("v1", "v2", 3),
        ];
        let batches = event_batches(patches, usize::MAX, Some(7)).unwrap();
        assert_eq!(batches.len(), 1);
        let batch = &batches[0];
        assert_eq!(batch.expect_cursor.as_deref(), Some(""));
        assert_eq!(batch.set_cursor.as_deref(), Some("v2"));
        assert_eq!(batch.synchronized_on, Some(7));
        assert_eq!(batch.changes.len(), 3);
        assert_eq!(batch.op_count(), 6);
    }

    #[test]
    fn a_broken_chain_names_the_patch() {
        let patches = vec![
            patch("", "v1", 1),
            patch("v1", "v2", 1),
            patch("v9", "v3", 1),
        ];
        let err = event_batches(patches, usize::MAX, None).unwrap_err();
        assert_eq!(
            err,
            BrokenChain {
                position: 3,
                expected: "v9".into(),
                found: "v2".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "patch 3 of the event expects previous version \"v9\", but patch 2 leaves the cursor at \"v2\""
        );
    }

    #[test]
    fn a_large_event_is_cut_at_patch_boundaries() {
        let patches = vec![patch("a", "b", 3), patch("b", "c", 3), patch("c", "d", 3)];
        let batches = event_batches(patches, 5, Some(1)).unwrap();
        let guards: Vec<_> = batches
            .iter()
            .map(|b| {
                (
                    b.expect_cursor.clone().unwrap(),
                    b.set_cursor.clone().unwrap(),
                    b.synchronized_on,
                )
            })
            .collect();
        assert_eq!(
            guards,
            vec![
                ("a".into(), "b".into(), None),
                ("b".into(), "c".into(), None),
                ("c".into(), "d".into(), Some(1))
            ]
        );
        // A single patch over the budget still goes whole.
        let batches = event_batches(vec![patch("", "x", 9)], 5, None).unwrap();
        assert_eq!(batches.len(), 1);
        assert!(event_batches(Vec::new(), 5, None).unwrap().is_empty());
    }

    #[test]
    fn the_applicable_prefix_stops_at_the_first_mismatch() {
        let page = vec![patch("", "", 1), patch("", "", 1), patch("", "v1", 1)];
        assert_eq!(applicable_prefix("", &page), 3);
        assert_eq!(applicable_prefix("v0", &page), 0);
        let page = vec![
            patch("v1", "v2", 1),
            patch("zz", "v3", 1),
            patch("v3", "v4", 1),
        ];
        assert_eq!(applicable_prefix("v1", &page), 1);
    }
}
