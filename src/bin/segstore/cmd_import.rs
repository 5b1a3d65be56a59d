//! `segstore import`: bulk load keys into one list of a segment.

use crate::common::{
    open_reader, open_writer, progress, quiet, CmdResult, Failure, Input, LineReader, Out,
    WriterArgs,
};
use crate::warnings::{self, KeyStyle};
use clap::{Args, ValueEnum};
use indicatif::ProgressBar;
use segstore::{Batch, List, SegmentChange, Snapshot, Store, TableKind, MAX_KEY_LEN};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Keys per write in `--mode merge`.
const MERGE_BATCH: usize = 10_000;
/// Longest input line accepted (a raw key hashed with --hash-keys may exceed 4096 bytes).
const MAX_LINE: u64 = 1 << 20;
/// Progress updates every this many keys (a power of two).
const PROGRESS_EVERY: u64 = 1 << 16;

/// Arguments of `import`.
#[derive(Debug, Args)]
#[command(
    after_help = "Input: one key per line (a trailing \\r is dropped; nothing else is \
trimmed), or with --csv a column of a CSV file with a header row. Empty lines and empty CSV \
cells are skipped and counted. Keys are 1..=4096 bytes; a longer one stops the import with its \
line number, before anything is written.\n\
--mode replace writes a new table from the keys (sorted in a bounded memory budget, spilling to \
disk, so inputs far larger than memory work) and switches the list to it in one atomic step: on \
any error the list is unchanged.\n\
--mode merge adds the keys through ordinary writes of 10,000 keys each: on an error, the batches \
written before it stay applied.\n\
--dry-run reads and checks the whole input the same way, opens the store read-only (so it works \
beside a running writer) and prints what the import would do: whether the segment would be \
created, the keys the list would gain and lose, its size after, and (merge) the writes; nothing \
is written. It tells keys apart by a 128-bit digest, so it holds 16 bytes per distinct key."
)]
pub struct ImportArgs {
    /// The segment ref, e.g. `beta-users.g3` (created if missing).
    #[arg(long, value_name = "REF")]
    pub segment: String,
    /// Context kind for a segment this import creates (default `user`); for an existing
    /// segment it must match.
    #[arg(long, value_name = "KIND")]
    pub kind: Option<String>,
    /// Load the excluded list instead of the included list.
    #[arg(long)]
    pub excluded: bool,
    /// `replace`: the list becomes exactly the file's keys; `merge`: the keys are added.
    #[arg(long, value_enum, default_value_t = Mode::Replace)]
    pub mode: Mode,
    /// Store the LaunchDarkly context hash of each key instead of the key itself.
    #[arg(long)]
    pub hash_keys: bool,
    /// Read a CSV file with a header row; take the keys from --column.
    #[arg(long, requires = "column")]
    pub csv: bool,
    /// The CSV column holding the keys (by header name).
    #[arg(long, value_name = "NAME", requires = "csv")]
    pub column: Option<String>,
    /// The input file, or `-` for stdin.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Read and check the input and print what would change, without writing anything.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub writer: WriterArgs,
}

/// How the keys combine with the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// The list becomes exactly the input's keys.
    Replace,
    /// The input's keys are added to the list.
    Merge,
}

/// Where keys come from: lines or a CSV column.
enum Source {
    Lines {
        lines: LineReader,
        buf: Vec<u8>,
    },
    Csv {
        reader: csv::Reader<Box<dyn std::io::BufRead>>,
        column: usize,
        record: csv::ByteRecord,
    },
}

/// Reads keys with their line numbers, hashing and checking them.
struct KeyReader {
    name: String,
    source: Source,
    hash: bool,
    /// Keys produced.
    keys: u64,
    /// Empty lines or cells skipped.
    skipped: u64,
    progress: ProgressBar,
    len_known: bool,
    /// The error that stopped the iteration, with file and line.
    error: Option<Failure>,
    /// For `--mode merge`: what the list already holds, to warn when the keys differ.
    list_holds: Option<KeyStyle>,
    /// The segment and list, for that warning.
    segment: String,
    list: List,
    /// Set once the mixed-keys warning is printed.
    mixed_warned: bool,
}

impl KeyReader {
    fn open(
        input: Input,
        args: &ImportArgs,
        list: List,
        list_holds: Option<KeyStyle>,
    ) -> CmdResult<KeyReader> {
        let progress = progress(input.len, "keys");
        let name = input.name;
        let source = match (&args.column, args.csv) {
            (Some(column), true) => {
                let mut reader = csv::ReaderBuilder::new()
                    .has_headers(true)
                    .from_reader(input.reader);
                let headers = reader.byte_headers().map_err(|e| {
                    Failure::runtime(format!("{name}: reading the CSV header: {e}"))
                })?;
                let index = headers
                    .iter()
                    .position(|h| h == column.as_bytes())
                    .ok_or_else(|| {
                        let names: Vec<String> = headers
                            .iter()
                            .map(|h| format!("{:?}", String::from_utf8_lossy(h)))
                            .collect();
                        Failure::runtime(format!(
                            "{name}: no column {column:?} in the CSV header; the columns are {}",
                            names.join(", ")
                        ))
                    })?;
                Source::Csv {
                    reader,
                    column: index,
                    record: csv::ByteRecord::new(),
                }
            }
            _ => Source::Lines {
                lines: LineReader::new(input.reader, MAX_LINE),
                buf: Vec::new(),
            },
        };
        Ok(KeyReader {
            name,
            source,
            hash: args.hash_keys,
            keys: 0,
            skipped: 0,
            progress,
            len_known: input.len.is_some(),
            error: None,
            list_holds,
            segment: args.segment.clone(),
            list,
            mixed_warned: false,
        })
    }

    /// The next key, `Ok(None)` at the end.
    fn next_key(&mut self) -> CmdResult<Option<Vec<u8>>> {
        loop {
            let (raw, line): (&[u8], u64) = match &mut self.source {
                Source::Lines { lines, buf } => {
                    let more = lines
                        .next_line(buf)
                        .map_err(|e| Failure::runtime(format!("{}: {e}", self.name)))?;
                    if !more {
                        return Ok(None);
                    }
                    (buf.as_slice(), lines.line_no)
                }
                Source::Csv {
                    reader,
                    column,
                    record,
                } => {
                    let more = reader
                        .read_byte_record(record)
                        .map_err(|e| Failure::runtime(format!("{}: {e}", self.name)))?;
                    if !more {
                        return Ok(None);
                    }
                    let line = record.position().map_or(0, |p| p.line());
                    let field = record.get(*column).ok_or_else(|| {
                        Failure::runtime(format!(
                            "{}: line {line}: the row has no column {}",
                            self.name,
                            *column + 1
                        ))
                    })?;
                    (field, line)
                }
            };
            if raw.is_empty() {
                self.skipped += 1;
                continue;
            }
            let key = if self.hash {
                let text = std::str::from_utf8(raw).map_err(|_| {
                    Failure::runtime(format!(
                        "{}: line {line}: the key is not UTF-8, so it has no context hash",
                        self.name
                    ))
                })?;
                segstore::context_hash(text).into_bytes()
            } else {
                if raw.len() > MAX_KEY_LEN {
                    let preview = String::from_utf8_lossy(raw.get(..40).unwrap_or(raw));
                    return Err(Failure::runtime(format!(
                        "{}: line {line}: key {preview:?}... is {} bytes; keys are 1..={MAX_KEY_LEN} bytes",
                        self.name,
                        raw.len()
                    )));
                }
                raw.to_vec()
            };
            if let Some(holds) = self.list_holds {
                let style = KeyStyle::of(&key);
                if !self.mixed_warned && style != holds {
                    self.mixed_warned = true;
                    warnings::mixed_keys(&self.segment, self.list, style, holds);
                }
            }
            self.keys += 1;
            if self.keys & (PROGRESS_EVERY - 1) == 0 {
                self.update_progress();
            }
            return Ok(Some(key));
        }
    }

    fn update_progress(&self) {
        if self.len_known {
            let pos = match &self.source {
                Source::Lines { lines, .. } => lines.bytes_read,
                Source::Csv { reader, .. } => reader.position().byte(),
            };
            self.progress.set_position(pos);
            self.progress.set_message(format!("{} keys", self.keys));
        } else {
            self.progress.set_position(self.keys);
        }
    }
}

/// Feeds `replace_list`; keeps the error (with file and line) for the report.
impl Iterator for KeyReader {
    type Item = segstore::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.error.is_some() {
            return None;
        }
        match self.next_key() {
            Ok(Some(key)) => Some(Ok(key)),
            Ok(None) => None,
            Err(failure) => {
                let detail = failure.message.clone().unwrap_or_default();
                self.error = Some(failure);
                Some(Err(segstore::Error::InvalidArgument {
                    what: "input",
                    detail,
                }))
            }
        }
    }
}

fn kind_name(kind: Option<TableKind>) -> &'static str {
    match kind {
        Some(TableKind::Fst) => "fst",
        Some(TableKind::Hashed) => "hashed",
        Some(TableKind::Uuid) => "uuid",
        None => "none (empty list)",
    }
}

/// Fails if `--kind` names another kind than the existing segment's.
fn check_kind(snapshot: &Snapshot, args: &ImportArgs) -> CmdResult {
    if let (Some(kind), Some(info)) = (&args.kind, snapshot.segment(&args.segment)) {
        if &info.kind != kind {
            return Err(Failure::runtime(format!(
                "segment {} has context kind {:?}, not {kind:?}; a segment's kind never changes",
                args.segment, info.kind
            )));
        }
    }
    Ok(())
}

/// What the list holds, when merging into it (a replaced list's keys do not matter).
fn merge_target_style(snapshot: &Snapshot, args: &ImportArgs, list: List) -> Option<KeyStyle> {
    match args.mode {
        Mode::Merge => warnings::list_style(snapshot, &args.segment, list),
        Mode::Replace => None,
    }
}

/// Runs `import`.
pub fn run(dir: &Path, args: &ImportArgs) -> CmdResult {
    let list = if args.excluded {
        List::Excluded
    } else {
        List::Included
    };
    warnings::check_ref(&args.segment);
    if args.dry_run {
        return dry_run(dir, args, list);
    }
    let store = open_writer(dir, &args.writer)?;
    let snapshot = store.snapshot();
    check_kind(&snapshot, args)?;
    let list_holds = merge_target_style(&snapshot, args, list);
    drop(snapshot);
    let input = Input::open(&args.file)?;
    let mut keys = KeyReader::open(input, args, list, list_holds)?;
    let started = Instant::now();
    let (keys_read, distinct, table) = match args.mode {
        Mode::Replace => {
            let result = store.replace_list(&args.segment, args.kind.as_deref(), list, &mut keys);
            keys.progress.finish_and_clear();
            if let Some(failure) = keys.error.take() {
                return Err(failure);
            }
            let stats = result?;
            (stats.keys_read, stats.keys, kind_name(stats.kind))
        }
        Mode::Merge => {
            let merged = merge(&store, args, list, &mut keys);
            keys.progress.finish_and_clear();
            merged?;
            let count = store
                .snapshot()
                .segment(&args.segment)
                .map_or(0, |s| match list {
                    List::Included => s.included,
                    List::Excluded => s.excluded,
                });
            (keys.keys, count, "log overlay (compact to build a table)")
        }
    };
    if quiet() {
        return Ok(());
    }
    let seconds = started.elapsed().as_secs_f64();
    let rate = if seconds > 0.0 {
        keys_read as f64 / seconds
    } else {
        0.0
    };
    let mut out = Out::new();
    let mode = match args.mode {
        Mode::Replace => "replace",
        Mode::Merge => "merge",
    };
    out.line(format_args!(
        "segment:       {} ({} list, {mode})",
        args.segment,
        list.name()
    ))?;
    out.line(format_args!("keys read:     {keys_read}"))?;
    match args.mode {
        Mode::Replace => out.line(format_args!("distinct keys: {distinct}"))?,
        Mode::Merge => out.line(format_args!("list now has:  {distinct} keys"))?,
    }
    out.line(format_args!("blank skipped: {}", keys.skipped))?;
    out.line(format_args!("table kind:    {table}"))?;
    out.line(format_args!("seconds:       {seconds:.3}"))?;
    out.line(format_args!("keys/s:        {rate:.0}"))?;
    out.finish()
}

/// `--dry-run`: reads every key as the import would, against a read-only snapshot, and
/// reports what would change.
fn dry_run(dir: &Path, args: &ImportArgs, list: List) -> CmdResult {
    segstore::key::validate_ref(&args.segment)?;
    segstore::key::validate_kind(args.kind.as_deref().unwrap_or("user"))?;
    let store = open_reader(dir)?;
    let snapshot = store.snapshot();
    check_kind(&snapshot, args)?;
    let existing = snapshot.segment(&args.segment);
    let list_len = existing.as_ref().map_or(0, |info| match list {
        List::Included => info.included,
        List::Excluded => info.excluded,
    });
    let input = Input::open(&args.file)?;
    let mut keys = KeyReader::open(input, args, list, merge_target_style(&snapshot, args, list))?;
    let mut seen: HashSet<u128> = HashSet::new();
    let mut distinct_new = 0u64;
    let mut distinct_present = 0u64;
    let read = (|| -> CmdResult {
        while let Some(key) = keys.next_key()? {
            if seen.insert(xxhash_rust::xxh3::xxh3_128(&key)) {
                if snapshot.contains(&args.segment, list, &key)? {
                    distinct_present += 1;
                } else {
                    distinct_new += 1;
                }
            }
        }
        Ok(())
    })();
    keys.progress.finish_and_clear();
    read?;
    let distinct = distinct_new + distinct_present;
    let (removed, after) = match args.mode {
        Mode::Replace => (list_len.saturating_sub(distinct_present), distinct),
        Mode::Merge => (0, list_len + distinct_new),
    };
    let mut out = Out::new();
    out.line("dry run: nothing was written")?;
    let mode = match args.mode {
        Mode::Replace => "replace",
        Mode::Merge => "merge",
    };
    out.line(format_args!(
        "segment:       {} ({} list, {mode})",
        args.segment,
        list.name()
    ))?;
    match &existing {
        Some(info) => out.line(format_args!("segment kind:  {} (exists)", info.kind))?,
        None => out.line(format_args!(
            "segment kind:  {} (would be created)",
            args.kind.as_deref().unwrap_or("user")
        ))?,
    }
    out.line(format_args!("keys read:     {}", keys.keys))?;
    out.line(format_args!("distinct keys: {distinct}"))?;
    out.line(format_args!("would add:     {distinct_new}"))?;
    out.line(format_args!("would remove:  {removed}"))?;
    out.line(format_args!("list now has:  {list_len} keys"))?;
    out.line(format_args!("list after:    {after} keys"))?;
    out.line(format_args!("blank skipped: {}", keys.skipped))?;
    match args.mode {
        Mode::Replace => out.line("writes:        1 (a new table, switched in one atomic step)")?,
        Mode::Merge => out.line(format_args!(
            "writes:        {} (batches of up to {MERGE_BATCH} keys)",
            keys.keys.div_ceil(MERGE_BATCH as u64)
        ))?,
    }
    out.finish()
}

/// `--mode merge`: adds the keys in writes of [`MERGE_BATCH`].
fn merge(store: &Store, args: &ImportArgs, list: List, keys: &mut KeyReader) -> CmdResult {
    let kind = args.kind.clone().or_else(|| Some("user".to_owned()));
    let mut pending = segstore::Keys::new();
    let mut first_line = 1;
    loop {
        let key = keys.next_key()?;
        let done = key.is_none();
        if let Some(key) = key {
            pending.push(key);
        }
        if pending.len() >= MERGE_BATCH || (done && !pending.is_empty()) {
            let mut change = SegmentChange::new(args.segment.clone());
            change.kind.clone_from(&kind);
            change.list_mut(list).add = std::mem::take(&mut pending);
            let last_line = match &keys.source {
                Source::Lines { lines, .. } => lines.line_no,
                Source::Csv { record, .. } => record.position().map_or(0, |p| p.line()),
            };
            store.write(Batch::new().change(change)).map_err(|e| {
                Failure::from(e).context(format_args!(
                    "{}: writing the keys of lines {first_line}..={last_line}",
                    keys.name
                ))
            })?;
            first_line = last_line + 1;
        }
        if done {
            return Ok(());
        }
    }
}
