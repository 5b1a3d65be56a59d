//! `segstore token create|list|revoke`: the access tokens of `serve --http`.

use crate::common::{format_utc, printable, warn, CmdResult, Failure, Out};
use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use segstore::serve::access::{default_path, Policy, Role, TokenError, TokenInfo, TokenStore};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The token subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it on stdout, alone and only this once (only its hash is
    /// kept).
    Create(CreateArgs),
    /// List the tokens: name, creation time and what each may do. Never a token or a hash.
    List(ListArgs),
    /// Revoke a token by name. A running `serve --http` refuses it from its next request.
    Revoke(RevokeArgs),
}

/// Where the token file is.
#[derive(Debug, Args)]
pub struct TokensFile {
    /// The token file (default: the store directory's path with `.tokens` appended, beside
    /// it: /var/lib/segstore → /var/lib/segstore.tokens).
    #[arg(long = "tokens", value_name = "FILE")]
    pub path: Option<PathBuf>,
}

impl TokensFile {
    fn resolve(&self, dir: &Path) -> PathBuf {
        self.path.clone().unwrap_or_else(|| default_path(dir))
    }
}

/// A built-in role, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// viewSegment on every segment.
    Reader,
    /// createSegment and updateIncluded on proj/*:env/*:segment/* (what partner tools need).
    Writer,
    /// Every action on every segment.
    Admin,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Role {
        match role {
            RoleArg::Reader => Role::Reader,
            RoleArg::Writer => Role::Writer,
            RoleArg::Admin => Role::Admin,
        }
    }
}

/// Arguments of `token create`.
#[derive(Debug, Args)]
#[command(
    group(ArgGroup::new("grant").required(true).args(["role", "policy"])),
    after_help = "The policy file is a JSON array of role statements: \
{\"effect\": \"allow\"|\"deny\", \"actions\"|\"notActions\": [...], \
\"resources\"|\"notResources\": [\"proj/*:env/*:segment/*\", ...]}. Actions: createSegment, \
updateIncluded, updateExcluded, updateName, updateDescription, updateTags, deleteSegment, \
viewSegment, or *. Deny beats allow; what no statement allows is denied."
)]
pub struct CreateArgs {
    /// The token's name: 1 to 128 of A-Z a-z 0-9 . _ - (unique).
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// A built-in role.
    #[arg(long, value_enum, value_name = "ROLE")]
    pub role: Option<RoleArg>,
    /// A policy file (`-` for stdin).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    #[command(flatten)]
    pub tokens: TokensFile,
}

/// Arguments of `token list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print a JSON array of objects {name, created_ms, created, role, policy}.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub tokens: TokensFile,
}

/// Arguments of `token revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The token's name.
    #[arg(value_name = "NAME")]
    pub name: String,
    #[command(flatten)]
    pub tokens: TokensFile,
}

/// Runs a token subcommand.
pub fn run(dir: &Path, command: &TokenCommand) -> CmdResult {
    match command {
        TokenCommand::Create(args) => create(dir, args),
        TokenCommand::List(args) => list(dir, args),
        TokenCommand::Revoke(args) => revoke(dir, args),
    }
}

/// A library error as a failure: a bad name is a usage error, the rest runtime errors.
fn failure(e: TokenError) -> Failure {
    match e {
        TokenError::InvalidName { .. } => Failure::usage(e.to_string()),
        _ => Failure::runtime(e.to_string()),
    }
}

fn read_policy(path: &Path) -> CmdResult<Policy> {
    let (name, text) = if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Failure::runtime(format!("reading the policy from stdin: {e}")))?;
        ("<stdin>".to_owned(), text)
    } else {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Failure::runtime(format!("cannot read policy file {name}: {e}")))?;
        (name, text)
    };
    Policy::from_json(&text).map_err(|e| Failure::usage(format!("{name}: {e}")))
}

fn create(dir: &Path, args: &CreateArgs) -> CmdResult {
    let policy = match (&args.policy, args.role) {
        (Some(path), _) => read_policy(path)?,
        (None, Some(role)) => Policy::role(role.into()),
        (None, None) => return Err(Failure::usage("pass --role or --policy")),
    };
    let path = args.tokens.resolve(dir);
    if args.tokens.path.is_none() && !dir.join("MANIFEST").exists() {
        warn(format!(
            "no store at {} yet; the token goes into {}, which `serve --http --dir {}` reads",
            dir.display(),
            path.display(),
            dir.display()
        ));
    }
    let token = TokenStore::create(&path, &args.name, policy).map_err(failure)?;
    let mut out = Out::new();
    out.line(token)?;
    out.finish()
}

/// The policy in a few words: the role's name when it is a built-in one.
fn policy_summary(policy: &Policy) -> String {
    match policy.as_role() {
        Some(role) => format!("role {role}: {}", policy.summary()),
        None => policy.summary(),
    }
}

fn token_json(info: &TokenInfo) -> serde_json::Value {
    serde_json::json!({
        "name": info.name,
        "created_ms": info.created_ms,
        "created": format_utc(info.created_ms),
        "role": info.policy.as_role().map(|r| r.name()),
        "policy": info.policy.to_value(),
    })
}

fn list(dir: &Path, args: &ListArgs) -> CmdResult {
    let path = args.tokens.resolve(dir);
    let tokens = TokenStore::load(&path).map_err(failure)?.list();
    let mut out = Out::new();
    if args.json {
        let all: Vec<serde_json::Value> = tokens.iter().map(token_json).collect();
        let json = serde_json::to_string_pretty(&all)
            .map_err(|e| Failure::runtime(format!("encoding JSON: {e}")))?;
        out.line(json)?;
        return out.finish();
    }
    let header = ["NAME", "CREATED", "POLICY"].map(String::from);
    let rows: Vec<[String; 3]> = tokens
        .iter()
        .map(|t| {
            [
                printable(&t.name),
                format_utc(t.created_ms),
                printable(&policy_summary(&t.policy)),
            ]
        })
        .collect();
    let mut widths = [0usize; 3];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (cell, w) in row.iter().zip(widths) {
            line.push_str(cell);
            line.push_str(&" ".repeat(w.saturating_sub(cell.chars().count()) + 2));
        }
        out.line(line.trim_end())?;
    }
    if rows.is_empty() {
        out.line(format!("(no tokens in {})", path.display()))?;
    }
    out.finish()
}

fn revoke(dir: &Path, args: &RevokeArgs) -> CmdResult {
    let path = args.tokens.resolve(dir);
    TokenStore::revoke(&path, &args.name).map_err(failure)?;
    let mut out = Out::new();
    out.line(format_args!("revoked token {}", printable(&args.name)))?;
    out.finish()
}
