//! `segstore export REF`: a list's keys in byte order.

use crate::common::{open_reader, warn, CmdResult, Out};
use clap::Args;
use segstore::List;
use std::path::Path;

/// Arguments of `export`.
#[derive(Debug, Args)]
#[command(
    after_help = "Prints the keys one per line in byte order, as `segstore import` reads \
them. A key containing a line break cannot round-trip through lines: it is printed as is, with a \
warning on stderr."
)]
pub struct ExportArgs {
    /// The segment ref.
    #[arg(value_name = "REF")]
    pub segment: String,
    /// Export the excluded list instead of the included list.
    #[arg(long)]
    pub excluded: bool,
}

/// Runs `export`.
pub fn run(dir: &Path, args: &ExportArgs) -> CmdResult {
    let list = if args.excluded {
        List::Excluded
    } else {
        List::Included
    };
    let store = open_reader(dir)?;
    let snapshot = store.snapshot();
    let keys = snapshot.export(&args.segment, list)?;
    let mut out = Out::new();
    let mut broken = 0u64;
    for key in keys {
        if key.contains(&b'\n') || key.contains(&b'\r') {
            broken += 1;
        }
        out.bytes(&key)?;
        out.bytes(b"\n")?;
    }
    out.finish()?;
    if broken > 0 {
        warn(format_args!(
            "{broken} keys contain a line break and will not read back as one key per line"
        ));
    }
    Ok(())
}
