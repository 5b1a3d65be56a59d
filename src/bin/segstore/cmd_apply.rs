//! `segstore apply`: JSON Lines of updates, patches or partner payloads, one atomic batch per
//! line.

use crate::common::{
    now_ms, open_writer, progress, CmdResult, Failure, Input, LineReader, LineStart, Out,
    WriterArgs, EXIT_CURSOR,
};
use clap::Args;
use segstore::ingest::{parse_one_batch, parse_one_batch_from, Format, Parsed};
use segstore::sync::event_batches;
use segstore::{Batch, Patch, Store};
use std::path::{Path, PathBuf};

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
partner payloads leave it alone (use `segstore mark-synced`)."
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

/// Runs `apply`.
pub fn run(dir: &Path, args: &ApplyArgs) -> CmdResult {
    if args.hash_keys && args.format == Format::Patches {
        return Err(Failure::usage(
            "--hash-keys does not apply to --format patches: their keys are context hashes already",
        ));
    }
    let store = open_writer(dir, &args.writer)?;
    let input = Input::open(&args.file)?;
    let name = input.name.clone();
    let bar = progress(input.len, "lines");
    let len_known = input.len.is_some();
    let mut lines = LineReader::new(input.reader, MAX_LINE);
    let mut buf = Vec::new();
    let mut totals = Totals::default();
    let result = (|| -> CmdResult {
        loop {
            let start = lines
                .next_line_start(&mut buf, BUFFERED_LINE)
                .map_err(|e| Failure::runtime(format!("{name}: {e}{}", applied_note(&totals))))?;
            let line_no = lines.line_no;
            let at = |detail: String| {
                format!("{name}: line {line_no}: {detail}{}", applied_note(&totals))
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
            match parsed {
                Parsed::Changes(changes) => {
                    if !changes.is_empty() {
                        let batch = Batch {
                            changes,
                            ..Batch::default()
                        };
                        let ops = batch.op_count() as u64;
                        store.write(batch).map_err(|e| {
                            let code = crate::common::code_of(&e);
                            Failure {
                                code,
                                message: Some(at(e.to_string())),
                            }
                        })?;
                        totals.batches += 1;
                        totals.ops += ops;
                    }
                }
                Parsed::Patches(patches) => {
                    let count = patches.len() as u64;
                    let ops = apply_patches(&store, patches).map_err(|f| {
                        let detail = f.message.clone().unwrap_or_default();
                        Failure {
                            code: f.code,
                            message: Some(at(detail)),
                        }
                    })?;
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
    let meta = store.snapshot().metadata();
    let mut out = Out::new();
    out.line(format_args!(
        "applied {} line(s): {} batch(es), {} key operation(s){}; cursor {:?}",
        totals.lines,
        totals.batches,
        totals.ops,
        if args.format == Format::Patches {
            format!(", {} patch(es)", totals.patches)
        } else {
            String::new()
        },
        meta.cursor
    ))?;
    out.finish()
}

/// What the user should know after a failure: what stays applied.
fn applied_note(totals: &Totals) -> String {
    if totals.lines == 0 {
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
