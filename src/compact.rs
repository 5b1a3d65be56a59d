//! Building tables: from a sorted key stream (bulk replace) and from a list's table merged
//! with its overlay (compaction).

use crate::entry::TableRef;
use crate::error::Result;
use crate::files::table_file_name;
use crate::io::Io;
use crate::overlay::Run;
use crate::snapshot::{ListState, LoadedTable};
use crate::table::{KindChoice, Table, TableBuilder, TableKind, Verification};
use std::path::Path;
use std::sync::Arc;

/// Writes table `file_id` in `dir` from strictly increasing keys. The caller has chosen the
/// kind (every key must be a hash key for [`TableKind::Hashed`]). Returns `None` and writes
/// nothing when there are no keys. The file is fsynced; the directory is not.
pub(crate) fn build_table<I>(
    io: &Io,
    dir: &Path,
    store_id: &[u8; 16],
    file_id: u64,
    kind: TableKind,
    expected_len: u64,
    keys: I,
) -> Result<Option<Arc<LoadedTable>>>
where
    I: IntoIterator<Item = Result<Vec<u8>>>,
{
    let mut keys = keys.into_iter().peekable();
    if keys.peek().is_none() {
        return Ok(None);
    }
    let path = dir.join(table_file_name(file_id));
    let result = (|| {
        let mut builder = TableBuilder::create(io, &path, store_id, kind, expected_len)?;
        for key in keys {
            builder.push(&key?)?;
        }
        let info = builder.finish()?;
        // This process just wrote and fsynced the file: the structure checks suffice.
        let table = Table::open(&path, store_id, &info, Verification::Structure)?;
        Ok(Arc::new(LoadedTable {
            table_ref: TableRef { file_id, info },
            table,
        }))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&path);
    }
    result.map(Some)
}

/// The kind of table a list's merged keys need (format-spec §5.6): its table's kind, or the
/// first added key's, while every key the overlay adds fits it; else fst.
fn merged_kind(list: &ListState, overlay: &Run) -> TableKind {
    let mut choice = KindChoice::starting_with(list.table.as_ref().map(|t| t.table.kind()));
    for (key, present) in overlay.iter() {
        if present && !choice.see(key) {
            break;
        }
    }
    choice.kind()
}

/// Builds the table that replaces `list`'s table and overlay: `(table ∪ added) \ removed`,
/// streamed in key order. `Ok(None)` when the list is empty.
pub(crate) fn compact_list(
    io: &Io,
    dir: &Path,
    store_id: &[u8; 16],
    file_id: u64,
    list: &ListState,
) -> Result<Option<Arc<LoadedTable>>> {
    let expected = list.len();
    let overlay = list.overlay.merged();
    build_table(
        io,
        dir,
        store_id,
        file_id,
        merged_kind(list, &overlay),
        expected,
        list.keys_with(overlay).map(Ok),
    )
}
