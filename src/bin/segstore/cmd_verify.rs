//! `segstore verify`: check every file of the store.

use crate::common::{one_line, spinner, CmdResult, Failure, Out};
use std::path::Path;

/// Runs `verify`: prints `ok`, or every problem (one per line on stdout) and exits 1.
pub fn run(dir: &Path) -> CmdResult {
    let bar = spinner("verifying");
    let problems = segstore::verify(dir);
    bar.finish_and_clear();
    let problems = problems?;
    let mut out = Out::new();
    if problems.is_empty() {
        out.line("ok")?;
        return out.finish();
    }
    for problem in &problems {
        out.line(format_args!("problem: {}", one_line(&problem.to_string())))?;
    }
    out.finish()?;
    Err(Failure::runtime(format!(
        "verify found {} problem{} in {}",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        dir.display()
    )))
}
