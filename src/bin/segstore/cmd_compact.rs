//! `segstore compact`: compact now.

use crate::common::{format_bytes, spinner, writer_options, CmdResult, Out, WriterArgs};
use clap::Args;
use segstore::{Options, Store};
use std::path::Path;
use std::time::Instant;

/// Arguments of `compact`.
#[derive(Debug, Args)]
pub struct CompactArgs {
    #[command(flatten)]
    pub writer: WriterArgs,
}

/// Runs `compact`.
pub fn run(dir: &Path, args: &CompactArgs) -> CmdResult {
    let options = Options {
        auto_compact: false,
        ..writer_options(&args.writer)
    };
    let store = Store::open(dir, options)?;
    let bar = spinner("compacting");
    let started = Instant::now();
    let stats = store.compact();
    bar.finish_and_clear();
    let stats = stats?;
    let seconds = started.elapsed().as_secs_f64();
    let mut out = Out::new();
    out.line(format_args!(
        "before:         {}",
        format_bytes(stats.bytes_before)
    ))?;
    out.line(format_args!(
        "after:          {}",
        format_bytes(stats.bytes_after)
    ))?;
    out.line(format_args!("tables written: {}", stats.tables_written))?;
    out.line(format_args!("files retired:  {}", stats.files_retired))?;
    out.line(format_args!("seconds:        {seconds:.3}"))?;
    out.finish()
}
