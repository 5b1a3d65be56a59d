//! `segstore token create|list|revoke`: the access tokens of `serve --http`.

use crate::common::CmdResult;
use clap::Subcommand;
use std::path::Path;

/// The token subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {}

/// Runs a token subcommand.
pub fn run(_dir: &Path, command: &TokenCommand) -> CmdResult {
    match *command {}
}
