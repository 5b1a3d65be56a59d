//! `segstore check REF KEY`: included, excluded or unknown.

use crate::common::{key_arg, open_reader, warn, CmdResult, Out};
use clap::Args;
use std::ffi::OsString;
use std::path::Path;

/// Arguments of `check`.
#[derive(Debug, Args)]
#[command(
    after_help = "Prints exactly one word on stdout: `included`, `excluded` or `unknown` \
(included beats excluded). An unknown segment answers `unknown`, with a warning on stderr."
)]
pub struct CheckArgs {
    /// The segment ref.
    #[arg(value_name = "REF")]
    pub segment: String,
    /// The key (as stored, e.g. a context hash; or a raw context key with --hash-key).
    #[arg(value_name = "KEY")]
    pub key: OsString,
    /// KEY is a raw context key: look up its LaunchDarkly context hash.
    #[arg(long)]
    pub hash_key: bool,
}

/// Runs `check`.
pub fn run(dir: &Path, args: &CheckArgs) -> CmdResult {
    let key = key_arg(&args.key, args.hash_key)?;
    let store = open_reader(dir)?;
    let snapshot = store.snapshot();
    if snapshot.segment(&args.segment).is_none() {
        warn(format_args!(
            "no segment {:?} in {}",
            args.segment,
            dir.display()
        ));
    }
    let mut out = Out::new();
    out.line(snapshot.check(&args.segment, &key).as_str())?;
    out.finish()
}
