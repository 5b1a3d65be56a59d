//! `segstore stats`: files, sizes, key counts, log length, bytes per key.

use crate::common::{format_bytes, open_reader, printable, CmdResult, Failure, Out};
use clap::Args;
use std::path::Path;

/// Arguments of `stats`.
#[derive(Debug, Args)]
#[command(
    after_help = "Table keys and bytes count the tables the manifest names (a table an import \
wrote since the last compaction is named by the log and counted from the next compaction on); \
live keys (when the store opens) count every list's keys including the log's effect. bytes/key \
is table bytes / table keys; store B/key is every file's bytes / live keys."
)]
pub struct StatsArgs {
    /// Print JSON: the library's StoreStats plus live_keys, segments and bytes_per_key.
    #[arg(long)]
    pub json: bool,
}

/// Runs `stats`.
pub fn run(dir: &Path, args: &StatsArgs) -> CmdResult {
    let stats = segstore::stats(dir)?;
    // Live counts need a full open; a store that does not open still gets its file figures.
    let live = open_reader(dir).ok().map(|store| {
        let segments = store.snapshot().segments();
        let keys: u64 = segments.iter().map(|s| s.included + s.excluded).sum();
        (segments.len(), keys)
    });
    let bytes_per_key = if stats.table_keys > 0 {
        Some(stats.table_bytes as f64 / stats.table_keys as f64)
    } else {
        None
    };
    // Every byte of the directory over every live key: what a key costs on disk right now,
    // whatever is still waiting in the log for a compaction.
    let total_bytes: u64 = stats.files.iter().map(|f| f.bytes).sum();
    let store_bytes_per_key = match live {
        Some((_, keys)) if keys > 0 => Some(total_bytes as f64 / keys as f64),
        _ => None,
    };
    let mut out = Out::new();
    if args.json {
        let mut value = serde_json::to_value(&stats)
            .map_err(|e| Failure::runtime(format!("encoding JSON: {e}")))?;
        if let Some(obj) = value.as_object_mut() {
            obj.insert("segments".into(), live.map(|l| l.0).into());
            obj.insert("live_keys".into(), live.map(|l| l.1).into());
            obj.insert("bytes_per_key".into(), bytes_per_key.into());
            obj.insert("total_bytes".into(), total_bytes.into());
            obj.insert("store_bytes_per_key".into(), store_bytes_per_key.into());
        }
        let text = serde_json::to_string_pretty(&value)
            .map_err(|e| Failure::runtime(format!("encoding JSON: {e}")))?;
        out.line(text)?;
        return out.finish();
    }
    out.line(format_args!("store:         {}", dir.display()))?;
    out.line(format_args!("generation:    {}", stats.generation))?;
    if let Some((segments, keys)) = live {
        out.line(format_args!("segments:      {segments}"))?;
        out.line(format_args!("live keys:     {keys}"))?;
    }
    out.line(format_args!("table keys:    {}", stats.table_keys))?;
    out.line(format_args!(
        "table bytes:   {}",
        format_bytes(stats.table_bytes)
    ))?;
    match bytes_per_key {
        Some(b) => out.line(format_args!(
            "bytes/key:     {b:.2} (table bytes / table keys)"
        ))?,
        None => {
            out.line("bytes/key:     - (no table in the manifest yet; compact to build one)")?
        }
    }
    out.line(format_args!("total bytes:   {}", format_bytes(total_bytes)))?;
    if let Some(b) = store_bytes_per_key {
        out.line(format_args!(
            "store B/key:   {b:.2} (every file / live keys)"
        ))?;
    }
    out.line(format_args!(
        "log bytes:     {}",
        format_bytes(stats.log_bytes)
    ))?;
    out.line(format_args!(
        "log records:   {}{}",
        stats.log_records,
        if stats.torn_tail {
            " (the live log ends in an incomplete record)"
        } else {
            ""
        }
    ))?;
    out.line(format_args!("files:         {}", stats.files.len()))?;
    let width = stats
        .files
        .iter()
        .map(|f| f.name.chars().count())
        .max()
        .unwrap_or(0);
    for file in &stats.files {
        out.line(format_args!(
            "  {:<width$}  {:<8}  {:>12}",
            printable(&file.name),
            file.kind,
            file.bytes
        ))?;
    }
    out.finish()
}
