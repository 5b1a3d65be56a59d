//! `segstore demo`: a newcomer's tour. Builds a store from the bundled samples, running the
//! real commands and printing each one before its output.

use crate::common::{CmdResult, Failure, Out};
use clap::Args;
use std::path::{Path, PathBuf};

/// Arguments of `demo`.
#[derive(Debug, Args)]
#[command(
    after_help = "Without --dir the store is built in a temporary directory and removed \
at the end; with --dir DIR (which must not hold a store yet) it is kept for you to explore, e.g. \
`segstore --dir DIR segments`. SEGSTORE_DIR is ignored here."
)]
pub struct DemoArgs {}

/// The bundled samples: file name and contents.
const SAMPLES: [(&str, &str); 4] = [
    (
        "beta-users.txt",
        include_str!("../../../samples/beta-users.txt"),
    ),
    (
        "updates.jsonl",
        include_str!("../../../samples/updates.jsonl"),
    ),
    (
        "patches.jsonl",
        include_str!("../../../samples/patches.jsonl"),
    ),
    (
        "amplitude.jsonl",
        include_str!("../../../samples/amplitude.jsonl"),
    ),
];

/// One step: what it shows, and the arguments after `segstore --dir D`.
struct Step {
    say: &'static str,
    args: Vec<String>,
    /// The step is expected to fail (to show an error); the demo carries on.
    expect_failure: bool,
}

fn step(say: &'static str, args: &[&str]) -> Step {
    Step {
        say,
        args: args.iter().map(|s| (*s).to_owned()).collect(),
        expect_failure: false,
    }
}

fn path_arg(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

/// Runs the demo.
pub fn run(dir: Option<&PathBuf>, _args: &DemoArgs) -> CmdResult {
    let work = tempfile::Builder::new()
        .prefix("segstore-demo")
        .tempdir()
        .map_err(|e| Failure::runtime(format!("creating a temporary directory: {e}")))?;
    let samples = work.path().join("samples");
    std::fs::create_dir_all(&samples)
        .map_err(|e| Failure::runtime(format!("creating {}: {e}", samples.display())))?;
    for (name, text) in SAMPLES {
        let path = samples.join(name);
        std::fs::write(&path, text)
            .map_err(|e| Failure::runtime(format!("writing {}: {e}", path.display())))?;
    }
    let store = match dir {
        Some(d) => d.clone(),
        None => work.path().join("store"),
    };
    let users = path_arg(&samples, "beta-users.txt");
    let updates = path_arg(&samples, "updates.jsonl");
    let patches = path_arg(&samples, "patches.jsonl");
    let amplitude = path_arg(&samples, "amplitude.jsonl");
    let mut cursor_step = step(
        "Replaying the same patches is refused: the cursor is at \"3\" (exit code 3, nothing applied).",
        &["apply", "--format", "patches", &patches],
    );
    cursor_step.expect_failure = true;
    let steps = vec![
        step("Create an empty store.", &["init"]),
        step(
            "Bulk load a segment exported from Amplitude: 1,000 raw user keys, stored as LaunchDarkly context hashes.",
            &["import", "--segment", "beta-users.g1", "--hash-keys", &users],
        ),
        step(
            "Apply REST-style updates (JSON Lines, one atomic batch per line; creates vip.g1).",
            &["apply", "--hash-keys", &updates],
        ),
        step(
            "Apply LaunchDarkly sync patches (hashed keys, cursor \"\" -> \"1\" -> \"2\" in one event, then \"3\").",
            &["apply", "--format", "patches", &patches],
        ),
        cursor_step,
        step(
            "Apply an Amplitude cohort payload.",
            &["apply", "--format", "partner:amplitude", "--hash-keys", &amplitude],
        ),
        step("Name a segment locally; no sync will overwrite it.", &[
            "segment", "set", "beta-users.g1", "--name", "Beta users", "--tag", "beta", "--tag", "web",
        ]),
        step("List the segments.", &["segments"]),
        step(
            "A key the import loaded and an update removed:",
            &["check", "beta-users.g1", "user-42446", "--hash-key"],
        ),
        step(
            "A key an update added:",
            &["check", "beta-users.g1", "user-new-1", "--hash-key"],
        ),
        step(
            "A key in the included list and (by a later update) the excluded list: included wins.",
            &["check", "beta-users.g1", "user-19773", "--hash-key"],
        ),
        step(
            "Every segment that mentions a key (what an SDK asks while it evaluates a flag):",
            &["membership", "user-51751", "--hash-key"],
        ),
        step("The sync metadata the patches left.", &["meta"]),
        step(
            "Compact: fold the log into new tables.",
            &["compact"],
        ),
        step("Check every checksum and cross-reference.", &["verify"]),
        step("Files, sizes and bytes per key.", &["stats"]),
    ];
    let store_arg = store.display().to_string();
    for s in &steps {
        {
            let mut out = Out::new();
            out.line("")?;
            out.line(format_args!("# {}", s.say))?;
            out.line(format_args!(
                "$ segstore --dir {} {}",
                shell_quote(&store_arg),
                s.args
                    .iter()
                    .map(|a| shell_quote(a))
                    .collect::<Vec<_>>()
                    .join(" ")
            ))?;
            out.finish()?;
        }
        let argv = ["segstore", "--dir", store_arg.as_str()]
            .into_iter()
            .map(str::to_owned)
            .chain(s.args.iter().cloned());
        let (cli, given) =
            crate::parse(argv).map_err(|e| Failure::runtime(format!("demo step: {e}")))?;
        match crate::run(cli, given) {
            Ok(()) if s.expect_failure => {
                return Err(Failure::runtime(
                    "demo: the step was expected to fail but succeeded",
                ))
            }
            Ok(()) => {}
            Err(f) if s.expect_failure => {
                let mut out = Out::new();
                out.line(format_args!(
                    "(exit code {}) error: {}",
                    f.code,
                    f.message.unwrap_or_default()
                ))?;
                out.finish()?;
            }
            Err(f) => return Err(f.context("demo")),
        }
    }
    let mut out = Out::new();
    out.line("")?;
    match dir {
        Some(d) => out.line(format_args!(
            "Done. The store is in {}; try `segstore --dir {} export vip.g1`.",
            d.display(),
            shell_quote(&d.display().to_string())
        ))?,
        None => out.line(
            "Done. The store was in a temporary directory, now removed; pass --dir DIR to keep it.",
        )?,
    }
    out.finish()
}

fn shell_quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=+,@".contains(c))
    {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}
