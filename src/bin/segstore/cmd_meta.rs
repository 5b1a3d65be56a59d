//! `segstore meta` and `segstore mark-synced`: the sync metadata.

use crate::common::{
    format_age, format_utc, now_ms, open_reader, open_writer, CmdResult, Failure, Out, WriterArgs,
};
use clap::Args;
use std::path::Path;

/// Arguments of `meta`.
#[derive(Debug, Args)]
pub struct MetaArgs {
    /// Print JSON: {synchronized_on, synchronized_on_utc, age_ms, cursor}. age_ms is now
    /// minus synchronized_on: negative when synchronized_on is in the future (clock skew), null
    /// when never synced.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `mark-synced`.
#[derive(Debug, Args)]
pub struct MarkSyncedArgs {
    /// The time to record, in Unix milliseconds (default: now).
    #[arg(long, value_name = "UNIX_MS")]
    pub at: Option<u64>,
    #[command(flatten)]
    pub writer: WriterArgs,
}

/// Runs `meta`.
pub fn run_meta(dir: &Path, args: &MetaArgs) -> CmdResult {
    let store = open_reader(dir)?;
    let meta = store.snapshot().metadata();
    let now = now_ms();
    // Signed: a synchronized_on ahead of this host's clock gives a negative age, not 0.
    let age = meta
        .synchronized_on
        .map(|at| i64::try_from(i128::from(now) - i128::from(at)).unwrap_or(i64::MIN));
    let mut out = Out::new();
    if args.json {
        let json = serde_json::json!({
            "synchronized_on": meta.synchronized_on,
            "synchronized_on_utc": meta.synchronized_on.map(format_utc),
            "age_ms": age,
            "cursor": meta.cursor,
        });
        let text = serde_json::to_string_pretty(&json)
            .map_err(|e| Failure::runtime(format!("encoding JSON: {e}")))?;
        out.line(text)?;
        return out.finish();
    }
    match meta.synchronized_on {
        Some(at) => {
            out.line(format_args!("synchronized_on: {at} ({})", format_utc(at)))?;
            let age = if at > now {
                format!("{} in the future (clock skew?)", format_age(at - now))
            } else {
                format!("{} ago", format_age(now - at))
            };
            out.line(format_args!("age:             {age}"))?;
        }
        None => {
            out.line("synchronized_on: never (stale)")?;
            out.line("age:             -")?;
        }
    }
    out.line(format_args!("cursor:          {:?}", meta.cursor))?;
    out.finish()
}

/// Runs `mark-synced`.
pub fn run_mark_synced(dir: &Path, args: &MarkSyncedArgs) -> CmdResult {
    let at = args.at.unwrap_or_else(now_ms);
    let store = open_writer(dir, &args.writer)?;
    store.mark_synced(at)?;
    let mut out = Out::new();
    out.line(format_args!(
        "synchronized_on set to {at} ({})",
        format_utc(at)
    ))?;
    out.finish()
}
