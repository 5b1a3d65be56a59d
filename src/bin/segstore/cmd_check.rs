//! `segstore check REF KEY` and `segstore check REF --keys FILE|-`: included, excluded or
//! unknown, for one key or many.

use crate::common::{key_arg, open_reader, warn, CmdResult, Failure, Input, LineReader, Out};
use crate::warnings::{self, KeyStyle};
use clap::Args;
use segstore::{Snapshot, Status};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Longest line of a `--keys` file (a raw key hashed with --hash-key may exceed 4096 bytes).
const MAX_KEY_LINE: u64 = 1 << 20;

/// Arguments of `check`.
#[derive(Debug, Args)]
#[command(
    after_help = "With KEY, prints exactly one word on stdout: `included`, `excluded` or \
`unknown` (included beats excluded). An unknown segment answers `unknown`, with a warning on \
stderr.\n\
With --keys FILE (or `-` for stdin), reads one key per line (a trailing \\r is dropped; nothing \
else is trimmed) and prints one answer per key, in input order: the word, a tab, and the key as \
given. Blank lines are skipped and get no answer. A line that is not a valid key (over 4096 \
bytes, or not UTF-8 with --hash-key) stops the run with its line number (exit 1), after the \
answers before it.\n\
--json prints each answer as one JSON object per line instead: \
{\"segment\": REF, \"key\": KEY, \"status\": WORD}, KEY as given (bytes that are not UTF-8 \
shown as U+FFFD)."
)]
pub struct CheckArgs {
    /// The segment ref.
    #[arg(value_name = "REF")]
    pub segment: String,
    /// The key (as stored, e.g. a context hash; or a raw context key with --hash-key).
    #[arg(
        value_name = "KEY",
        required_unless_present = "keys",
        conflicts_with = "keys"
    )]
    pub key: Option<OsString>,
    /// Check every key of FILE, one per line (`-` for stdin), instead of one KEY.
    #[arg(long, value_name = "FILE")]
    pub keys: Option<PathBuf>,
    /// KEY (or each key of --keys) is a raw context key: look up its LaunchDarkly context hash.
    #[arg(long)]
    pub hash_key: bool,
    /// Print each answer as a JSON object {"segment","key","status"}, one per line.
    #[arg(long)]
    pub json: bool,
}

/// One answer.
#[derive(serde::Serialize)]
struct Answer<'a> {
    segment: &'a str,
    key: &'a str,
    status: &'static str,
}

/// Runs `check`.
pub fn run(dir: &Path, args: &CheckArgs) -> CmdResult {
    warnings::check_ref(&args.segment);
    match (&args.key, &args.keys) {
        (Some(key), _) => check_one(dir, args, key),
        (None, Some(file)) => check_many(dir, args, file),
        (None, None) => Err(Failure::usage("give a KEY or --keys FILE")),
    }
}

fn warn_if_unknown_segment(snapshot: &Snapshot, dir: &Path, segment: &str) {
    if snapshot.segment(segment).is_none() {
        warn(format_args!("no segment {segment:?} in {}", dir.display()));
    }
}

fn write_answer(
    out: &mut Out,
    args: &CheckArgs,
    given: &[u8],
    status: Status,
    many: bool,
) -> CmdResult {
    if args.json {
        let key = String::from_utf8_lossy(given);
        let answer = Answer {
            segment: &args.segment,
            key: &key,
            status: status.as_str(),
        };
        let json = serde_json::to_string(&answer)
            .map_err(|e| Failure::runtime(format!("encoding JSON: {e}")))?;
        out.line(json)
    } else if many {
        out.bytes(status.as_str().as_bytes())?;
        out.bytes(b"\t")?;
        out.bytes(given)?;
        out.bytes(b"\n")
    } else {
        out.line(status.as_str())
    }
}

fn check_one(dir: &Path, args: &CheckArgs, given: &OsString) -> CmdResult {
    use std::os::unix::ffi::OsStrExt;
    let key = key_arg(given, args.hash_key)?;
    let store = open_reader(dir)?;
    let snapshot = store.snapshot();
    warn_if_unknown_segment(&snapshot, dir, &args.segment);
    warnings::check_lookup_key(&snapshot, &key, args.hash_key);
    let mut out = Out::new();
    let status = snapshot.check(&args.segment, &key)?;
    write_answer(&mut out, args, given.as_bytes(), status, false)?;
    out.finish()
}

fn check_many(dir: &Path, args: &CheckArgs, file: &Path) -> CmdResult {
    let store = open_reader(dir)?;
    let snapshot = store.snapshot();
    warn_if_unknown_segment(&snapshot, dir, &args.segment);
    let input = Input::open(file)?;
    let name = input.name;
    let mut lines = LineReader::new(input.reader, MAX_KEY_LINE);
    let mut line = Vec::new();
    let mut out = Out::new();
    let mut lookup_warned = false;
    let result = (|| -> CmdResult {
        while lines
            .next_line(&mut line)
            .map_err(|e| Failure::runtime(format!("{name}: {e}")))?
        {
            if line.is_empty() {
                continue;
            }
            let at = |detail: String| format!("{name}: line {}: {detail}", lines.line_no);
            let key = if args.hash_key {
                let text = std::str::from_utf8(&line).map_err(|_| {
                    Failure::runtime(at(
                        "the key is not UTF-8, so it has no context hash".to_owned()
                    ))
                })?;
                segstore::context_hash(text).into_bytes()
            } else {
                line.clone()
            };
            segstore::validate_key(&key).map_err(|e| Failure::runtime(at(e.to_string())))?;
            // One warning at most: at the first raw key.
            if !lookup_warned && !args.hash_key && KeyStyle::of(&key) == KeyStyle::Raw {
                lookup_warned = true;
                warnings::check_lookup_key(&snapshot, &key, args.hash_key);
            }
            write_answer(
                &mut out,
                args,
                &line,
                snapshot.check(&args.segment, &key)?,
                true,
            )?;
        }
        Ok(())
    })();
    // Answers given before an error are still printed.
    let flushed = out.finish();
    result?;
    flushed
}
