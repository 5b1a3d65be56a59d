//! `segstore segment show|set|delete REF`: one segment's details.

use crate::cmd_segments::segment_json;
use crate::common::{open_reader, open_writer, printable, CmdResult, Failure, Out, WriterArgs};
use clap::{Args, Subcommand};
use segstore::{Details, Error};
use std::path::Path;

/// `segment` subcommands.
#[derive(Debug, Subcommand)]
pub enum SegmentCommand {
    /// Show a segment's kind, details and counts.
    Show(ShowArgs),
    /// Set a segment's name, description or tags. Never touches membership, and no sync
    /// overwrites what it sets.
    Set(SetArgs),
    /// Delete a segment and both its lists.
    Delete(DeleteArgs),
}

/// Arguments of `segment show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The segment ref.
    #[arg(value_name = "REF")]
    pub segment: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `segment set`.
#[derive(Debug, Args)]
#[command(
    after_help = "Options not given keep their current value. --tag replaces the whole tag \
list (repeat it for several tags); --clear-tags empties it."
)]
pub struct SetArgs {
    /// The segment ref.
    #[arg(value_name = "REF")]
    pub segment: String,
    /// Display name (`""` clears it).
    #[arg(long, value_name = "N")]
    pub name: Option<String>,
    /// Description (`""` clears it).
    #[arg(long, value_name = "D")]
    pub description: Option<String>,
    /// A tag; repeat for several. Replaces the current tags.
    #[arg(long = "tag", value_name = "T")]
    pub tags: Vec<String>,
    /// Remove every tag.
    #[arg(long, conflicts_with = "tags")]
    pub clear_tags: bool,
    /// Create the segment (empty, with --kind) if it does not exist.
    #[arg(long)]
    pub create: bool,
    /// Context kind of a segment --create makes.
    #[arg(long, value_name = "KIND", default_value = "user", requires = "create")]
    pub kind: String,
    #[command(flatten)]
    pub writer: WriterArgs,
}

/// Arguments of `segment delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The segment ref.
    #[arg(value_name = "REF")]
    pub segment: String,
    #[command(flatten)]
    pub writer: WriterArgs,
}

/// Runs a `segment` subcommand.
pub fn run(dir: &Path, command: &SegmentCommand) -> CmdResult {
    match command {
        SegmentCommand::Show(args) => show(dir, args),
        SegmentCommand::Set(args) => set(dir, args),
        SegmentCommand::Delete(args) => delete(dir, args),
    }
}

fn show(dir: &Path, args: &ShowArgs) -> CmdResult {
    let store = open_reader(dir)?;
    let info = store
        .snapshot()
        .segment(&args.segment)
        .ok_or_else(|| Failure::from(Error::UnknownSegment(args.segment.clone())))?;
    let mut out = Out::new();
    if args.json {
        let json = serde_json::to_string_pretty(&segment_json(&info))
            .map_err(|e| Failure::runtime(format!("encoding JSON: {e}")))?;
        out.line(json)?;
        return out.finish();
    }
    let d = &info.details;
    out.line(format_args!("ref:         {}", printable(&info.segment)))?;
    out.line(format_args!("kind:        {}", printable(&info.kind)))?;
    out.line(format_args!(
        "name:        {}",
        printable(d.name.as_deref().unwrap_or("-"))
    ))?;
    out.line(format_args!(
        "description: {}",
        printable(d.description.as_deref().unwrap_or("-"))
    ))?;
    let tags = if d.tags.is_empty() {
        "-".to_owned()
    } else {
        printable(&d.tags.join(", "))
    };
    out.line(format_args!("tags:        {tags}"))?;
    out.line(format_args!("included:    {}", info.included))?;
    out.line(format_args!("excluded:    {}", info.excluded))?;
    out.finish()
}

fn set(dir: &Path, args: &SetArgs) -> CmdResult {
    if args.name.is_none() && args.description.is_none() && args.tags.is_empty() && !args.clear_tags
    {
        return Err(Failure::usage(
            "nothing to set: give --name, --description, --tag or --clear-tags",
        ));
    }
    let store = open_writer(dir, &args.writer)?;
    let current = match store.snapshot().segment(&args.segment) {
        Some(info) => info.details,
        None if args.create => {
            store.create_segment(&args.segment, &args.kind)?;
            Details::default()
        }
        None => {
            return Err(Failure::runtime(format!(
                "no segment {:?} (pass --create to create it empty)",
                args.segment
            )))
        }
    };
    let empty_is_none = |v: &String| if v.is_empty() { None } else { Some(v.clone()) };
    let details = Details {
        name: args.name.as_ref().map_or(current.name, empty_is_none),
        description: args
            .description
            .as_ref()
            .map_or(current.description, empty_is_none),
        tags: if args.clear_tags {
            Vec::new()
        } else if args.tags.is_empty() {
            current.tags
        } else {
            args.tags.clone()
        },
    };
    store.set_details(&args.segment, details)?;
    let mut out = Out::new();
    out.line(format_args!(
        "updated the details of {}",
        printable(&args.segment)
    ))?;
    out.finish()
}

fn delete(dir: &Path, args: &DeleteArgs) -> CmdResult {
    let store = open_writer(dir, &args.writer)?;
    store.delete_segment(&args.segment)?;
    let mut out = Out::new();
    out.line(format_args!("deleted segment {}", printable(&args.segment)))?;
    out.finish()
}
