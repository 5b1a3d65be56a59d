//! `segstore apply`: JSON Lines of updates, patches or partner payloads, one atomic batch per
//! line.

use crate::common::{
    now_ms, open_reader, open_writer, progress, quiet, CmdResult, Failure, Input, LineReader,
    LineStart, Out, WriterArgs, EXIT_CURSOR,
};
use crate::warnings::{self, KeyStyle};
use clap::Args;
use segstore::ingest::{parse_one_batch, parse_one_batch_from, Format, Parsed};
use segstore::sync::event_batches;
use segstore::{Batch, List, Patch, SegmentChange, Snapshot, Store};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Longest input line accepted.
const MAX_LINE: u64 = 256 << 20;

/// Lines up to this long are read whole, then parsed; a longer one is parsed as it is read,
/// so that its bytes are never held whole beside the keys parsed from them.
const BUFFERED_LINE: u64 = 4 << 20;

/// Arguments of `apply`.
#[derive(Debug, Args)]
#[command(
    after_help = "Each non-blank line is one JSON value and one atomic, durable batch; lines \
apply in order, and blank lines are skipped. A line that is not valid input (bad JSON, wrong \
types, empty or over-long keys) stops the run with its line number before anything from it is \
applied; the lines before it stay applied. Exit 0 means every line is applied and durable. A \
line's keys may encode to at most 64 MiB (one atomic write); a line over that is refused as soon \
as the parse passes it (updates, patches). An object may not give the same field twice.\n\
Formats:\n  \
updates      {\"segment\": REF, \"kind\"?: K, \"name\"?: N, \"included\"?: {\"add\": [..], \"remove\": [..]}, \"excluded\"?: {..}}\n  \
patches      a LaunchDarkly sync patch {segmentId, version, previousVersion, changes}, or an array of them (one stream event)\n  \
partner:TOOL a partner tool's request body; TOOL is one of amplitude, census, heap, hightouch, rudderstack, segment, tealium, zeotap\n\
Cursor rule (patches): a patch applies only when its previousVersion equals the stored cursor \
(\"\" before the first), and the cursor becomes its version. A line (one event) is checked as a \
chain (each patch's previousVersion must equal the previous patch's version) and applied as ONE \
atomic batch with its cursor advance and synchronized_on = now. A mismatch applies nothing of \
that line and exits with code 3, naming the expected and found versions; earlier lines stay \
applied and durable.\n\
synchronized_on: set by each applied line of patches (a successful sync step); updates and \
partner payloads leave it alone (use `segstore mark-synced`).\n\
--dry-run parses and checks every line the same way (patches against the stored cursor, as a \
chain across lines), opens the store read-only (so it works beside a running writer), writes \
nothing, and prints what would change: the batches, the segments created, and per segment the \
keys each list would gain and lose (net of the whole input). It holds every key the input names \
in memory."
)]
pub struct ApplyArgs {
    /// Input format: `updates`, `patches` or `partner:TOOL`.
    #[arg(long, default_value = "updates", value_parser = parse_format, value_name = "FORMAT")]
    pub format: Format,
    /// Store the LaunchDarkly context hash of each raw key (updates and partner formats; the
    /// keys of patches are hashes already).
    #[arg(long)]
    pub hash_keys: bool,
    /// The input file, or `-` for stdin.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Parse and check every line and print what would change, without writing anything.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub writer: WriterArgs,
}

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse::<Format>().map_err(|e| e.to_string())
}

/// Counts for the final report.
#[derive(Default)]
struct Totals {
    lines: u64,
    batches: u64,
    ops: u64,
    patches: u64,
}

/// Where parsed lines go: the store, or under `--dry-run` a tally of what would change.
trait Target {
    /// The store as the next line would find it (for the warnings).
    fn snapshot(&self) -> Arc<Snapshot>;
    /// Applies one line's changes as one atomic batch; returns its key operations.
    fn write_changes(&mut self, changes: Vec<SegmentChange>) -> CmdResult<u64>;
    /// Applies one event's patches; returns their key operations.
    fn apply_patches(&mut self, patches: Vec<Patch>) -> CmdResult<u64>;
}

/// The real thing: writes to the store.
struct StoreTarget {
    store: Store,
}

impl Target for StoreTarget {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.store.snapshot()
    }

    fn write_changes(&mut self, changes: Vec<SegmentChange>) -> CmdResult<u64> {
        let batch = Batch {
            changes,
            ..Batch::default()
        };
        let ops = batch.op_count() as u64;
        self.store.write(batch).map_err(|e| Failure {
            code: crate::common::code_of(&e),
            message: Some(e.to_string()),
        })?;
        Ok(ops)
    }

    fn apply_patches(&mut self, patches: Vec<Patch>) -> CmdResult<u64> {
        apply_patches(&self.store, patches)
    }
}

/// `--dry-run`: applies the lines to a model of the store's lists (a read-only snapshot plus
/// the keys the input names) and keeps what would change.
struct DryRunTarget {
    snapshot: Arc<Snapshot>,
    /// The cursor as the lines so far would leave it.
    cursor: String,
    /// Segments the input would create.
    created: HashSet<String>,
    /// Per segment and list, each key the input names and whether it would end up present.
    presence: HashMap<(String, List), HashMap<Vec<u8>, bool>>,
}

impl DryRunTarget {
    fn new(snapshot: Arc<Snapshot>) -> Self {
        DryRunTarget {
            cursor: snapshot.metadata().cursor,
            snapshot,
            created: HashSet::new(),
            presence: HashMap::new(),
        }
    }

    fn apply_change(&mut self, change: SegmentChange) {
        if self.snapshot.segment(&change.segment).is_none() {
            self.created.insert(change.segment.clone());
        }
        for list in List::BOTH {
            let list_change = change.list(list);
            if list_change.is_empty() {
                continue;
            }
            let keys = self
                .presence
                .entry((change.segment.clone(), list))
                .or_default();
            // Within one change adds apply first, removes second.
            for key in &list_change.add {
                keys.insert(key.to_vec(), true);
            }
            for key in &list_change.remove {
                keys.insert(key.to_vec(), false);
            }
        }
    }

    /// Per segment ref: (added, removed) for the included and the excluded list.
    fn net_changes(&self) -> segstore::Result<BTreeMap<&str, [(u64, u64); 2]>> {
        let mut net: BTreeMap<&str, [(u64, u64); 2]> = BTreeMap::new();
        for segment in &self.created {
            net.entry(segment.as_str()).or_default();
        }
        for ((segment, list), keys) in &self.presence {
            let counts = net.entry(segment.as_str()).or_default();
            let Some((added, removed)) = counts.get_mut(list.index()) else {
                continue;
            };
            for (key, present_after) in keys {
                let present_before = self.snapshot.contains(segment, *list, key)?;
                match (present_before, *present_after) {
                    (false, true) => *added += 1,
                    (true, false) => *removed += 1,
                    _ => {}
                }
            }
        }
        Ok(net)
    }
}

impl Target for DryRunTarget {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.clone()
    }

    fn write_changes(&mut self, changes: Vec<SegmentChange>) -> CmdResult<u64> {
        let mut ops = 0;
        for change in changes {
            ops += change.op_count() as u64;
            self.apply_change(change);
        }
        Ok(ops)
    }

    fn apply_patches(&mut self, patches: Vec<Patch>) -> CmdResult<u64> {
        let batches = event_batches(patches, usize::MAX, Some(now_ms())).map_err(|e| Failure {
            code: EXIT_CURSOR,
            message: Some(format!("cursor mismatch: {e}")),
        })?;
        let mut ops = 0;
        for batch in batches {
            if let Some(expected) = &batch.expect_cursor {
                if *expected != self.cursor {
                    return Err(Failure {
                        code: EXIT_CURSOR,
                        message: Some(format!(
                            "cursor mismatch: the patch expects previous version {expected:?}, the store is at {:?}",
                            self.cursor
                        )),
                    });
                }
            }
            if let Some(next) = batch.set_cursor {
                self.cursor = next;
            }
            ops += self.write_changes(batch.changes)?;
        }
        Ok(ops)
    }
}

/// Warns, once per list, when the keys added to a list differ in style (raw keys or context
/// hashes) from what the list holds.
#[derive(Default)]
struct MixedKeysWatch {
    /// What each list seen so far held when the run first touched it.
    holds: HashMap<(String, List), Option<KeyStyle>>,
    warned: HashSet<(String, List)>,
}

impl MixedKeysWatch {
    fn look(&mut self, snapshot: &Snapshot, change: &SegmentChange) {
        for list in List::BOTH {
            let adds = &change.list(list).add;
            if adds.is_empty() {
                continue;
            }
            let id = (change.segment.clone(), list);
            if self.warned.contains(&id) {
                continue;
            }
            let holds = *self
                .holds
                .entry(id.clone())
                .or_insert_with(|| warnings::list_style(snapshot, &change.segment, list));
            let Some(holds) = holds else {
                continue;
            };
            if let Some(other) = adds.iter().map(KeyStyle::of).find(|s| *s != holds) {
                warnings::mixed_keys(&change.segment, list, other, holds);
                self.warned.insert(id);
            }
        }
    }
}

/// Runs `apply`.
pub fn run(dir: &Path, args: &ApplyArgs) -> CmdResult {
    if args.hash_keys && args.format == Format::Patches {
        return Err(Failure::usage(
            "--hash-keys does not apply to --format patches: their keys are context hashes already",
        ));
    }
    if args.dry_run {
        let mut target = DryRunTarget::new(open_reader(dir)?.snapshot());
        let totals = apply_lines(args, &mut target)?;
        return report_dry_run(args, &totals, &target);
    }
    let mut target = StoreTarget {
        store: open_writer(dir, &args.writer)?,
    };
    let totals = apply_lines(args, &mut target)?;
    if quiet() {
        return Ok(());
    }
    let meta = target.store.snapshot().metadata();
    let mut out = Out::new();
    out.line(format_args!(
        "applied {} line(s): {} batch(es), {} key operation(s){}; cursor {:?}",
        totals.lines,
        totals.batches,
        totals.ops,
        patch_count(args, &totals),
        meta.cursor
    ))?;
    out.finish()
}

fn patch_count(args: &ApplyArgs, totals: &Totals) -> String {
    if args.format == Format::Patches {
        format!(", {} patch(es)", totals.patches)
    } else {
        String::new()
    }
}

/// Prints what a dry run found.
fn report_dry_run(args: &ApplyArgs, totals: &Totals, target: &DryRunTarget) -> CmdResult {
    let mut out = Out::new();
    out.line("dry run: nothing was written")?;
    let before = target.snapshot.metadata().cursor;
    let cursor = if before == target.cursor {
        format!("cursor {before:?} (unchanged)")
    } else {
        format!("cursor {before:?} -> {:?}", target.cursor)
    };
    out.line(format_args!(
        "would apply {} line(s): {} batch(es), {} key operation(s){}; {cursor}",
        totals.lines,
        totals.batches,
        totals.ops,
        patch_count(args, totals),
    ))?;
    out.line(format_args!("segments created: {}", target.created.len()))?;
    for (segment, [included, excluded]) in target.net_changes()? {
        let new = if target.created.contains(segment) {
            " (new)"
        } else {
            ""
        };
        out.line(format_args!(
            "segment {segment:?}{new}: included +{} -{}, excluded +{} -{}",
            included.0, included.1, excluded.0, excluded.1
        ))?;
    }
    out.finish()
}

/// Reads, parses and applies every line of the input to `target`.
fn apply_lines(args: &ApplyArgs, target: &mut dyn Target) -> CmdResult<Totals> {
    let input = Input::open(&args.file)?;
    let name = input.name.clone();
    let bar = progress(input.len, "lines");
    let len_known = input.len.is_some();
    let mut lines = LineReader::new(input.reader, MAX_LINE);
    let mut buf = Vec::new();
    let mut totals = Totals::default();
    let mut watch = MixedKeysWatch::default();
    let mut refs_checked: HashSet<String> = HashSet::new();
    let mut check_ref_once = |segment: &str| {
        if !refs_checked.contains(segment) {
            refs_checked.insert(segment.to_owned());
            warnings::check_ref(segment);
        }
    };
    let dry_run = args.dry_run;
    let result = (|| -> CmdResult {
        loop {
            let start = lines
                .next_line_start(&mut buf, BUFFERED_LINE)
                .map_err(|e| {
                    Failure::runtime(format!("{name}: {e}{}", applied_note(&totals, dry_run)))
                })?;
            let line_no = lines.line_no;
            let at = |detail: String| {
                format!(
                    "{name}: line {line_no}: {detail}{}",
                    applied_note(&totals, dry_run)
                )
            };
            let parsed = match start {
                LineStart::End => return Ok(()),
                LineStart::Whole => {
                    if buf.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let text = std::str::from_utf8(&buf)
                        .map_err(|e| Failure::runtime(at(format!("not UTF-8 ({e})"))))?;
                    parse_one_batch(&args.format, text, args.hash_keys)
                }
                LineStart::Long => {
                    // Parse as it is read: the first bytes, then the rest of the line.
                    let head = std::io::Cursor::new(std::mem::take(&mut buf));
                    // serde_json reads a byte at a time: buffer in front of it.
                    let parsed = parse_one_batch_from(
                        &args.format,
                        std::io::BufReader::with_capacity(
                            64 << 10,
                            std::io::Read::chain(head, lines.rest_of_line()),
                        ),
                        args.hash_keys,
                    );
                    if lines.overflowed() {
                        return Err(Failure::runtime(at(format!(
                            "longer than {} bytes; is this the right file?",
                            lines.limit()
                        ))));
                    }
                    parsed
                }
            }
            .map_err(|e| Failure::runtime(at(e.to_string())))?;
            if len_known {
                bar.set_position(lines.bytes_read);
            } else {
                bar.set_position(line_no);
            }
            let in_context = |f: Failure| Failure {
                code: f.code,
                message: Some(at(f.message.unwrap_or_default())),
            };
            let snapshot = target.snapshot();
            match parsed {
                Parsed::Changes(changes) => {
                    for change in &changes {
                        check_ref_once(&change.segment);
                        watch.look(&snapshot, change);
                    }
                    if !changes.is_empty() {
                        totals.ops += target.write_changes(changes).map_err(in_context)?;
                        totals.batches += 1;
                    }
                }
                Parsed::Patches(patches) => {
                    for patch in &patches {
                        check_ref_once(&patch.change.segment);
                        watch.look(&snapshot, &patch.change);
                    }
                    let count = patches.len() as u64;
                    let ops = target.apply_patches(patches).map_err(in_context)?;
                    if count > 0 {
                        totals.batches += 1;
                        totals.ops += ops;
                        totals.patches += count;
                    }
                }
            }
            totals.lines += 1;
        }
    })();
    bar.finish_and_clear();
    result?;
    Ok(totals)
}

/// What the user should know after a failure: what stays applied.
fn applied_note(totals: &Totals, dry_run: bool) -> String {
    if dry_run {
        " (dry run: nothing was written)".to_owned()
    } else if totals.lines == 0 {
        " (nothing was applied)".to_owned()
    } else {
        format!(
            " (nothing from this line was applied; the {} lines before it are applied and durable)",
            totals.lines
        )
    }
}

/// Applies one event's patches as one atomic batch; returns its key operations.
fn apply_patches(store: &Store, patches: Vec<Patch>) -> CmdResult<u64> {
    // The chain within the event (each patch must apply on the cursor the previous one
    // leaves) is checked by the same function the sync daemon uses.
    let batches = event_batches(patches, usize::MAX, Some(now_ms())).map_err(|e| Failure {
        code: EXIT_CURSOR,
        message: Some(format!("cursor mismatch: {e}")),
    })?;
    let mut ops = 0;
    for batch in batches {
        let batch_ops = batch.op_count() as u64;
        match store.write(batch) {
            Ok(_) => ops += batch_ops,
            Err(segstore::Error::CursorMismatch { expected, found }) => {
                return Err(Failure {
                    code: EXIT_CURSOR,
                    message: Some(format!(
                        "cursor mismatch: the patch expects previous version {expected:?}, the store is at {found:?}"
                    )),
                })
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(ops)
}
