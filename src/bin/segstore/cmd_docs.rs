//! `segstore completions SHELL` and `segstore man`: shell completions and manual pages, both
//! generated from the same definitions as `--help`.

use crate::common::{quiet, CmdResult, Failure, Out};
use clap::{Args, CommandFactory};
use clap_complete::Shell;
use std::path::{Path, PathBuf};

/// Arguments of `completions`.
#[derive(Debug, Args)]
#[command(after_help = "Install, for example:\n  \
bash  segstore completions bash > ~/.local/share/bash-completion/completions/segstore\n  \
zsh   segstore completions zsh > \"${fpath[1]}/_segstore\"\n  \
fish  segstore completions fish > ~/.config/fish/completions/segstore.fish")]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: Shell,
}

/// Arguments of `man`.
#[derive(Debug, Args)]
#[command(
    after_help = "Without --out, prints the page of `segstore` itself in roff on stdout \
(`segstore man | man -l -`). With --out DIR, writes segstore.1 and one page per subcommand \
(segstore-import.1, ...) into DIR, which must exist."
)]
pub struct ManArgs {
    /// Write every page into DIR instead of printing the main page.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Runs `completions`.
pub fn run_completions(args: &CompletionsArgs) -> CmdResult {
    let mut command = crate::Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "segstore", &mut script);
    let mut out = Out::new();
    out.bytes(&script)?;
    out.finish()
}

/// One command's page, with `.TH` as its first line: the renderer puts its definition of the
/// `Aq` quote string first, and man pages conventionally open with `.TH`, so that line moves
/// to the front (the string is still defined before any text uses it).
fn render_page(command: clap::Command) -> std::io::Result<Vec<u8>> {
    let mut page = Vec::new();
    clap_mangen::Man::new(command).render(&mut page)?;
    let title_at = page
        .split_inclusive(|&b| b == b'\n')
        .scan(0, |offset, line| {
            let at = *offset;
            *offset += line.len();
            Some((at, line))
        })
        .find(|(_, line)| line.starts_with(b".TH "));
    let Some((at, title)) = title_at else {
        return Ok(page);
    };
    let mut reordered = Vec::with_capacity(page.len());
    reordered.extend_from_slice(title);
    reordered.extend(page.iter().take(at));
    reordered.extend(page.iter().skip(at + title.len()));
    Ok(reordered)
}

/// Writes the page of `command` and of each of its subcommands into `dir`, named as `man`
/// looks them up: `segstore.1`, `segstore-import.1`, `segstore-segment-show.1`.
fn write_pages(command: clap::Command, dir: &Path) -> std::io::Result<()> {
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub.clone(), dir)?;
    }
    let file_name = clap_mangen::Man::new(command.clone()).get_filename();
    std::fs::write(dir.join(file_name), render_page(command)?)
}

/// Runs `man`.
pub fn run_man(args: &ManArgs) -> CmdResult {
    let command = crate::Cli::command();
    match &args.out {
        Some(dir) => {
            // Built, so that each subcommand carries its full name (`segstore-import`).
            let mut command = command.disable_help_subcommand(true);
            command.build();
            write_pages(command, dir).map_err(|e| {
                Failure::runtime(format!("writing manual pages into {}: {e}", dir.display()))
            })?;
            if !quiet() {
                let mut out = Out::new();
                out.line(format_args!(
                    "wrote the manual pages into {}",
                    dir.display()
                ))?;
                out.finish()?;
            }
            Ok(())
        }
        None => {
            let page = render_page(command)
                .map_err(|e| Failure::runtime(format!("rendering the manual page: {e}")))?;
            let mut out = Out::new();
            out.bytes(&page)?;
            out.finish()
        }
    }
}
