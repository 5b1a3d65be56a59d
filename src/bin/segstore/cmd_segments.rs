//! `segstore segments`: every segment with its counts and details.

use crate::common::{open_reader, printable, CmdResult, Failure, Out};
use clap::Args;
use segstore::SegmentInfo;
use std::path::Path;

/// Arguments of `segments`.
#[derive(Debug, Args)]
pub struct SegmentsArgs {
    /// Print a JSON array of objects {ref, kind, included, excluded, name, description, tags}.
    #[arg(long)]
    pub json: bool,
}

/// One segment as JSON.
pub fn segment_json(info: &SegmentInfo) -> serde_json::Value {
    serde_json::json!({
        "ref": info.segment,
        "kind": info.kind,
        "included": info.included,
        "excluded": info.excluded,
        "name": info.details.name,
        "description": info.details.description,
        "tags": info.details.tags,
    })
}

/// Runs `segments`.
pub fn run(dir: &Path, args: &SegmentsArgs) -> CmdResult {
    let store = open_reader(dir)?;
    let segments = store.snapshot().segments();
    let mut out = Out::new();
    if args.json {
        let all: Vec<serde_json::Value> = segments.iter().map(segment_json).collect();
        let json = serde_json::to_string_pretty(&all)
            .map_err(|e| Failure::runtime(format!("encoding JSON: {e}")))?;
        out.line(json)?;
        return out.finish();
    }
    let header = ["REF", "KIND", "INCLUDED", "EXCLUDED", "NAME", "TAGS"].map(String::from);
    let rows: Vec<[String; 6]> = segments
        .iter()
        .map(|s| {
            [
                printable(&s.segment),
                printable(&s.kind),
                s.included.to_string(),
                s.excluded.to_string(),
                printable(s.details.name.as_deref().unwrap_or("-")),
                if s.details.tags.is_empty() {
                    "-".to_owned()
                } else {
                    printable(&s.details.tags.join(","))
                },
            ]
        })
        .collect();
    let mut widths = [0usize; 6];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            let pad = w.saturating_sub(cell.chars().count());
            if i == 5 {
                line.push_str(cell);
            } else if i == 2 || i == 3 {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
                line.push_str("  ");
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.line(line.trim_end())?;
    }
    if rows.is_empty() {
        out.line("(no segments)")?;
    }
    out.finish()
}
