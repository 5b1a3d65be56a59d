//! `segstore`: the operator's command line over the segstore library.
//!
//! Exit codes: 0 success; 1 runtime error (I/O, corruption, bad input); 2 usage error;
//! 3 cursor mismatch while applying patches. Errors are one line on stderr starting with
//! `error:`. A closed stdout (`segstore export ... | head`) is a quiet, successful stop.

mod cmd_apply;
mod cmd_check;
mod cmd_compact;
mod cmd_demo;
mod cmd_docs;
mod cmd_export;
mod cmd_import;
mod cmd_init;
mod cmd_membership;
mod cmd_meta;
mod cmd_segment;
mod cmd_segments;
mod cmd_serve;
mod cmd_stats;
mod cmd_sync;
mod cmd_token;
mod cmd_verify;
mod common;
mod serve_config;
mod warnings;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use common::{one_line, require_dir, CmdResult, Failure};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// An embedded membership store for synced ("big") segments.
#[derive(Debug, Parser)]
#[command(
    name = "segstore",
    version,
    propagate_version = true,
    after_help = "Exit codes: 0 success, 1 runtime error (I/O, corruption, bad input), \
                  2 usage error, 3 cursor mismatch (apply --format patches).\n\
                  Read commands (check, membership, export, segments, segment show, meta, stats, \
                  verify) open the store read-only and work while a writer holds the lock; \
                  writing commands fail fast when it is held.\n\
                  New here? Run `segstore demo`."
)]
pub struct Cli {
    /// The store directory.
    #[arg(long, global = true, env = "SEGSTORE_DIR", value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// No progress bars and no informational lines (the summaries of init, import and
    /// apply); answers, dry-run reports, warnings and errors are still printed.
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,

    /// Open without reading every table: check each 16 KiB block of a table the first time
    /// a lookup reads it, instead of every table whole at open (`Verification::Structure`).
    /// Opens a large store in milliseconds; a lookup that reads a damaged block then fails
    /// (a Redis `-ERR`, a CLI error) instead of the open failing.
    #[arg(long, global = true, env = "SEGSTORE_VERIFY_ON_READ")]
    pub verify_on_read: bool,

    /// Map tables advised for huge pages (`Residency::PageCacheHugeFolios`): a lookup that
    /// faults a page the page cache lost reads the whole 2 MiB range around it, so tables
    /// come back in 2 MiB pages after reclaim and lookups stay fast on a long-running
    /// `serve`. A first touch on a cold page cache then reads 2 MiB instead of 4 KiB.
    #[arg(long, global = true, env = "SEGSTORE_HUGE_FOLIOS")]
    pub huge_folios: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an empty store (error if one exists).
    Init,
    /// Bulk load keys into one list of a segment, from a file or stdin.
    Import(cmd_import::ImportArgs),
    /// Apply JSON Lines input: each line is one atomic, durable batch, applied in order.
    Apply(cmd_apply::ApplyArgs),
    /// Print `included`, `excluded` or `unknown` for a key in a segment, or for each key of a
    /// file (--keys).
    Check(cmd_check::CheckArgs),
    /// Print every segment that mentions a key, as one JSON object `{"ref": true|false}`.
    Membership(cmd_membership::MembershipArgs),
    /// List segments: ref, kind, included and excluded counts, name, tags.
    Segments(cmd_segments::SegmentsArgs),
    /// Show, set or delete one segment's details.
    #[command(subcommand)]
    Segment(cmd_segment::SegmentCommand),
    /// Print a list's keys, one per line, in byte order.
    Export(cmd_export::ExportArgs),
    /// Show the sync metadata: synchronized_on, its age, and the cursor.
    Meta(cmd_meta::MetaArgs),
    /// Set synchronized_on (default: now).
    MarkSynced(cmd_meta::MarkSyncedArgs),
    /// Compact now and report sizes before and after.
    Compact(cmd_compact::CompactArgs),
    /// Check every file of the store: prints `ok` (exit 0) or every problem found (exit 1).
    Verify,
    /// Files, sizes, key counts, log length and bytes per key.
    Stats(cmd_stats::StatsArgs),
    /// Build a demo store from the bundled samples, showing each command as it runs.
    Demo(cmd_demo::DemoArgs),
    /// Keep the store current from LaunchDarkly's big-segment feed (SDK key in LD_SDK_KEY).
    Sync(cmd_sync::SyncArgs),
    /// Serve the store over the Redis protocol (LaunchDarkly's big-segment layout) as its
    /// writer, until SIGTERM.
    Serve(Box<cmd_serve::ServeArgs>),
    /// Create, list and revoke the access tokens of `serve --http`.
    #[command(subcommand)]
    Token(cmd_token::TokenCommand),
    /// Print a shell completion script for bash, zsh or fish (also elvish, powershell).
    Completions(cmd_docs::CompletionsArgs),
    /// Print the manual page (roff), or write one per command with --out DIR.
    Man(cmd_docs::ManArgs),
}

/// Runs one parsed command line. `dir_given` is true when --dir came from the command line
/// (not SEGSTORE_DIR): `demo` only builds into a directory named explicitly.
pub fn run(cli: Cli, dir_given: bool) -> CmdResult {
    common::set_quiet(cli.quiet);
    common::set_verify_on_read(cli.verify_on_read);
    common::set_huge_folios(cli.huge_folios);
    let dir = cli.dir.as_ref();
    match cli.command {
        Command::Demo(args) => cmd_demo::run(if dir_given { dir } else { None }, &args),
        Command::Init => cmd_init::run(require_dir(dir)?),
        Command::Import(args) => cmd_import::run(require_dir(dir)?, &args),
        Command::Apply(args) => cmd_apply::run(require_dir(dir)?, &args),
        Command::Check(args) => cmd_check::run(require_dir(dir)?, &args),
        Command::Membership(args) => cmd_membership::run(require_dir(dir)?, &args),
        Command::Segments(args) => cmd_segments::run(require_dir(dir)?, &args),
        Command::Segment(sub) => cmd_segment::run(require_dir(dir)?, &sub),
        Command::Export(args) => cmd_export::run(require_dir(dir)?, &args),
        Command::Meta(args) => cmd_meta::run_meta(require_dir(dir)?, &args),
        Command::MarkSynced(args) => cmd_meta::run_mark_synced(require_dir(dir)?, &args),
        Command::Compact(args) => cmd_compact::run(require_dir(dir)?, &args),
        Command::Verify => cmd_verify::run(require_dir(dir)?),
        Command::Stats(args) => cmd_stats::run(require_dir(dir)?, &args),
        Command::Sync(args) => cmd_sync::run(require_dir(dir)?, &args),
        Command::Serve(args) => cmd_serve::run(dir.map(PathBuf::as_path), &args),
        Command::Token(sub) => cmd_token::run(require_dir(dir)?, &sub),
        Command::Completions(args) => cmd_docs::run_completions(&args),
        Command::Man(args) => cmd_docs::run_man(&args),
    }
}

/// Parses `args` (argv, program name first) the way `main` does. `Err` is clap's error, to
/// print and exit with.
pub fn parse<I, T>(args: I) -> Result<(Cli, bool), clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = Cli::command().try_get_matches_from(args)?;
    let dir_given = matches.value_source("dir") == Some(ValueSource::CommandLine);
    let cli = Cli::from_arg_matches(&matches)?;
    Ok((cli, dir_given))
}

/// Prints a failure (if it has a message) and returns its exit code.
pub fn report(failure: Failure) -> ExitCode {
    if let Some(message) = failure.message {
        let _ = writeln!(std::io::stderr(), "error: {}", one_line(&message));
    }
    ExitCode::from(failure.code)
}

fn main() -> ExitCode {
    let (cli, dir_given) = match parse(std::env::args_os()) {
        Ok(parsed) => parsed,
        Err(e) => {
            // Help and version go to stdout with exit 0; usage errors to stderr with exit 2.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(common::EXIT_USAGE));
        }
    };
    match run(cli, dir_given) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => report(failure),
    }
}
