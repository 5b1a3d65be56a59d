//! `segstore membership KEY`: every segment that mentions a key.

use crate::common::{key_arg, open_reader, CmdResult, Failure, Out};
use crate::warnings;
use clap::Args;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

/// Arguments of `membership`.
#[derive(Debug, Args)]
#[command(
    after_help = "Prints one JSON object with sorted keys: each segment that mentions the \
key maps to true (included) or false (excluded only); `{}` when none does."
)]
pub struct MembershipArgs {
    /// The key (as stored, e.g. a context hash; or a raw context key with --hash-key).
    #[arg(value_name = "KEY")]
    pub key: OsString,
    /// KEY is a raw context key: look up its LaunchDarkly context hash.
    #[arg(long)]
    pub hash_key: bool,
}

/// Runs `membership`.
pub fn run(dir: &Path, args: &MembershipArgs) -> CmdResult {
    let key = key_arg(&args.key, args.hash_key)?;
    let store = open_reader(dir)?;
    let snapshot = store.snapshot();
    warnings::check_lookup_key(&snapshot, &key, args.hash_key);
    let membership = snapshot.membership(&key)?;
    let map: BTreeMap<&str, bool> = membership.iter().collect();
    let json =
        serde_json::to_string(&map).map_err(|e| Failure::runtime(format!("encoding JSON: {e}")))?;
    let mut out = Out::new();
    out.line(json)?;
    out.finish()
}
