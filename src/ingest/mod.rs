//! Ingestion formats: one line of `apply` input (one JSON value) into segment changes or
//! LaunchDarkly patches.
//!
//! Three families of input are understood, chosen with [`Format`]:
//!
//! - **`updates`**: REST-style target updates for one segment, raw keys:
//!   `{"segment": REF, "kind"?: KIND, "name"?: NAME, "included"?: {"add"?: [..], "remove"?: [..]},
//!   "excluded"?: {..}}`. Unknown fields are rejected so that a typo (`"inclued"`) is an error
//!   rather than a silent no-op. An absent or `null` optional field counts as absent.
//! - **`patches`**: LaunchDarkly's big-segment sync feed: one patch object or an array of them
//!   (one stream event). Keys there are already context hashes, so `hash_keys` does not apply.
//!   Unknown fields are ignored: the feed may grow.
//! - **`partner:TOOL`**: the request body of one of the eight partner tools, see [`partner`].
//!
//! Every key produced passes [`validate_key`], every segment ref [`validate_ref`], every context
//! kind [`validate_kind`]; anything else is a [`ParseError`] that names the JSON pointer of the
//! offending value. In every format an object may not give the same field twice. Parsing never
//! panics, whatever the input.
//!
//! ```
//! use segstore::ingest::{parse_line, Format, Parsed};
//!
//! let format: Format = "updates".parse().unwrap();
//! let line = r#"{"segment": "beta.g1", "included": {"add": ["user-key"]}}"#;
//! let Parsed::Changes(changes) = parse_line(&format, line, true).unwrap() else { panic!() };
//! assert_eq!(changes[0].segment, "beta.g1");
//! assert_eq!(changes[0].included.add, vec![b"CEXjZY7cHJG/ydFy7q4+YEFwVrG3/pkJwA4FAjrbfx0=".to_vec()]);
//! ```

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

use crate::change::{Patch, SegmentChange};
use crate::key::{
    context_hash, validate_key, validate_kind, validate_ref, MAX_KEY_LEN, MAX_NAME_LEN,
};

pub mod partner;
mod strict;

/// Why a line of input was rejected. Each message says what is wrong and where: the JSON
/// pointer of the field (RFC 6901, `""` being the whole document) and, for keys, a preview of
/// the key truncated to 60 characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The line is not one well-formed JSON value. The message is serde_json's and includes
    /// the line and column.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// A field is missing, has the wrong type, is not allowed, or has an unacceptable value.
    #[error("{}: {detail}", describe_path(.path))]
    Field {
        /// JSON pointer of the field (`""` for the whole document).
        path: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A key is not a string, is empty, or is longer than [`MAX_KEY_LEN`] bytes.
    #[error("invalid key at {path} (item {index} of its list): {detail}")]
    Key {
        /// JSON pointer of the key.
        path: String,
        /// Position of the key within its array.
        index: usize,
        /// What is wrong with it, with a preview of the key.
        detail: String,
    },
    /// The keys of the line alone encode to more than one log record may hold, so it can never
    /// be applied as one atomic write. Reported as soon as the limit is passed.
    #[error("batch too large: its keys encode to more than {limit} bytes, the limit of one atomic write; split the line")]
    TooLarge {
        /// The limit, in encoded bytes (a 4-byte length and the bytes of each key).
        limit: usize,
    },
    /// `partner:TOOL` names no known tool.
    #[error("unknown partner tool {0:?}; valid tools are {tools}", tools = partner::Tool::valid_names())]
    UnknownTool(String),
    /// The format name is none of the known ones.
    #[error("unknown input format {0:?}; valid formats are {formats}", formats = Format::valid_names())]
    UnknownFormat(String),
}

fn describe_path(path: &str) -> String {
    if path.is_empty() {
        "at the top level".to_string()
    } else {
        format!("at {path}")
    }
}

/// The layout of `apply` input lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// REST-style target updates for one segment (`"updates"`), raw keys.
    Updates,
    /// LaunchDarkly big-segment patches (`"patches"`), keys already hashed.
    Patches,
    /// A partner tool's request body (`"partner:amplitude"`, ...), raw keys.
    Partner(partner::Tool),
}

impl Format {
    /// Every format, in the order [`Format::valid_names`] lists them.
    pub fn all() -> impl Iterator<Item = Format> {
        [Format::Updates, Format::Patches]
            .into_iter()
            .chain(partner::Tool::ALL.into_iter().map(Format::Partner))
    }

    /// The accepted names, comma-separated: `updates, patches, partner:amplitude, ...`.
    pub fn valid_names() -> String {
        Format::all()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Format::Updates => f.write_str("updates"),
            Format::Patches => f.write_str("patches"),
            Format::Partner(tool) => write!(f, "partner:{}", tool.cli_name()),
        }
    }
}

impl FromStr for Format {
    type Err = ParseError;

    /// Parses `updates`, `patches` or `partner:TOOL` (see [`partner::Tool`] for the names).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "updates" => Ok(Format::Updates),
            "patches" => Ok(Format::Patches),
            _ => match s.strip_prefix("partner:") {
                Some(tool) => tool.parse().map(Format::Partner),
                None => Err(ParseError::UnknownFormat(s.to_string())),
            },
        }
    }
}

/// What one line of input holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Unguarded segment changes (`updates` and partner formats).
    Changes(Vec<SegmentChange>),
    /// Cursor-guarded patches (`patches`), in feed order.
    Patches(Vec<Patch>),
}

/// Parses one line (one JSON value) of `apply` input.
///
/// `hash_keys`: replace every raw key by [`context_hash`]`(key)`, the form LaunchDarkly SDKs
/// query with. It applies to `updates` and partner formats; keys in `patches` are already
/// context hashes and are taken as they are whatever `hash_keys` says. When hashing, the raw
/// key must still be non-empty, but it may be longer than [`MAX_KEY_LEN`] since only the
/// 44-byte hash is stored.
///
/// A partner body yields one change per cohort it names (normally exactly one; an empty
/// `batch` yields none).
///
/// # Errors
/// [`ParseError::Json`] when the line is not one JSON value (an empty line included);
/// [`ParseError::Field`] when an object gives the same field twice (JSON allows it, but which
/// one would count is a guess), or when it does not fit the format; [`ParseError::Key`] for a
/// bad key.
pub fn parse_line(format: &Format, line: &str, hash_keys: bool) -> Result<Parsed, ParseError> {
    parse_document(
        format,
        &mut serde_json::Deserializer::from_str(line),
        hash_keys,
        usize::MAX,
    )
}

/// As [`parse_line`], for a line that must apply as one atomic write (`segstore apply`):
/// reading stops with [`ParseError::TooLarge`] as soon as the keys read encode to more than
/// one log record may hold, since such a batch could never be written. The keys of a line are
/// then never held beyond that size, however long the line (`updates` and `patches`; a partner
/// body is read whole).
pub fn parse_one_batch(format: &Format, line: &str, hash_keys: bool) -> Result<Parsed, ParseError> {
    parse_document(
        format,
        &mut serde_json::Deserializer::from_str(line),
        hash_keys,
        strict::MAX_ENCODED_KEYS,
    )
}

/// As [`parse_one_batch`], reading the document from `reader` as it parses, so that a huge
/// line need not be held in memory first. The reader must end where the document does
/// (nothing but whitespace may follow it).
pub fn parse_one_batch_from(
    format: &Format,
    reader: impl std::io::Read,
    hash_keys: bool,
) -> Result<Parsed, ParseError> {
    parse_document(
        format,
        &mut serde_json::Deserializer::from_reader(reader),
        hash_keys,
        strict::MAX_ENCODED_KEYS,
    )
}

fn parse_document<'de, R: serde_json::de::Read<'de>>(
    format: &Format,
    de: &mut serde_json::Deserializer<R>,
    hash_keys: bool,
    key_limit: usize,
) -> Result<Parsed, ParseError> {
    match format {
        Format::Updates => {
            strict::parse_update(de, hash_keys, key_limit).map(|c| Parsed::Changes(vec![c]))
        }
        Format::Patches => strict::parse_patches(de, key_limit).map(Parsed::Patches),
        Format::Partner(tool) => {
            let value = strict::parse_value(de)?;
            partner::parse(*tool, value, hash_keys).map(Parsed::Changes)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shared helpers (also used by `partner`).

pub(crate) fn field_err(path: impl Into<String>, detail: impl Into<String>) -> ParseError {
    ParseError::Field {
        path: path.into(),
        detail: detail.into(),
    }
}

/// "a string", "null", ... for messages.
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(crate) fn wrong_type(path: &str, expected: &str, found: &Value) -> ParseError {
    field_err(
        path,
        format!("expected {expected}, found {}", type_name(found)),
    )
}

/// Escapes one reference token of a JSON pointer (RFC 6901).
pub(crate) fn escape_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// A string for messages: quoted, cut to 60 characters with its full byte length noted.
pub(crate) fn preview(s: &str) -> String {
    const MAX_CHARS: usize = 60;
    match s.char_indices().nth(MAX_CHARS) {
        None => format!("{s:?}"),
        Some((cut, _)) => {
            let head = s.get(..cut).unwrap_or_default();
            format!("{head:?}… ({} bytes)", s.len())
        }
    }
}

/// Turns a raw key string into a stored key, hashing it if asked. `path` names where it was
/// found, for the error (made only on an error).
pub(crate) fn make_key(
    raw: &str,
    path: impl Fn() -> String,
    index: usize,
    hash: bool,
) -> Result<std::borrow::Cow<'_, [u8]>, ParseError> {
    let err = |detail: String| ParseError::Key {
        path: path(),
        index,
        detail,
    };
    if raw.is_empty() {
        return Err(err(format!("empty key: keys are 1..={MAX_KEY_LEN} bytes")));
    }
    if !hash && raw.len() > MAX_KEY_LEN {
        return Err(err(format!(
            "key {} is {} bytes, the limit is {MAX_KEY_LEN}",
            preview(raw),
            raw.len()
        )));
    }
    let key = if hash {
        std::borrow::Cow::Owned(context_hash(raw).into_bytes())
    } else {
        std::borrow::Cow::Borrowed(raw.as_bytes())
    };
    validate_key(&key).map_err(|e| err(e.to_string()))?;
    Ok(key)
}

/// Checks a segment ref found at `path`.
pub(crate) fn check_ref(segment: &str, path: &str) -> Result<(), ParseError> {
    validate_ref(segment).map_err(|e| field_err(path, e.to_string()))
}

/// Checks a context kind found at `path`.
pub(crate) fn check_kind(kind: &str, path: &str) -> Result<(), ParseError> {
    validate_kind(kind).map_err(|e| field_err(path, e.to_string()))
}

/// An optional string field: absent or `null` is `None`.
fn opt_string(value: Option<Value>, path: &str) -> Result<Option<String>, ParseError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(wrong_type(path, "a string", &other)),
    }
}

// ---------------------------------------------------------------------------------------------
// updates

/// The fields of an `updates` line (read in `strict`).
const UPDATE_FIELDS: [&str; 5] = ["segment", "kind", "name", "included", "excluded"];

// ---------------------------------------------------------------------------------------------
// patches

/// A version string: any string up to [`MAX_NAME_LEN`] bytes, `""` included.
fn check_version(version: &str, path: &str) -> Result<(), ParseError> {
    if version.len() > MAX_NAME_LEN {
        return Err(field_err(
            path,
            format!(
                "version {} is {} bytes, the limit is {MAX_NAME_LEN}",
                preview(version),
                version.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;

// ---------------------------------------------------------------------------------------------
// target updates for one named segment (the REST routes of `serve --http`)

/// Parses a target update for one segment whose ref is known from elsewhere (the request's
/// route): `{"included": {"add": [..], "remove": [..]}, "excluded": {..}}`, with the same rules
/// as the `updates` format (unknown fields are rejected; absent lists are empty). `hash_keys`
/// as in [`parse_line`].
///
/// ```
/// use segstore::ingest::parse_targets;
/// let change = parse_targets(r#"{"included": {"add": ["u1"]}}"#, "beta.g1", false)?;
/// assert_eq!(change.segment, "beta.g1");
/// assert_eq!(change.included.add, vec![b"u1".to_vec()]);
/// # Ok::<(), segstore::ingest::ParseError>(())
/// ```
pub fn parse_targets(
    body: &str,
    segment: &str,
    hash_keys: bool,
) -> Result<SegmentChange, ParseError> {
    // The body is the `updates` format without its `segment` field: it is checked as JSON
    // here (duplicate fields refused), then read by the `updates` rules with the route's ref.
    let mut de = serde_json::Deserializer::from_str(body);
    let value = strict::parse_value(&mut de)?;
    let mut obj = match value {
        Value::Object(obj) => obj,
        other => return Err(wrong_type("", "an object", &other)),
    };
    if let Some(unknown) = obj.keys().find(|k| *k != "included" && *k != "excluded") {
        return Err(field_err(
            format!("/{}", escape_token(unknown)),
            "unknown field; the fields here are included, excluded",
        ));
    }
    obj.insert("segment".to_owned(), Value::String(segment.to_owned()));
    match parse_line(&Format::Updates, &Value::Object(obj).to_string(), hash_keys)? {
        Parsed::Changes(mut changes) if changes.len() == 1 => {
            changes.pop().ok_or_else(|| field_err("", "no change"))
        }
        _ => Err(field_err("", "not a target update")),
    }
}
