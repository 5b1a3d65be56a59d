//! `segstore init`: create an empty store.

use crate::common::{quiet, writer_options, CmdResult, Out};
use segstore::Store;
use std::path::Path;

/// Creates the store; an existing one is an error.
pub fn run(dir: &Path) -> CmdResult {
    let store = Store::create(dir, writer_options(&Default::default()))?;
    drop(store);
    if quiet() {
        return Ok(());
    }
    let mut out = Out::new();
    out.line(format_args!("created an empty store in {}", dir.display()))?;
    out.finish()
}
