//! Log entries: the operations a log record carries, and their byte encoding.
//!
//! One record holds one entry, and one entry is one atomic write. The layout of each entry is
//! in `format-spec.md` ("Log entries").

use crate::change::{List, ListChange, SegmentChange};
use crate::codec::{DecodeError, Decoder, Encoder};
use crate::key::{MAX_KEY_LEN, MAX_NAME_LEN};
use crate::keys::{Keys, WireError};
use crate::table::{TableInfo, TableKind};

/// Longest description accepted, in bytes.
pub const MAX_DESCRIPTION_LEN: usize = 64 * 1024;
/// Most tags a segment may carry.
pub const MAX_TAGS: usize = 256;

/// A segment's locally edited details. A sync never overwrites them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Details {
    /// Display name.
    pub name: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// Tags, in the order given.
    pub tags: Vec<String>,
}

/// A reference from the manifest or the log to a table file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableRef {
    /// The file's id: the file is `t-{id:016x}.sstbl`.
    pub file_id: u64,
    /// Where the table starts in that file: 0 for a file of its own, else the table is one of
    /// a pack's (format-spec §5.9).
    pub offset: u64,
    /// What the file must be.
    pub info: TableInfo,
}

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A batch of segment changes (creating segments it names), with its cursor and
    /// `synchronized_on` updates.
    Write {
        /// Changes, in order.
        changes: Vec<SegmentChange>,
        /// New cursor, if the batch set one.
        set_cursor: Option<String>,
        /// New `synchronized_on`, if the batch set one.
        synchronized_on: Option<u64>,
    },
    /// Creates an empty segment.
    CreateSegment {
        /// Ref.
        segment: String,
        /// Context kind.
        kind: String,
    },
    /// Deletes a segment and both its lists.
    DeleteSegment {
        /// Ref.
        segment: String,
    },
    /// Replaces a segment's details.
    SetDetails {
        /// Ref.
        segment: String,
        /// The new details, whole.
        details: Details,
    },
    /// Makes one list exactly the keys of a table (or empty), creating the segment if needed.
    ReplaceList {
        /// Ref.
        segment: String,
        /// Context kind, used if the segment is created.
        kind: String,
        /// Which list.
        list: List,
        /// The table, or none for an empty list.
        table: Option<TableRef>,
    },
    /// The log continues in log file `next_log`; nothing follows this entry in this file.
    Rotate {
        /// Number of the next log file.
        next_log: u64,
    },
}

const TAG_WRITE: u8 = 1;
const TAG_CREATE: u8 = 2;
const TAG_DELETE: u8 = 3;
const TAG_DETAILS: u8 = 4;
const TAG_REPLACE: u8 = 5;
const TAG_ROTATE: u8 = 6;

impl Entry {
    /// Encodes the entry (the payload of one log record), allocated once at its size.
    pub fn encode(&self) -> Vec<u8> {
        let mut counter = Encoder::counting();
        self.encode_into(&mut counter);
        let mut e = Encoder::with_capacity(counter.len());
        self.encode_into(&mut e);
        e.into_bytes()
    }

    /// Writes the entry's encoding to `e` (a counting encoder measures it; a gathering one
    /// refers to large key arrays rather than copy them).
    pub fn encode_into<'a>(&'a self, e: &mut Encoder<'a>) {
        match self {
            Entry::Write {
                changes,
                set_cursor,
                synchronized_on,
            } => {
                e.u8(TAG_WRITE);
                e.opt_str(set_cursor.as_deref());
                e.opt_u64(*synchronized_on);
                e.u32(len_u32(changes.len()));
                for change in changes {
                    e.str(&change.segment);
                    e.opt_str(change.kind.as_deref());
                    e.opt_str(change.name.as_deref());
                    for list in List::BOTH {
                        let lc = change.list(list);
                        encode_keys(e, &lc.add);
                        encode_keys(e, &lc.remove);
                    }
                }
            }
            Entry::CreateSegment { segment, kind } => {
                e.u8(TAG_CREATE);
                e.str(segment);
                e.str(kind);
            }
            Entry::DeleteSegment { segment } => {
                e.u8(TAG_DELETE);
                e.str(segment);
            }
            Entry::SetDetails { segment, details } => {
                e.u8(TAG_DETAILS);
                e.str(segment);
                encode_details(e, details);
            }
            Entry::ReplaceList {
                segment,
                kind,
                list,
                table,
            } => {
                e.u8(TAG_REPLACE);
                e.str(segment);
                e.str(kind);
                e.u8(list_code(*list));
                encode_opt_table(e, table.as_ref());
            }
            Entry::Rotate { next_log } => {
                e.u8(TAG_ROTATE);
                e.u64(*next_log);
            }
        }
    }

    /// Decodes an entry; every byte must be used.
    pub fn decode(bytes: &[u8]) -> Result<Entry, DecodeError> {
        let mut d = Decoder::new(bytes);
        let entry = match d.u8()? {
            TAG_WRITE => {
                let set_cursor = d.opt_str(MAX_NAME_LEN)?.map(str::to_owned);
                let synchronized_on = d.opt_u64()?;
                let count = d.u32()? as usize;
                let mut changes = Vec::with_capacity(count.min(d.remaining()));
                for _ in 0..count {
                    let mut change = SegmentChange::new(d.str(MAX_NAME_LEN)?);
                    change.kind = d.opt_str(MAX_NAME_LEN)?.map(str::to_owned);
                    change.name = d.opt_str(MAX_NAME_LEN)?.map(str::to_owned);
                    for list in List::BOTH {
                        let add = decode_keys(&mut d)?;
                        let remove = decode_keys(&mut d)?;
                        *change.list_mut(list) = ListChange { add, remove };
                    }
                    changes.push(change);
                }
                Entry::Write {
                    changes,
                    set_cursor,
                    synchronized_on,
                }
            }
            TAG_CREATE => Entry::CreateSegment {
                segment: d.str(MAX_NAME_LEN)?.to_owned(),
                kind: d.str(MAX_NAME_LEN)?.to_owned(),
            },
            TAG_DELETE => Entry::DeleteSegment {
                segment: d.str(MAX_NAME_LEN)?.to_owned(),
            },
            TAG_DETAILS => Entry::SetDetails {
                segment: d.str(MAX_NAME_LEN)?.to_owned(),
                details: decode_details(&mut d)?,
            },
            TAG_REPLACE => Entry::ReplaceList {
                segment: d.str(MAX_NAME_LEN)?.to_owned(),
                kind: d.str(MAX_NAME_LEN)?.to_owned(),
                list: decode_list(&mut d)?,
                table: decode_opt_table(&mut d)?,
            },
            TAG_ROTATE => Entry::Rotate { next_log: d.u64()? },
            other => {
                return Err(DecodeError {
                    offset: 0,
                    detail: format!("unknown entry tag {other}"),
                })
            }
        };
        d.finish()?;
        Ok(entry)
    }
}

fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn encode_keys<'a>(e: &mut Encoder<'a>, keys: &'a Keys) {
    e.u32(len_u32(keys.len()));
    for block in keys.blocks() {
        e.shared(block);
    }
}

fn decode_keys(d: &mut Decoder<'_>) -> Result<Keys, DecodeError> {
    let count = d.u32()? as usize;
    let start = d.position();
    match Keys::from_wire(d.rest(), count, MAX_KEY_LEN) {
        Ok((keys, used)) => {
            d.raw(used)?;
            Ok(keys)
        }
        Err(WireError::Truncated { index, at }) => Err(DecodeError {
            offset: start + at,
            detail: format!("key {index} of {count} runs past the end"),
        }),
        Err(WireError::BadLength { at, len: 0, .. }) => Err(DecodeError {
            offset: start + at,
            detail: "empty key".into(),
        }),
        Err(WireError::BadLength { index, at, len }) => Err(DecodeError {
            offset: start + at,
            detail: format!("key {index} is {len} bytes, the limit is {MAX_KEY_LEN}"),
        }),
    }
}

/// Encodes details (shared with the manifest).
pub(crate) fn encode_details(e: &mut Encoder, details: &Details) {
    e.opt_str(details.name.as_deref());
    e.opt_str(details.description.as_deref());
    e.u32(len_u32(details.tags.len()));
    for tag in &details.tags {
        e.str(tag);
    }
}

/// Decodes details (shared with the manifest).
pub(crate) fn decode_details(d: &mut Decoder<'_>) -> Result<Details, DecodeError> {
    let name = d.opt_str(MAX_NAME_LEN)?.map(str::to_owned);
    let description = d.opt_str(MAX_DESCRIPTION_LEN)?.map(str::to_owned);
    let count = d.u32()? as usize;
    if count > MAX_TAGS {
        return Err(d.error(format!("{count} tags, the limit is {MAX_TAGS}")));
    }
    let mut tags = Vec::with_capacity(count);
    for _ in 0..count {
        tags.push(d.str(MAX_NAME_LEN)?.to_owned());
    }
    Ok(Details {
        name,
        description,
        tags,
    })
}

pub(crate) fn list_code(list: List) -> u8 {
    list.index() as u8
}

pub(crate) fn decode_list(d: &mut Decoder<'_>) -> Result<List, DecodeError> {
    match d.u8()? {
        0 => Ok(List::Included),
        1 => Ok(List::Excluded),
        other => Err(d.error(format!("list code {other} is neither 0 nor 1"))),
    }
}

/// Encodes an optional table reference (shared with the manifest).
pub(crate) fn encode_opt_table(e: &mut Encoder, table: Option<&TableRef>) {
    match table {
        None => e.u8(0),
        Some(t) => {
            e.u8(if t.offset == 0 { 1 } else { 2 });
            e.u64(t.file_id);
            if t.offset != 0 {
                e.u64(t.offset);
            }
            e.u8(t.info.kind as u8);
            e.u64(t.info.key_count);
            e.u64(t.info.file_len);
            e.u64(t.info.checksum);
        }
    }
}

/// Decodes an optional table reference (shared with the manifest).
pub(crate) fn decode_opt_table(d: &mut Decoder<'_>) -> Result<Option<TableRef>, DecodeError> {
    match d.u8()? {
        0 => Ok(None),
        presence @ (1 | 2) => {
            let file_id = d.u64()?;
            let offset = if presence == 2 {
                let offset = d.u64()?;
                if offset == 0 {
                    return Err(d.error("a table in a pack at offset 0"));
                }
                offset
            } else {
                0
            };
            let kind_code = d.u8()?;
            let kind = TableKind::from_u8(kind_code)
                .ok_or_else(|| d.error(format!("unknown table kind {kind_code}")))?;
            Ok(Some(TableRef {
                file_id,
                offset,
                info: TableInfo {
                    kind,
                    key_count: d.u64()?,
                    file_len: d.u64()?,
                    checksum: d.u64()?,
                },
            }))
        }
        other => Err(d.error(format!("table presence byte {other} is not 0, 1 or 2"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Entry> {
        let mut change = SegmentChange::new("beta.g1");
        change.kind = Some("org".into());
        change.included.add = ["a", "b"].into_iter().collect();
        change.excluded.remove = ["z"].into_iter().collect();
        vec![
            Entry::Write {
                changes: vec![change, SegmentChange::new("other.g2")],
                set_cursor: Some("v7".into()),
                synchronized_on: Some(1_700_000_000_000),
            },
            Entry::CreateSegment {
                segment: "s.g1".into(),
                kind: "user".into(),
            },
            Entry::DeleteSegment {
                segment: "s.g1".into(),
            },
            Entry::SetDetails {
                segment: "s.g1".into(),
                details: Details {
                    name: Some("Beta".into()),
                    description: None,
                    tags: vec!["a".into(), "b".into()],
                },
            },
            Entry::ReplaceList {
                segment: "s.g1".into(),
                kind: "user".into(),
                list: List::Excluded,
                table: Some(TableRef {
                    file_id: 9,
                    offset: 0,
                    info: TableInfo {
                        kind: TableKind::Hashed,
                        key_count: 3,
                        file_len: 200,
                        checksum: 0xabc,
                    },
                }),
            },
            Entry::Rotate { next_log: 4 },
        ]
    }

    #[test]
    fn entries_round_trip() {
        for entry in samples() {
            let bytes = entry.encode();
            assert_eq!(Entry::decode(&bytes).unwrap(), entry);
        }
    }

    #[test]
    fn table_refs_in_packs_carry_their_offset() {
        let packed = TableRef {
            file_id: 7,
            offset: 65536,
            info: TableInfo {
                kind: TableKind::Uuid,
                key_count: 1,
                file_len: 150,
                checksum: 3,
            },
        };
        let mut e = Encoder::new();
        encode_opt_table(&mut e, Some(&packed));
        let bytes = e.into_bytes();
        assert_eq!(
            bytes.first(),
            Some(&2),
            "a packed table has presence byte 2"
        );
        assert_eq!(bytes.len(), 42);
        let mut d = Decoder::new(&bytes);
        assert_eq!(decode_opt_table(&mut d).unwrap(), Some(packed));
        // Presence 2 with offset 0 would be a table of its own spelled another way.
        let mut zero = bytes.clone();
        zero[9..17].fill(0);
        let mut d = Decoder::new(&zero);
        let err = decode_opt_table(&mut d).unwrap_err();
        assert!(err.to_string().contains("offset 0"), "{err}");
        let mut bad = bytes;
        bad[0] = 3;
        let mut d = Decoder::new(&bad);
        assert!(decode_opt_table(&mut d).is_err());
    }

    #[test]
    fn truncated_or_extended_entries_are_rejected() {
        for entry in samples() {
            let bytes = entry.encode();
            for cut in 0..bytes.len() {
                assert!(
                    Entry::decode(&bytes[..cut]).is_err(),
                    "{entry:?} cut at {cut}"
                );
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(Entry::decode(&longer).is_err());
        }
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = Entry::decode(&bytes);
        }
    }
}
