//! Request bodies of the eight partner tools that own synced segments.
//!
//! Each tool's layout (the `requestParser` of its integration manifest) is embedded below as a
//! [`Layout`] of JSON pointers. A body becomes a [`SegmentChange`] on the included list of the
//! segment `{integration_key}-{cohort_id}.g1`, where the integration key is the directory of
//! the tool's manifest (`integrations/census-synced-segments/manifest.json` gives
//! `census-synced-segments`). Its `kind` is the body's context kind when the layout has one
//! and the body sets it, else `user`; its `name` is the cohort name (used only when the change
//! creates the segment).
//!
//! Membership is decided in one of three ways:
//!
//! | tool | members | add or remove |
//! |---|---|---|
//! | amplitude, census, segment | `/batch` | per member: `value` is `true` (add) or `false` (remove) |
//! | hightouch, tealium, zeotap | `/members`, `/parameters/members` | per request: `/action` |
//! | heap, rudderstack | separate add and remove arrays | by array |
//!
//! In the `batch` layouts each member also carries its own cohort id and name, so one body may
//! touch several cohorts: it then yields one change per cohort, in order of first appearance. A
//! member without a cohort id belongs to the request's (`/batch/0/...`).
//!
//! Member ids and cohort ids may be JSON strings or integers (written in decimal). Absent or
//! `null` member arrays count as empty, except `batch`, which must be an array.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde_json::Value;

use super::{check_kind, check_ref, field_err, make_key, wrong_type, ParseError};
use crate::change::SegmentChange;
use crate::keys::Keys;

/// A partner tool whose request bodies `apply --format partner:TOOL` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tool {
    /// Amplitude cohorts (`amplitude`).
    Amplitude,
    /// Census (`census`).
    Census,
    /// Heap (`heap`).
    Heap,
    /// Hightouch (`hightouch`).
    Hightouch,
    /// RudderStack (`rudderstack`).
    RudderStack,
    /// Tealium (`tealium`).
    Tealium,
    /// Twilio Segment audiences (`segment`).
    Segment,
    /// Zeotap (`zeotap`).
    Zeotap,
}

impl Tool {
    /// Every tool, in alphabetical order of CLI name.
    pub const ALL: [Tool; 8] = [
        Tool::Amplitude,
        Tool::Census,
        Tool::Heap,
        Tool::Hightouch,
        Tool::RudderStack,
        Tool::Segment,
        Tool::Tealium,
        Tool::Zeotap,
    ];

    /// The name on the command line: `partner:{cli_name}`.
    pub fn cli_name(self) -> &'static str {
        match self {
            Tool::Amplitude => "amplitude",
            Tool::Census => "census",
            Tool::Heap => "heap",
            Tool::Hightouch => "hightouch",
            Tool::RudderStack => "rudderstack",
            Tool::Tealium => "tealium",
            Tool::Segment => "segment",
            Tool::Zeotap => "zeotap",
        }
    }

    /// The product's name, e.g. `Twilio Segment`.
    pub fn display_name(self) -> &'static str {
        match self {
            Tool::Amplitude => "Amplitude",
            Tool::Census => "Census",
            Tool::Heap => "Heap",
            Tool::Hightouch => "Hightouch",
            Tool::RudderStack => "RudderStack",
            Tool::Tealium => "Tealium",
            Tool::Segment => "Twilio Segment",
            Tool::Zeotap => "Zeotap",
        }
    }

    /// The integration key that prefixes the tool's segment keys, e.g.
    /// `census-synced-segments`.
    pub fn integration_key(self) -> &'static str {
        self.layout().integration_key
    }

    /// The segment ref a cohort of this tool syncs into: `{integration_key}-{cohort_id}.g1`.
    ///
    /// ```
    /// use segstore::ingest::partner::Tool;
    /// assert_eq!(Tool::Census.segment_ref("seg-42"), "census-synced-segments-seg-42.g1");
    /// ```
    pub fn segment_ref(self, cohort_id: &str) -> String {
        format!("{}-{cohort_id}.g1", self.integration_key())
    }

    /// The CLI names, comma-separated.
    pub fn valid_names() -> String {
        Tool::ALL.map(Tool::cli_name).join(", ")
    }

    fn layout(self) -> &'static Layout {
        match self {
            Tool::Amplitude => &AMPLITUDE,
            Tool::Census => &CENSUS,
            Tool::Heap => &HEAP,
            Tool::Hightouch => &HIGHTOUCH,
            Tool::RudderStack => &RUDDERSTACK,
            Tool::Tealium => &TEALIUM,
            Tool::Segment => &SEGMENT,
            Tool::Zeotap => &ZEOTAP,
        }
    }
}

impl fmt::Display for Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.cli_name())
    }
}

impl FromStr for Tool {
    type Err = ParseError;

    /// Parses a CLI name (`amplitude`, `census`, ...).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Tool::ALL
            .into_iter()
            .find(|t| t.cli_name() == s)
            .ok_or_else(|| ParseError::UnknownTool(s.to_string()))
    }
}

// ---------------------------------------------------------------------------------------------
// Layouts, transcribed from partner-sync-formats.json (`requestParser` and `source`).

/// Where a tool's request keeps what we need. Paths are JSON pointers into the body; member
/// paths are relative to one member.
struct Layout {
    /// Directory of the tool's `source` manifest.
    integration_key: &'static str,
    /// `contextKindPath`, when the tool has one.
    context_kind: Option<&'static str>,
    /// `cohortIdPath`.
    cohort_id: &'static str,
    /// `cohortNamePath`.
    cohort_name: &'static str,
    /// How members and their add/remove are laid out.
    members: Members,
}

enum Members {
    /// `memberArrayPath` with a per-member `booleanMembershipPath`: `true` adds, `false`
    /// removes. Each member also names its cohort.
    Boolean {
        array: &'static str,
        id: &'static str,
        value: &'static str,
        cohort_id: &'static str,
        cohort_name: &'static str,
    },
    /// `memberArrayPath` with `arrayInclusion`: the string at `action` decides for the whole
    /// array. In `add` it adds; in `remove` it removes; when `remove` is `None`, any other
    /// string removes (the upstream rule: a value the matcher rejects is a removal).
    Action {
        action: &'static str,
        add: &'static [&'static str],
        remove: Option<&'static [&'static str]>,
        array: &'static str,
        id: &'static str,
    },
    /// `addMemberArrayPath` and `removeMemberArrayPath`.
    Lists {
        add: &'static str,
        remove: &'static str,
        id: &'static str,
    },
}

// source: integrations/amplitude/manifest.json
static AMPLITUDE: Layout = Layout {
    integration_key: "amplitude",
    context_kind: None,
    cohort_id: "/batch/0/cohortId",
    cohort_name: "/batch/0/cohortName",
    members: Members::Boolean {
        array: "/batch",
        id: "/userId",
        value: "/value",
        cohort_id: "/cohortId",
        cohort_name: "/cohortName",
    },
};

// source: integrations/census-synced-segments/manifest.json
static CENSUS: Layout = Layout {
    integration_key: "census-synced-segments",
    context_kind: Some("/context_kind"),
    cohort_id: "/batch/0/cohort_id",
    cohort_name: "/batch/0/cohort_name",
    members: Members::Boolean {
        array: "/batch",
        id: "/user_id",
        value: "/value",
        cohort_id: "/cohort_id",
        cohort_name: "/cohort_name",
    },
};

// source: integrations/heap-inbound/manifest.json
static HEAP: Layout = Layout {
    integration_key: "heap-inbound",
    context_kind: None,
    cohort_id: "/heap/data/segment/id",
    cohort_name: "/heap/data/segment/name",
    members: Members::Lists {
        add: "/heap/data/add",
        remove: "/heap/data/remove",
        id: "/id",
    },
};

// source: integrations/hightouch/manifest.json
static HIGHTOUCH: Layout = Layout {
    integration_key: "hightouch",
    context_kind: Some("/contextKind"),
    cohort_id: "/cohortId",
    cohort_name: "/cohortName",
    members: Members::Action {
        action: "/action",
        // matcher "^add$"; anything else removes.
        add: &["add"],
        remove: None,
        array: "/members",
        id: "/integration_distinct_id",
    },
};

// source: integrations/rudderstack/manifest.json
static RUDDERSTACK: Layout = Layout {
    integration_key: "rudderstack",
    context_kind: Some("/contextKind"),
    cohort_id: "/cohortId",
    cohort_name: "/cohortName",
    members: Members::Lists {
        add: "/listData/add",
        remove: "/listData/remove",
        id: "/id",
    },
};

// source: integrations/tealium-synced-segments/manifest.json
static TEALIUM: Layout = Layout {
    integration_key: "tealium-synced-segments",
    context_kind: None,
    cohort_id: "/parameters/tealium_cohort_id",
    cohort_name: "/parameters/tealium_cohort_name",
    members: Members::Action {
        action: "/action",
        // matcher "^(add_member|remove_member)$" treats both as adds upstream, which is taken
        // to be a defect. segstore rule: add_member adds, remove_member removes, and any
        // other action is rejected rather than guessed at.
        add: &["add_member"],
        remove: Some(&["remove_member"]),
        array: "/parameters/members",
        id: "/member_id",
    },
};

// source: integrations/segment-audiences/manifest.json
static SEGMENT: Layout = Layout {
    integration_key: "segment-audiences",
    context_kind: Some("/contextKind"),
    cohort_id: "/batch/0/cohortId",
    cohort_name: "/batch/0/cohortName",
    members: Members::Boolean {
        array: "/batch",
        id: "/userId",
        value: "/value",
        cohort_id: "/cohortId",
        cohort_name: "/cohortName",
    },
};

// source: integrations/zeotap/manifest.json
static ZEOTAP: Layout = Layout {
    integration_key: "zeotap",
    context_kind: None,
    cohort_id: "/parameters/integration_cohort_id",
    cohort_name: "/parameters/integration_cohort_name",
    members: Members::Action {
        action: "/action",
        // matcher "^(members|add_members)$"; anything else (e.g. remove_members) removes.
        add: &["members", "add_members"],
        remove: None,
        array: "/parameters/members",
        id: "/integration_distinct_id",
    },
};

// ---------------------------------------------------------------------------------------------
// Parsing

/// Parses a tool's request body into one change per cohort it names.
pub(crate) fn parse(
    tool: Tool,
    mut body: Value,
    hash: bool,
) -> Result<Vec<SegmentChange>, ParseError> {
    if !body.is_object() {
        return Err(wrong_type("", "an object", &body));
    }
    let layout = tool.layout();
    let kind = match layout.context_kind {
        Some(path) => opt_string_at(&body, path)?.map(|k| (k, path)),
        None => None,
    };
    let kind = match kind {
        Some((kind, path)) => {
            check_kind(&kind, path)?;
            kind
        }
        None => "user".to_string(),
    };
    let cohort_id = opt_id_at(&body, layout.cohort_id)?;
    let cohort_name = opt_string_at(&body, layout.cohort_name)?;

    match &layout.members {
        Members::Boolean {
            array,
            id,
            value,
            cohort_id: member_cohort_id,
            cohort_name: member_cohort_name,
        } => {
            let members = match take(&mut body, array) {
                Value::Array(members) => members,
                Value::Null => {
                    return Err(field_err(*array, "missing: expected an array of members"))
                }
                other => return Err(wrong_type(array, "an array of members", &other)),
            };
            let mut changes: Vec<SegmentChange> = Vec::new();
            let mut by_cohort: HashMap<String, usize> = HashMap::new();
            for (i, mut member) in members.into_iter().enumerate() {
                let base = format!("{array}/{i}");
                let own_id = opt_id_at(&member, member_cohort_id).map_err(|e| rebase(e, &base))?;
                let cohort = match own_id.or_else(|| cohort_id.clone()) {
                    Some(cohort) => cohort,
                    None => {
                        return Err(field_err(
                            format!("{base}{member_cohort_id}"),
                            "missing: the member names no cohort and the request has none",
                        ))
                    }
                };
                let own_name =
                    opt_string_at(&member, member_cohort_name).map_err(|e| rebase(e, &base))?;
                let value_path = format!("{base}{value}");
                let included = match member.pointer(value) {
                    Some(Value::Bool(b)) => *b,
                    None => {
                        return Err(field_err(
                            value_path,
                            "missing: expected true (add) or false (remove)",
                        ))
                    }
                    Some(other) => {
                        return Err(wrong_type(&value_path, "true or false", other));
                    }
                };
                let key = member_key(&mut member, id, &base, i, hash)?;

                let slot = match by_cohort.get(&cohort) {
                    Some(slot) => *slot,
                    None => {
                        let segment = tool.segment_ref(&cohort);
                        check_ref(&segment, &format!("{base}{member_cohort_id}"))?;
                        let mut change = SegmentChange::new(segment);
                        change.kind = Some(kind.clone());
                        if cohort_id.as_deref() == Some(cohort.as_str()) {
                            change.name = cohort_name.clone();
                        }
                        changes.push(change);
                        by_cohort.insert(cohort, changes.len() - 1);
                        changes.len() - 1
                    }
                };
                let Some(change) = changes.get_mut(slot) else {
                    continue; // unreachable: slot indexes `changes`
                };
                if change.name.is_none() {
                    change.name = own_name;
                }
                if included {
                    change.included.add.push(key);
                } else {
                    change.included.remove.push(key);
                }
            }
            Ok(changes)
        }
        Members::Action {
            action,
            add,
            remove,
            array,
            id,
        } => {
            let mut change = new_change(tool, layout, cohort_id, cohort_name, kind)?;
            let adds = match body.pointer(action) {
                Some(Value::String(a)) if add.contains(&a.as_str()) => true,
                Some(Value::String(a)) => match remove {
                    None => false,
                    Some(remove) if remove.contains(&a.as_str()) => false,
                    Some(remove) => {
                        let mut valid = add.to_vec();
                        valid.extend_from_slice(remove);
                        return Err(field_err(
                            *action,
                            format!(
                                "unknown action {}; expected one of {}",
                                super::preview(a),
                                valid.join(", ")
                            ),
                        ));
                    }
                },
                None | Some(Value::Null) => {
                    return Err(field_err(
                        *action,
                        "missing: the action decides between add and remove",
                    ))
                }
                Some(other) => return Err(wrong_type(action, "a string", other)),
            };
            let keys = member_keys(&mut body, array, id, hash)?;
            if adds {
                change.included.add = keys;
            } else {
                change.included.remove = keys;
            }
            Ok(vec![change])
        }
        Members::Lists { add, remove, id } => {
            let mut change = new_change(tool, layout, cohort_id, cohort_name, kind)?;
            change.included.add = member_keys(&mut body, add, id, hash)?;
            change.included.remove = member_keys(&mut body, remove, id, hash)?;
            Ok(vec![change])
        }
    }
}

/// The change for a request-level cohort (layouts without per-member cohorts).
fn new_change(
    tool: Tool,
    layout: &Layout,
    cohort_id: Option<String>,
    cohort_name: Option<String>,
    kind: String,
) -> Result<SegmentChange, ParseError> {
    let Some(cohort_id) = cohort_id else {
        return Err(field_err(
            layout.cohort_id,
            "missing: the cohort id is required",
        ));
    };
    let segment = tool.segment_ref(&cohort_id);
    check_ref(&segment, layout.cohort_id)?;
    let mut change = SegmentChange::new(segment);
    change.kind = Some(kind);
    change.name = cohort_name;
    Ok(change)
}

/// Takes the value at `path` out of `body`, leaving `null`; `null` when absent.
fn take(body: &mut Value, path: &str) -> Value {
    body.pointer_mut(path)
        .map(Value::take)
        .unwrap_or(Value::Null)
}

/// Prefixes a member-relative error path with the member's pointer.
fn rebase(err: ParseError, base: &str) -> ParseError {
    match err {
        ParseError::Field { path, detail } => ParseError::Field {
            path: format!("{base}{path}"),
            detail,
        },
        other => other,
    }
}

/// An optional string at `path`; absent or `null` is `None`.
fn opt_string_at(body: &Value, path: &str) -> Result<Option<String>, ParseError> {
    match body.pointer(path) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(wrong_type(path, "a string", other)),
    }
}

/// An id (string or integer) as a string, or `None`.
fn id_string(value: Value) -> Result<Option<String>, Value> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(Some(n.to_string())),
        other => Err(other),
    }
}

/// An optional cohort id at `path`: a non-empty string or an integer.
fn opt_id_at(body: &Value, path: &str) -> Result<Option<String>, ParseError> {
    let id = match body.pointer(path) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
        Some(other) => return Err(wrong_type(path, "a string or an integer", other)),
    };
    if id.is_empty() {
        return Err(field_err(path, "the cohort id is empty"));
    }
    Ok(Some(id))
}

/// The key of one member at `base`, from its `id` path.
fn member_key(
    member: &mut Value,
    id: &str,
    base: &str,
    index: usize,
    hash: bool,
) -> Result<Vec<u8>, ParseError> {
    let path = format!("{base}{id}");
    let value = take(member, id);
    match id_string(value) {
        Ok(Some(raw)) => make_key(&raw, || path.clone(), index, hash).map(|k| k.into_owned()),
        Ok(None) => Err(ParseError::Key {
            path,
            index,
            detail: "missing: expected the member id as a string or an integer".to_string(),
        }),
        Err(other) => Err(ParseError::Key {
            path,
            index,
            detail: format!(
                "expected a string or an integer, found {}",
                super::type_name(&other)
            ),
        }),
    }
}

/// The keys of the member array at `array`; absent or `null` is empty.
fn member_keys(body: &mut Value, array: &str, id: &str, hash: bool) -> Result<Keys, ParseError> {
    match take(body, array) {
        Value::Null => Ok(Keys::new()),
        Value::Array(members) => members
            .into_iter()
            .enumerate()
            .map(|(i, mut member)| member_key(&mut member, id, &format!("{array}/{i}"), i, hash))
            .collect(),
        other => Err(wrong_type(array, "an array of members", &other)),
    }
}

// ---------------------------------------------------------------------------------------------
// Routing a request body (the partner route of `serve --http`)

impl Tool {
    /// The tool whose integration key (the `{integrationKey}` of the partner route) is `key`.
    pub fn from_integration_key(key: &str) -> Option<Tool> {
        Tool::ALL.into_iter().find(|t| t.integration_key() == key)
    }

    /// The JSON pointer of the environment's client-side ID in the tool's body
    /// (`environmentIdPath` of its layout).
    pub fn environment_id_path(self) -> &'static str {
        match self {
            Tool::Amplitude | Tool::Hightouch | Tool::RudderStack | Tool::Segment => {
                "/environmentId"
            }
            Tool::Census => "/environment_id",
            Tool::Heap => "/parameters/environment_id",
            Tool::Tealium => "/parameters/tealium_project_id",
            Tool::Zeotap => "/parameters/integration_project_id",
        }
    }

    /// The client-side ID a body names, if it is a string there.
    pub fn environment_id(self, body: &Value) -> Option<&str> {
        body.pointer(self.environment_id_path())
            .and_then(Value::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{parse_line, Format, Parsed};

    const EXAMPLES: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/partner-sync-examples.json"
    );

    fn tool_named(name: &str) -> Tool {
        Tool::ALL
            .into_iter()
            .find(|t| t.display_name() == name)
            .unwrap_or_else(|| panic!("no tool named {name}"))
    }

    fn strings(keys: &Keys) -> Vec<String> {
        keys.iter()
            .map(|k| String::from_utf8(k.to_vec()).unwrap())
            .collect()
    }

    fn expected_strings(v: &Value) -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    }

    fn changes(tool: Tool, body: &Value, hash: bool) -> Result<Vec<SegmentChange>, ParseError> {
        let line = serde_json::to_string(body).unwrap();
        assert!(!line.contains('\n'));
        match parse_line(&Format::Partner(tool), &line, hash)? {
            Parsed::Changes(changes) => Ok(changes),
            Parsed::Patches(_) => panic!("a partner format returned patches"),
        }
    }

    fn one(tool: Tool, body: Value) -> SegmentChange {
        let mut all = changes(tool, &body, false).unwrap();
        assert_eq!(all.len(), 1, "{all:?}");
        all.remove(0)
    }

    #[test]
    fn every_example_vector_matches() {
        let text = std::fs::read_to_string(EXAMPLES).unwrap();
        let vectors: Value = serde_json::from_str(&text).unwrap();
        let vectors = vectors.as_array().unwrap();
        assert_eq!(vectors.len(), 11);
        let mut seen = std::collections::BTreeSet::new();
        for (i, v) in vectors.iter().enumerate() {
            let tool = tool_named(v["tool"].as_str().unwrap());
            seen.insert(tool);
            let expected = &v["expected"];
            let got = changes(tool, &v["body"], false)
                .unwrap_or_else(|e| panic!("vector {i} ({tool}): {e}"));
            assert_eq!(got.len(), 1, "vector {i} ({tool}): {got:?}");
            let got = &got[0];
            let ctx = format!("vector {i} ({tool})");
            assert_eq!(got.segment, expected["ref"].as_str().unwrap(), "{ctx}");
            assert_eq!(
                got.segment.strip_suffix(".g1"),
                expected["segmentKey"].as_str(),
                "{ctx}"
            );
            assert_eq!(
                got.kind.as_deref(),
                expected["contextKind"].as_str(),
                "{ctx}"
            );
            assert_eq!(
                strings(&got.included.add),
                expected_strings(&expected["add"]),
                "{ctx}"
            );
            assert_eq!(
                strings(&got.included.remove),
                expected_strings(&expected["remove"]),
                "{ctx}"
            );
            assert!(got.excluded.is_empty(), "{ctx}");
            assert!(got.name.is_some(), "{ctx}: the cohort name is carried");
        }
        assert_eq!(seen.len(), Tool::ALL.len(), "every tool has a vector");
    }

    #[test]
    fn names_come_from_the_cohort_name() {
        let text = std::fs::read_to_string(EXAMPLES).unwrap();
        let vectors: Value = serde_json::from_str(&text).unwrap();
        let want = [
            "Power users",
            "Enterprise accounts",
            "Trial converters",
            "Churn risk",
            "Churn risk",
            "Q1 audience",
            "Loyal shoppers",
            "Loyal shoppers",
            "Test audience",
            "High LTV",
            "High LTV",
        ];
        for (v, want) in vectors.as_array().unwrap().iter().zip(want) {
            let tool = tool_named(v["tool"].as_str().unwrap());
            let got = changes(tool, &v["body"], false).unwrap();
            assert_eq!(got[0].name.as_deref(), Some(want));
        }
    }

    #[test]
    fn hash_keys_hashes_member_ids() {
        let body = serde_json::json!({
            "heap": {"data": {"segment": {"id": "s"}, "add": [{"id": "user-key"}], "remove": [{"id": "user1"}]}}
        });
        let got = changes(Tool::Heap, &body, true).unwrap();
        assert_eq!(
            strings(&got[0].included.add),
            ["CEXjZY7cHJG/ydFy7q4+YEFwVrG3/pkJwA4FAjrbfx0="]
        );
        assert_eq!(
            strings(&got[0].included.remove),
            ["CgQblGLKpKMbrDVn4Lbm/ZEAeH2yq0M9lvbReMq/zpA="]
        );
        assert_eq!(got[0].segment, "heap-inbound-s.g1");
    }

    #[test]
    fn a_batch_spanning_cohorts_yields_one_change_per_cohort() {
        let body = serde_json::json!({
            "batch": [
                {"userId": "a", "cohortId": "c1", "cohortName": "One", "value": true},
                {"userId": "b", "cohortId": "c2", "cohortName": "Two", "value": true},
                {"userId": "c", "cohortId": "c1", "value": false},
                {"userId": "d", "value": true}
            ]
        });
        let got = changes(Tool::Amplitude, &body, false).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].segment, "amplitude-c1.g1");
        assert_eq!(got[0].name.as_deref(), Some("One"));
        assert_eq!(strings(&got[0].included.add), ["a", "d"]);
        assert_eq!(strings(&got[0].included.remove), ["c"]);
        assert_eq!(got[1].segment, "amplitude-c2.g1");
        assert_eq!(got[1].name.as_deref(), Some("Two"));
        assert_eq!(strings(&got[1].included.add), ["b"]);
        assert_eq!(got[1].kind.as_deref(), Some("user"));
    }

    #[test]
    fn an_empty_batch_yields_nothing() {
        let body = serde_json::json!({"environmentId": "e", "batch": []});
        assert!(changes(Tool::Segment, &body, false).unwrap().is_empty());
    }

    #[test]
    fn integer_ids_are_accepted() {
        let body = serde_json::json!({"cohortId": 88, "action": "add", "members": [{"integration_distinct_id": 12345}]});
        let got = one(Tool::Hightouch, body);
        assert_eq!(got.segment, "hightouch-88.g1");
        assert_eq!(strings(&got.included.add), ["12345"]);
        assert_eq!(got.name, None);
    }

    #[test]
    fn context_kind_defaults_to_user_and_is_validated() {
        let body = serde_json::json!({"cohortId": "x", "contextKind": null, "listData": {"add": [{"id": "a"}]}});
        assert_eq!(one(Tool::RudderStack, body).kind.as_deref(), Some("user"));
        let body = serde_json::json!({"cohortId": "x", "contextKind": "", "listData": {}});
        let err = changes(Tool::RudderStack, &body, false).unwrap_err();
        assert!(
            matches!(&err, ParseError::Field { path, .. } if path == "/contextKind"),
            "{err}"
        );
        let body = serde_json::json!({"cohortId": "x", "contextKind": 3});
        assert!(changes(Tool::RudderStack, &body, false).is_err());
    }

    #[test]
    fn actions_outside_the_matchers() {
        // Hightouch and Zeotap follow the upstream rule: an action the matcher rejects removes.
        let body = serde_json::json!({"cohortId": "x", "action": "delete", "members": [{"integration_distinct_id": "a"}]});
        assert_eq!(strings(&one(Tool::Hightouch, body).included.remove), ["a"]);
        let body = serde_json::json!({"action": "members", "parameters": {"integration_cohort_id": "z", "members": [{"integration_distinct_id": "a"}]}});
        assert_eq!(strings(&one(Tool::Zeotap, body).included.add), ["a"]);
        // Tealium names both actions explicitly; anything else is an error.
        let body = serde_json::json!({"action": "drop", "parameters": {"tealium_cohort_id": "t", "members": [{"member_id": "a"}]}});
        let err = changes(Tool::Tealium, &body, false).unwrap_err();
        assert!(
            err.to_string().contains("add_member, remove_member"),
            "{err}"
        );
        // A missing action is never taken as a removal.
        for tool in [Tool::Hightouch, Tool::Tealium, Tool::Zeotap] {
            let body = serde_json::json!({"cohortId": "x", "parameters": {"tealium_cohort_id": "t", "integration_cohort_id": "z"}});
            let err = changes(tool, &body, false).unwrap_err();
            assert!(
                matches!(&err, ParseError::Field { path, .. } if path == "/action"),
                "{tool}: {err}"
            );
        }
    }

    #[test]
    fn malformed_members_are_located() {
        let cases = [
            (
                Tool::Amplitude,
                serde_json::json!({"batch": [{"userId": "a", "cohortId": "c", "value": "yes"}]}),
                "/batch/0/value",
            ),
            (
                Tool::Census,
                serde_json::json!({"batch": [{"user_id": "a", "cohort_id": "c", "value": true}, {"cohort_id": "c", "value": true}]}),
                "/batch/1/user_id",
            ),
            (
                Tool::Segment,
                serde_json::json!({"batch": [{"userId": "a", "value": true}]}),
                "/batch/0/cohortId",
            ),
            (Tool::Segment, serde_json::json!({}), "/batch"),
            (
                Tool::Segment,
                serde_json::json!({"batch": {"userId": "a"}}),
                "/batch",
            ),
            (
                Tool::Heap,
                serde_json::json!({"heap": {"data": {"add": [{"id": "a"}]}}}),
                "/heap/data/segment/id",
            ),
            (
                Tool::Heap,
                serde_json::json!({"heap": {"data": {"segment": {"id": ""}}}}),
                "/heap/data/segment/id",
            ),
            (
                Tool::Heap,
                serde_json::json!({"heap": {"data": {"segment": {"id": "s"}, "remove": [{"id": ""}]}}}),
                "/heap/data/remove/0/id",
            ),
            (
                Tool::RudderStack,
                serde_json::json!({"cohortId": "x", "listData": {"add": [{"id": 1.5}]}}),
                "/listData/add/0/id",
            ),
            (
                Tool::Zeotap,
                serde_json::json!({"action": "add_members", "parameters": {"integration_cohort_id": "z", "members": [{"integration_distinct_id": "x".repeat(4097)}]}}),
                "/parameters/members/0/integration_distinct_id",
            ),
            (
                Tool::Hightouch,
                serde_json::json!({"cohortId": "a\nb", "action": "add"}),
                "/cohortId",
            ),
            (Tool::Hightouch, serde_json::json!([1, 2]), ""),
        ];
        for (tool, body, want) in cases {
            let err = changes(tool, &body, false).unwrap_err();
            let path = match &err {
                ParseError::Field { path, .. } | ParseError::Key { path, .. } => path.clone(),
                other => panic!("{tool}: unexpected {other}"),
            };
            assert_eq!(path, want, "{tool}: {err}");
            let message = err.to_string();
            assert!(message.len() < 400, "{message}");
        }
    }

    #[test]
    fn a_long_raw_key_is_fine_when_hashed() {
        let body =
            serde_json::json!({"cohortId": "x", "listData": {"add": [{"id": "k".repeat(5000)}]}});
        let got = changes(Tool::RudderStack, &body, true).unwrap();
        assert_eq!(got[0].included.add.iter().next().unwrap().len(), 44);
    }

    #[test]
    fn tool_names_round_trip() {
        for tool in Tool::ALL {
            assert_eq!(tool.cli_name().parse::<Tool>().unwrap(), tool);
            assert_eq!(tool.to_string(), tool.cli_name());
        }
        let err = "twilio".parse::<Tool>().unwrap_err();
        assert!(err.to_string().contains("amplitude, census"), "{err}");
    }
}
