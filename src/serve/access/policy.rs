//! Role policies: LaunchDarkly's role-statement JSON form, parsed strictly and evaluated
//! with deny beating allow.
//!
//! A policy is a JSON array of statements:
//!
//! ```json
//! [
//!   { "effect": "allow",
//!     "actions": ["createSegment", "updateIncluded"],
//!     "resources": ["proj/*:env/*:segment/*"] },
//!   { "effect": "deny",
//!     "actions": ["*"],
//!     "resources": ["proj/*:env/production:segment/*;locked"] }
//! ]
//! ```
//!
//! Each statement has an `effect` (`"allow"` or `"deny"`), exactly one of `actions` and
//! `notActions`, and exactly one of `resources` and `notResources`. Any other field is an
//! error. An action on a resource is allowed iff some allow statement matches it and no deny
//! statement does; when nothing matches, it is denied.
//!
//! # Resources
//!
//! A resource pattern names a segment: `proj/{projectKey}:env/{environmentKey}:segment/{segmentKey}`.
//! Each key is a glob in which `*` matches any run of characters, also within a key
//! (`segment/beta-*`). Any part may carry a tag filter, `;tag1,tag2`: the part then matches
//! only when the resource's tags for that part include at least one of the listed tags.
//! Other resource types (`flag/*`, a bare `proj/*`, ...) are rejected: they would never match
//! anything segstore asks about, and a statement that silently never matches is a trap.
//!
//! Segment tags are always known (a segment without tags has none). Project and environment
//! tags are not kept by segstore, so [`Resource`] carries them as `Option`s, `None` meaning
//! unknown. A tag filter on a part whose tags are unknown fails closed: it never lets an
//! allow statement match, and it always lets a deny statement match. So
//! `proj/*;internal:env/*:segment/*` in an allow statement grants nothing, and in a deny
//! statement denies everything, until the caller supplies project tags.
//!
//! # Actions
//!
//! The actions are those of [`actions`]; `*` in a list matches any action. Unknown action
//! names are rejected, so that a typo in a deny statement cannot silently grant access.
//!
//! # Example
//!
//! ```
//! use segstore::serve::access::{actions, Policy, Resource, Role};
//!
//! let policy = Policy::from_json(
//!     r#"[{"effect": "allow", "actions": ["viewSegment"], "resources": ["proj/*:env/*:segment/beta-*"]}]"#,
//! )?;
//! let tags = Vec::new();
//! assert!(policy.allows(actions::VIEW_SEGMENT, &Resource::new("default", "production", "beta-users", &tags)));
//! assert!(!policy.allows(actions::VIEW_SEGMENT, &Resource::new("default", "production", "gamma", &tags)));
//! assert!(!policy.allows(actions::DELETE_SEGMENT, &Resource::new("default", "production", "beta-users", &tags)));
//!
//! let writer = Policy::role(Role::Writer);
//! assert!(writer.allows(actions::UPDATE_INCLUDED, &Resource::new("p", "e", "s", &tags)));
//! assert!(!writer.allows(actions::UPDATE_NAME, &Resource::new("p", "e", "s", &tags)));
//! # Ok::<(), segstore::serve::access::PolicyError>(())
//! ```

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use std::fmt;
use std::str::FromStr;

/// The action names a policy may list (besides `*`).
pub mod actions {
    /// Create a segment: a sync or a request for a segment that does not exist yet.
    pub const CREATE_SEGMENT: &str = "createSegment";
    /// Change a segment's included list.
    pub const UPDATE_INCLUDED: &str = "updateIncluded";
    /// Change a segment's excluded list.
    pub const UPDATE_EXCLUDED: &str = "updateExcluded";
    /// Change a segment's name.
    pub const UPDATE_NAME: &str = "updateName";
    /// Change a segment's description.
    pub const UPDATE_DESCRIPTION: &str = "updateDescription";
    /// Change a segment's tags.
    pub const UPDATE_TAGS: &str = "updateTags";
    /// Delete a segment.
    pub const DELETE_SEGMENT: &str = "deleteSegment";
    /// Read a segment: its details, counts and lists (segstore's read action).
    pub const VIEW_SEGMENT: &str = "viewSegment";

    /// Every action, in the order above.
    pub const ALL: [&str; 8] = [
        CREATE_SEGMENT,
        UPDATE_INCLUDED,
        UPDATE_EXCLUDED,
        UPDATE_NAME,
        UPDATE_DESCRIPTION,
        UPDATE_TAGS,
        DELETE_SEGMENT,
        VIEW_SEGMENT,
    ];
}

/// The pattern in an actions list that matches any action.
const ANY_ACTION: &str = "*";

/// The resource pattern of the built-in roles: every segment of every environment.
const ALL_SEGMENTS: &str = "proj/*:env/*:segment/*";

/// Why a policy was refused: the JSON pointer (RFC 6901) of the value at fault and what is
/// wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The JSON pointer of the value at fault, e.g. `/0/actions/1`; empty for the whole
    /// document (a syntax error, or not an array).
    pub pointer: String,
    /// What is wrong, in one line.
    pub message: String,
}

impl PolicyError {
    fn at(pointer: &str, message: impl Into<String>) -> Self {
        PolicyError {
            pointer: pointer.to_owned(),
            message: message.into(),
        }
    }

    /// The same error with `prefix` in front of its pointer: for a policy inside a larger
    /// document (`/tokens/3/policy`).
    pub fn within(mut self, prefix: &str) -> Self {
        self.pointer = format!("{prefix}{}", self.pointer);
        self
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pointer.is_empty() {
            write!(f, "policy: {}", self.message)
        } else {
            write!(f, "policy at {}: {}", self.pointer, self.message)
        }
    }
}

impl std::error::Error for PolicyError {}

/// A built-in role: a name for a ready-made [`Policy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// `viewSegment` on every segment.
    Reader,
    /// What the synced-segments docs give a partner tool: `createSegment` and
    /// `updateIncluded` on `proj/*:env/*:segment/*`.
    Writer,
    /// Every action on every segment.
    Admin,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 3] = [Role::Reader, Role::Writer, Role::Admin];

    /// The role's name: `reader`, `writer` or `admin`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Role {
    type Err = String;

    /// Parses `reader`, `writer` or `admin` (case-insensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown role {s:?}: expected reader, writer or admin"))
    }
}

/// The resource an action is asked about: one segment of one environment of one project.
#[derive(Debug, Clone, Copy)]
pub struct Resource<'a> {
    /// The project key.
    pub project: &'a str,
    /// The environment key.
    pub environment: &'a str,
    /// The segment key.
    pub segment: &'a str,
    /// The segment's tags (empty: it has none).
    pub segment_tags: &'a [String],
    /// The project's tags; `None` when unknown (see the module docs: a tag filter on an
    /// unknown part fails closed).
    pub project_tags: Option<&'a [String]>,
    /// The environment's tags; `None` when unknown.
    pub environment_tags: Option<&'a [String]>,
}

impl<'a> Resource<'a> {
    /// A segment whose project and environment tags are unknown (all segstore knows).
    ///
    /// ```
    /// use segstore::serve::access::Resource;
    /// let tags = vec!["beta".to_owned()];
    /// let resource = Resource::new("default", "production", "beta-users", &tags);
    /// assert_eq!(resource.segment, "beta-users");
    /// assert!(resource.project_tags.is_none());
    /// ```
    pub fn new(
        project: &'a str,
        environment: &'a str,
        segment: &'a str,
        segment_tags: &'a [String],
    ) -> Self {
        Resource {
            project,
            environment,
            segment,
            segment_tags,
            project_tags: None,
            environment_tags: None,
        }
    }
}

/// Whether a statement applies: `allow` or `deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    /// The statement grants the actions.
    Allow,
    /// The statement forbids the actions, whatever any allow statement says.
    Deny,
}

impl Effect {
    fn name(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        }
    }
}

/// The actions a statement covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionSet {
    /// `actions`: the listed ones (`*` is any).
    Actions(Vec<String>),
    /// `notActions`: every action but the listed ones (`*` excludes all).
    NotActions(Vec<String>),
}

impl ActionSet {
    fn covers(&self, action: &str) -> bool {
        let listed = |list: &[String]| list.iter().any(|a| a == ANY_ACTION || a == action);
        match self {
            ActionSet::Actions(list) => listed(list),
            ActionSet::NotActions(list) => !listed(list),
        }
    }

    /// The JSON field name and the list.
    pub fn parts(&self) -> (&'static str, &[String]) {
        match self {
            ActionSet::Actions(list) => ("actions", list),
            ActionSet::NotActions(list) => ("notActions", list),
        }
    }
}

/// The resources a statement covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceSet {
    /// `resources`: those matching any listed pattern.
    Resources(Vec<ResourcePattern>),
    /// `notResources`: those matching none of the listed patterns.
    NotResources(Vec<ResourcePattern>),
}

impl ResourceSet {
    fn covers(&self, resource: &Resource<'_>) -> Match {
        let any = |list: &[ResourcePattern]| {
            list.iter()
                .map(|p| p.matches(resource))
                .fold(Match::No, Match::or)
        };
        match self {
            ResourceSet::Resources(list) => any(list),
            ResourceSet::NotResources(list) => any(list).not(),
        }
    }

    /// The JSON field name and the list.
    pub fn parts(&self) -> (&'static str, &[ResourcePattern]) {
        match self {
            ResourceSet::Resources(list) => ("resources", list),
            ResourceSet::NotResources(list) => ("notResources", list),
        }
    }
}

/// Three-valued match: `Unknown` when a tag filter asks about tags the caller does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Match {
    No,
    Unknown,
    Yes,
}

impl Match {
    fn or(self, other: Match) -> Match {
        match (self, other) {
            (Match::Yes, _) | (_, Match::Yes) => Match::Yes,
            (Match::Unknown, _) | (_, Match::Unknown) => Match::Unknown,
            _ => Match::No,
        }
    }

    fn and(self, other: Match) -> Match {
        match (self, other) {
            (Match::No, _) | (_, Match::No) => Match::No,
            (Match::Unknown, _) | (_, Match::Unknown) => Match::Unknown,
            _ => Match::Yes,
        }
    }

    fn not(self) -> Match {
        match self {
            Match::No => Match::Yes,
            Match::Unknown => Match::Unknown,
            Match::Yes => Match::No,
        }
    }
}

/// One part of a resource pattern: a key glob and an optional tag filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartPattern {
    /// The key glob (`*` matches any run of characters).
    pub glob: String,
    /// The tag filter; empty: no filter.
    pub tags: Vec<String>,
}

impl PartPattern {
    fn matches(&self, key: &str, tags: Option<&[String]>) -> Match {
        if !glob_matches(&self.glob, key) {
            return Match::No;
        }
        if self.tags.is_empty() {
            return Match::Yes;
        }
        match tags {
            None => Match::Unknown,
            Some(have) if self.tags.iter().any(|t| have.contains(t)) => Match::Yes,
            Some(_) => Match::No,
        }
    }

    fn render(&self, kind: &str, out: &mut String) {
        out.push_str(kind);
        out.push('/');
        out.push_str(&self.glob);
        if !self.tags.is_empty() {
            out.push(';');
            out.push_str(&self.tags.join(","));
        }
    }
}

/// A parsed resource pattern: `proj/{glob}[;tags]:env/{glob}[;tags]:segment/{glob}[;tags]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourcePattern {
    /// The project part.
    pub project: PartPattern,
    /// The environment part.
    pub environment: PartPattern,
    /// The segment part.
    pub segment: PartPattern,
}

impl ResourcePattern {
    /// Parses a pattern; the error message does not carry a pointer (the caller adds it).
    ///
    /// ```
    /// use segstore::serve::access::ResourcePattern;
    /// let p = ResourcePattern::parse("proj/*:env/prod-*:segment/*;beta,gamma").unwrap();
    /// assert_eq!(p.environment.glob, "prod-*");
    /// assert_eq!(p.segment.tags, ["beta", "gamma"]);
    /// assert!(ResourcePattern::parse("proj/*:env/*:flag/*").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<ResourcePattern, String> {
        const SHAPE: &str = "expected proj/{projectKey}:env/{environmentKey}:segment/{segmentKey}";
        if let Some(c) = text.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "{text:?} contains {:?}; resource patterns have no spaces or control characters",
                c
            ));
        }
        let mut parts = text.split(':');
        let (Some(project), Some(environment), Some(segment), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("{text:?}: {SHAPE}"));
        };
        let part = |piece: &str, kind: &str| -> Result<PartPattern, String> {
            let Some(rest) = piece
                .strip_prefix(kind)
                .and_then(|rest| rest.strip_prefix('/'))
            else {
                return Err(format!(
                    "{text:?}: {piece:?} should start with \"{kind}/\"; {SHAPE}"
                ));
            };
            let (glob, tags) = match rest.split_once(';') {
                Some((glob, tags)) => (glob, Some(tags)),
                None => (rest, None),
            };
            if glob.is_empty() {
                return Err(format!("{text:?}: the {kind} key is empty (use * for any)"));
            }
            if glob.contains(',') {
                return Err(format!(
                    "{text:?}: the {kind} key {glob:?} contains ','; tags follow a ';'"
                ));
            }
            let tags = match tags {
                None => Vec::new(),
                Some(list) => {
                    let tags: Vec<String> = list.split(',').map(str::to_owned).collect();
                    if let Some(bad) = tags.iter().find(|t| t.is_empty() || t.contains(';')) {
                        return Err(format!(
                            "{text:?}: bad tag {bad:?} in the {kind} tag filter (tags are \
                             separated by ',' and never empty)"
                        ));
                    }
                    tags
                }
            };
            Ok(PartPattern {
                glob: glob.to_owned(),
                tags,
            })
        };
        Ok(ResourcePattern {
            project: part(project, "proj")?,
            environment: part(environment, "env")?,
            segment: part(segment, "segment")?,
        })
    }

    fn matches(&self, resource: &Resource<'_>) -> Match {
        self.project
            .matches(resource.project, resource.project_tags)
            .and(
                self.environment
                    .matches(resource.environment, resource.environment_tags),
            )
            .and(
                self.segment
                    .matches(resource.segment, Some(resource.segment_tags)),
            )
    }
}

impl fmt::Display for ResourcePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        self.project.render("proj", &mut out);
        out.push(':');
        self.environment.render("env", &mut out);
        out.push(':');
        self.segment.render("segment", &mut out);
        f.write_str(&out)
    }
}

/// `*` matches any run of bytes (possibly empty); every other byte matches itself.
///
/// The classic greedy match with one backtrack point: O(len(glob) × len(text)) at worst,
/// no recursion.
fn glob_matches(glob: &str, text: &str) -> bool {
    let (glob, text) = (glob.as_bytes(), text.as_bytes());
    let (mut g, mut t) = (0usize, 0usize);
    // Where the last `*` was in the glob, and the text position it is currently matched up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match glob.get(g) {
            Some(b'*') => {
                star = Some((g, t));
                g += 1;
            }
            Some(&c) if Some(&c) == text.get(t) => {
                g += 1;
                t += 1;
            }
            _ => match star {
                Some((star_g, star_t)) => {
                    g = star_g + 1;
                    t = star_t + 1;
                    star = Some((star_g, star_t + 1));
                }
                None => return false,
            },
        }
    }
    glob.get(g..)
        .is_some_and(|rest| rest.iter().all(|&c| c == b'*'))
}

/// One statement of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// Allow or deny.
    pub effect: Effect,
    /// `actions` or `notActions`.
    pub actions: ActionSet,
    /// `resources` or `notResources`.
    pub resources: ResourceSet,
}

impl Statement {
    fn matches(&self, action: &str, resource: &Resource<'_>) -> Match {
        if self.actions.covers(action) {
            self.resources.covers(resource)
        } else {
            Match::No
        }
    }

    fn to_value(&self) -> Value {
        let mut map = Map::new();
        map.insert("effect".into(), Value::from(self.effect.name()));
        let (name, list) = self.actions.parts();
        map.insert(name.into(), Value::from(list.to_vec()));
        let (name, list) = self.resources.parts();
        let rendered: Vec<String> = list.iter().map(ToString::to_string).collect();
        map.insert(name.into(), Value::from(rendered));
        Value::Object(map)
    }

    fn from_value(value: &Value, pointer: &str) -> Result<Statement, PolicyError> {
        let Value::Object(map) = value else {
            return Err(PolicyError::at(
                pointer,
                format!(
                    "a statement is an object {{effect, actions|notActions, resources|notResources}}, found {}",
                    kind_of(value)
                ),
            ));
        };
        const FIELDS: [&str; 5] = [
            "effect",
            "actions",
            "notActions",
            "resources",
            "notResources",
        ];
        if let Some(unknown) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(PolicyError::at(
                &child(pointer, unknown),
                format!(
                    "unknown field {unknown:?}; a statement has effect, actions or notActions, \
                     and resources or notResources"
                ),
            ));
        }
        let effect = match map.get("effect") {
            None => return Err(PolicyError::at(pointer, "missing \"effect\"")),
            Some(Value::String(s)) if s == "allow" => Effect::Allow,
            Some(Value::String(s)) if s == "deny" => Effect::Deny,
            Some(other) => {
                return Err(PolicyError::at(
                    &child(pointer, "effect"),
                    format!("expected \"allow\" or \"deny\", found {}", describe(other)),
                ))
            }
        };
        let actions = match (map.get("actions"), map.get("notActions")) {
            (Some(_), Some(_)) => {
                return Err(PolicyError::at(
                    &child(pointer, "notActions"),
                    "a statement has actions or notActions, not both",
                ))
            }
            (None, None) => {
                return Err(PolicyError::at(
                    pointer,
                    "missing \"actions\" (or \"notActions\")",
                ))
            }
            (Some(list), None) => {
                ActionSet::Actions(action_list(list, &child(pointer, "actions"))?)
            }
            (None, Some(list)) => {
                ActionSet::NotActions(action_list(list, &child(pointer, "notActions"))?)
            }
        };
        let resources = match (map.get("resources"), map.get("notResources")) {
            (Some(_), Some(_)) => {
                return Err(PolicyError::at(
                    &child(pointer, "notResources"),
                    "a statement has resources or notResources, not both",
                ))
            }
            (None, None) => {
                return Err(PolicyError::at(
                    pointer,
                    "missing \"resources\" (or \"notResources\")",
                ))
            }
            (Some(list), None) => {
                ResourceSet::Resources(resource_list(list, &child(pointer, "resources"))?)
            }
            (None, Some(list)) => {
                ResourceSet::NotResources(resource_list(list, &child(pointer, "notResources"))?)
            }
        };
        Ok(Statement {
            effect,
            actions,
            resources,
        })
    }
}

/// The strings of a non-empty JSON array, or an error at the element at fault.
fn string_list<'v>(value: &'v Value, pointer: &str) -> Result<Vec<&'v str>, PolicyError> {
    let Value::Array(items) = value else {
        return Err(PolicyError::at(
            pointer,
            format!("expected an array of strings, found {}", kind_of(value)),
        ));
    };
    if items.is_empty() {
        return Err(PolicyError::at(
            pointer,
            "the list is empty; a statement must name at least one (use \"*\" for all)",
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) => Ok(s.as_str()),
            other => Err(PolicyError::at(
                &child(pointer, &i.to_string()),
                format!("expected a string, found {}", kind_of(other)),
            )),
        })
        .collect()
}

fn action_list(value: &Value, pointer: &str) -> Result<Vec<String>, PolicyError> {
    let names = string_list(value, pointer)?;
    for (i, name) in names.iter().enumerate() {
        if *name != ANY_ACTION && !actions::ALL.contains(name) {
            return Err(PolicyError::at(
                &child(pointer, &i.to_string()),
                format!(
                    "unknown action {name:?}; the actions are * and {}",
                    actions::ALL.join(", ")
                ),
            ));
        }
    }
    Ok(names.into_iter().map(str::to_owned).collect())
}

fn resource_list(value: &Value, pointer: &str) -> Result<Vec<ResourcePattern>, PolicyError> {
    string_list(value, pointer)?
        .into_iter()
        .enumerate()
        .map(|(i, text)| {
            ResourcePattern::parse(text)
                .map_err(|message| PolicyError::at(&child(pointer, &i.to_string()), message))
        })
        .collect()
}

/// `pointer/token`, with the token escaped as RFC 6901 says (`~` → `~0`, `/` → `~1`).
fn child(pointer: &str, token: &str) -> String {
    format!("{pointer}/{}", token.replace('~', "~0").replace('/', "~1"))
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => kind_of(other).to_owned(),
    }
}

/// A role policy: the statements, in order. Evaluate it with [`Policy::allows`].
///
/// Serializes as the JSON array of statements (see the module docs), and deserializes with
/// the same checks as [`Policy::from_json`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    statements: Vec<Statement>,
}

impl Policy {
    /// The policy of a built-in role.
    ///
    /// ```
    /// use segstore::serve::access::{Policy, Role};
    /// assert_eq!(
    ///     Policy::role(Role::Writer).to_json(),
    ///     r#"[{"effect":"allow","actions":["createSegment","updateIncluded"],"resources":["proj/*:env/*:segment/*"]}]"#
    /// );
    /// ```
    pub fn role(role: Role) -> Policy {
        let actions: Vec<&str> = match role {
            Role::Reader => vec![actions::VIEW_SEGMENT],
            Role::Writer => vec![actions::CREATE_SEGMENT, actions::UPDATE_INCLUDED],
            Role::Admin => vec![ANY_ACTION],
        };
        let all_segments = ResourcePattern {
            project: PartPattern {
                glob: "*".into(),
                tags: Vec::new(),
            },
            environment: PartPattern {
                glob: "*".into(),
                tags: Vec::new(),
            },
            segment: PartPattern {
                glob: "*".into(),
                tags: Vec::new(),
            },
        };
        debug_assert_eq!(all_segments.to_string(), ALL_SEGMENTS);
        Policy {
            statements: vec![Statement {
                effect: Effect::Allow,
                actions: ActionSet::Actions(actions.into_iter().map(str::to_owned).collect()),
                resources: ResourceSet::Resources(vec![all_segments]),
            }],
        }
    }

    /// The built-in role whose policy this is exactly, if any.
    pub fn as_role(&self) -> Option<Role> {
        Role::ALL.into_iter().find(|r| Policy::role(*r) == *self)
    }

    /// Parses the role-statement JSON form. The error names the JSON pointer at fault.
    ///
    /// ```
    /// use segstore::serve::access::Policy;
    /// let err = Policy::from_json(r#"[{"effect": "allow", "actions": ["*"], "resorces": []}]"#)
    ///     .unwrap_err();
    /// assert_eq!(err.pointer, "/0/resorces");
    /// assert!(err.to_string().contains("unknown field"));
    /// ```
    pub fn from_json(text: &str) -> Result<Policy, PolicyError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| PolicyError::at("", format!("invalid JSON: {e}")))?;
        Policy::from_value(&value)
    }

    /// Parses an already decoded JSON value (pointers are relative to it).
    pub fn from_value(value: &Value) -> Result<Policy, PolicyError> {
        let Value::Array(items) = value else {
            return Err(PolicyError::at(
                "",
                format!(
                    "a policy is a JSON array of statements, found {}",
                    kind_of(value)
                ),
            ));
        };
        if items.is_empty() {
            return Err(PolicyError::at(
                "",
                "the policy has no statements, so it would allow nothing",
            ));
        }
        let statements = items
            .iter()
            .enumerate()
            .map(|(i, item)| Statement::from_value(item, &format!("/{i}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Policy { statements })
    }

    /// The policy as compact JSON, in the form [`Policy::from_json`] reads, with each
    /// statement's fields in the order effect, actions, resources.
    pub fn to_json(&self) -> String {
        // Serializing strings into a String cannot fail; the fallback only avoids a panic path.
        serde_json::to_string(self).unwrap_or_else(|_| self.to_value().to_string())
    }

    /// The policy as a JSON value (an array of statements).
    pub fn to_value(&self) -> Value {
        Value::Array(self.statements.iter().map(Statement::to_value).collect())
    }

    /// The statements, in order.
    pub fn statements(&self) -> &[Statement] {
        &self.statements
    }

    /// True iff some allow statement matches `action` on `resource` and no deny statement
    /// does. See the module docs for how tag filters on unknown tags count.
    pub fn allows(&self, action: &str, resource: &Resource<'_>) -> bool {
        let mut allowed = false;
        for statement in &self.statements {
            let matched = statement.matches(action, resource);
            match statement.effect {
                Effect::Deny if matched != Match::No => return false,
                Effect::Allow if matched == Match::Yes => allowed = true,
                _ => {}
            }
        }
        allowed
    }

    /// One line for people: `allow createSegment,updateIncluded on proj/*:env/*:segment/*`,
    /// statements separated by `; `.
    pub fn summary(&self) -> String {
        self.statements
            .iter()
            .map(|s| {
                let (action_field, actions) = s.actions.parts();
                let (resource_field, resources) = s.resources.parts();
                let not_actions = if action_field == "notActions" {
                    "all but "
                } else {
                    ""
                };
                let not_resources = if resource_field == "notResources" {
                    "all but "
                } else {
                    ""
                };
                let resources: Vec<String> = resources.iter().map(ToString::to_string).collect();
                format!(
                    "{} {not_actions}{} on {not_resources}{}",
                    s.effect.name(),
                    actions.join(","),
                    resources.join(",")
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl Serialize for Statement {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("effect", self.effect.name())?;
        let (name, list) = self.actions.parts();
        map.serialize_entry(name, list)?;
        let (name, list) = self.resources.parts();
        let rendered: Vec<String> = list.iter().map(ToString::to_string).collect();
        map.serialize_entry(name, &rendered)?;
        map.end()
    }
}

impl Serialize for Policy {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.statements.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Policy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Policy::from_value(&value).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn err(text: &str) -> PolicyError {
        match Policy::from_json(text) {
            Ok(p) => panic!("accepted {text}: {p:?}"),
            Err(e) => e,
        }
    }

    fn policy(text: &str) -> Policy {
        match Policy::from_json(text) {
            Ok(p) => p,
            Err(e) => panic!("refused {text}: {e}"),
        }
    }

    fn seg<'a>(
        project: &'a str,
        env: &'a str,
        segment: &'a str,
        tags: &'a [String],
    ) -> Resource<'a> {
        Resource::new(project, env, segment, tags)
    }

    const NONE: &[String] = &[];

    #[test]
    fn parse_errors_name_the_pointer() {
        let cases: &[(&str, &str, &str)] = &[
            ("", "", "invalid JSON"),
            ("{}", "", "JSON array"),
            ("[]", "", "no statements"),
            ("[1]", "/0", "object"),
            (
                r#"[{"actions":["*"],"resources":["proj/*:env/*:segment/*"]}]"#,
                "/0",
                "missing \"effect\"",
            ),
            (
                r#"[{"effect":"permit","actions":["*"],"resources":["proj/*:env/*:segment/*"]}]"#,
                "/0/effect",
                "\"permit\"",
            ),
            (
                r#"[{"effect":"allow","actions":["*"],"resources":["proj/*:env/*:segment/*"],"extra":1}]"#,
                "/0/extra",
                "unknown field",
            ),
            (
                r#"[{"effect":"allow","actions":["*"],"resources":["proj/*:env/*:segment/*"],"a/b~":1}]"#,
                "/0/a~1b~0",
                "unknown field",
            ),
            (
                r#"[{"effect":"allow","resources":["proj/*:env/*:segment/*"]}]"#,
                "/0",
                "missing \"actions\"",
            ),
            (
                r#"[{"effect":"allow","actions":["*"],"notActions":["*"],"resources":["proj/*:env/*:segment/*"]}]"#,
                "/0/notActions",
                "not both",
            ),
            (
                r#"[{"effect":"allow","actions":["*"]}]"#,
                "/0",
                "missing \"resources\"",
            ),
            (
                r#"[{"effect":"allow","actions":["*"],"resources":["proj/*:env/*:segment/*"],"notResources":["proj/*:env/*:segment/*"]}]"#,
                "/0/notResources",
                "not both",
            ),
            (
                r#"[{"effect":"allow","actions":"*","resources":["proj/*:env/*:segment/*"]}]"#,
                "/0/actions",
                "array",
            ),
            (
                r#"[{"effect":"allow","actions":[],"resources":["proj/*:env/*:segment/*"]}]"#,
                "/0/actions",
                "empty",
            ),
            (
                r#"[{"effect":"allow","actions":["viewSegment",3],"resources":["proj/*:env/*:segment/*"]}]"#,
                "/0/actions/1",
                "string",
            ),
            (
                r#"[{"effect":"allow","actions":["viewSegments"],"resources":["proj/*:env/*:segment/*"]}]"#,
                "/0/actions/0",
                "unknown action",
            ),
            (
                r#"[{"effect":"allow","actions":["*"],"resources":["proj/*:env/*:segment/*"]},{"effect":"deny","actions":["*"],"notResources":["proj/*:env/*:flag/*"]}]"#,
                "/1/notResources/0",
                "segment/",
            ),
            (
                r#"[{"effect":"allow","actions":["*"],"resources":["proj/*:env/*"]}]"#,
                "/0/resources/0",
                "expected proj/",
            ),
            (
                r#"[{"effect":"allow","actions":["*"],"resources":["proj/*:env/*:segment/*:x/y"]}]"#,
                "/0/resources/0",
                "expected proj/",
            ),
            (
                r#"[{"effect":"allow","actions":["*"],"resources":["proj/*:env/:segment/*"]}]"#,
                "/0/resources/0",
                "env key is empty",
            ),
            (
                r#"[{"effect":"allow","actions":["*"],"resources":["proj/*: env/*:segment/*"]}]"#,
                "/0/resources/0",
                "spaces",
            ),
            (
                r#"[{"effect":"allow","actions":["*"],"resources":["proj/*:env/*:segment/*;a,,b"]}]"#,
                "/0/resources/0",
                "bad tag",
            ),
            (
                r#"[{"effect":"allow","actions":["*"],"resources":["proj/*:env/*:segment/*;"]}]"#,
                "/0/resources/0",
                "bad tag",
            ),
            (
                r#"[{"effect":"allow","actions":["*"],"resources":["proj/*:env/*:segment/a,b"]}]"#,
                "/0/resources/0",
                "contains ','",
            ),
        ];
        for (text, pointer, needle) in cases {
            let e = err(text);
            assert_eq!(e.pointer, *pointer, "{text}: {e}");
            assert!(e.to_string().contains(needle), "{text}: {e}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
    }

    #[test]
    fn glob_matching() {
        let cases = [
            ("*", "", true),
            ("*", "anything", true),
            ("beta-*", "beta-users", true),
            ("beta-*", "beta-", true),
            ("beta-*", "beta", false),
            ("*-users", "beta-users", true),
            ("*-users", "beta-user", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("a*b*c", "abcbc", true),
            ("**", "x", true),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("exact", "exac", false),
            ("", "", true),
            ("", "x", false),
            ("é*", "été", true),
            ("*ß", "straß", true),
        ];
        for (glob, text, want) in cases {
            assert_eq!(glob_matches(glob, text), want, "{glob:?} vs {text:?}");
        }
    }

    #[test]
    fn glob_inside_keys_of_each_part() {
        let p = policy(
            r#"[{"effect":"allow","actions":["viewSegment"],"resources":["proj/mobile-*:env/prod*:segment/beta-*"]}]"#,
        );
        assert!(p.allows(
            "viewSegment",
            &seg("mobile-ios", "production", "beta-users", NONE)
        ));
        assert!(!p.allows("viewSegment", &seg("web", "production", "beta-users", NONE)));
        assert!(!p.allows(
            "viewSegment",
            &seg("mobile-ios", "staging", "beta-users", NONE)
        ));
        assert!(!p.allows(
            "viewSegment",
            &seg("mobile-ios", "production", "gamma", NONE)
        ));
        assert!(!p.allows(
            "updateIncluded",
            &seg("mobile-ios", "production", "beta-users", NONE)
        ));
    }

    #[test]
    fn segment_tag_filters() {
        let p = policy(
            r#"[{"effect":"allow","actions":["updateIncluded"],"resources":["proj/*:env/*:segment/*;synced,partner"]}]"#,
        );
        let partner = vec!["other".to_owned(), "partner".to_owned()];
        let other = vec!["other".to_owned()];
        assert!(p.allows("updateIncluded", &seg("p", "e", "s", &partner)));
        assert!(!p.allows("updateIncluded", &seg("p", "e", "s", &other)));
        assert!(!p.allows("updateIncluded", &seg("p", "e", "s", NONE)));
    }

    #[test]
    fn project_and_environment_tag_filters_fail_closed_when_unknown() {
        let allow = policy(
            r#"[{"effect":"allow","actions":["*"],"resources":["proj/*;internal:env/*:segment/*"]}]"#,
        );
        let r = seg("p", "e", "s", NONE);
        assert!(
            !allow.allows("viewSegment", &r),
            "unknown tags grant nothing"
        );
        let internal = vec!["internal".to_owned()];
        let known = Resource {
            project_tags: Some(&internal),
            ..r
        };
        assert!(allow.allows("viewSegment", &known));
        let known_other = Resource {
            project_tags: Some(NONE),
            ..r
        };
        assert!(!allow.allows("viewSegment", &known_other));

        let deny = policy(
            r#"[{"effect":"allow","actions":["*"],"resources":["proj/*:env/*:segment/*"]},
                {"effect":"deny","actions":["*"],"resources":["proj/*:env/*;locked:segment/*"]}]"#,
        );
        assert!(!deny.allows("viewSegment", &r), "unknown tags deny");
        let unlocked = Resource {
            environment_tags: Some(NONE),
            ..r
        };
        assert!(deny.allows("viewSegment", &unlocked));

        // The same through notResources: an unknown answer stays unknown under negation.
        let not_deny = policy(
            r#"[{"effect":"allow","actions":["*"],"resources":["proj/*:env/*:segment/*"]},
                {"effect":"deny","actions":["*"],"notResources":["proj/*:env/*;open:segment/*"]}]"#,
        );
        assert!(!not_deny.allows("viewSegment", &r));
        let open = vec!["open".to_owned()];
        assert!(not_deny.allows(
            "viewSegment",
            &Resource {
                environment_tags: Some(&open),
                ..r
            }
        ));
        let not_allow = policy(
            r#"[{"effect":"allow","actions":["*"],"notResources":["proj/*;closed:env/*:segment/*"]}]"#,
        );
        assert!(!not_allow.allows("viewSegment", &r));
        assert!(not_allow.allows(
            "viewSegment",
            &Resource {
                project_tags: Some(NONE),
                ..r
            }
        ));
    }

    #[test]
    fn deny_beats_allow_in_any_order() {
        for text in [
            r#"[{"effect":"allow","actions":["*"],"resources":["proj/*:env/*:segment/*"]},
                {"effect":"deny","actions":["deleteSegment"],"resources":["proj/*:env/production:segment/*"]}]"#,
            r#"[{"effect":"deny","actions":["deleteSegment"],"resources":["proj/*:env/production:segment/*"]},
                {"effect":"allow","actions":["*"],"resources":["proj/*:env/*:segment/*"]}]"#,
        ] {
            let p = policy(text);
            assert!(!p.allows("deleteSegment", &seg("p", "production", "s", NONE)));
            assert!(p.allows("deleteSegment", &seg("p", "staging", "s", NONE)));
            assert!(p.allows("updateIncluded", &seg("p", "production", "s", NONE)));
        }
    }

    #[test]
    fn nothing_matching_is_denied() {
        let p = policy(
            r#"[{"effect":"deny","actions":["deleteSegment"],"resources":["proj/*:env/*:segment/*"]}]"#,
        );
        assert!(!p.allows("viewSegment", &seg("p", "e", "s", NONE)));
    }

    #[test]
    fn not_actions_and_not_resources() {
        let p = policy(
            r#"[{"effect":"allow","notActions":["deleteSegment","updateTags"],"notResources":["proj/*:env/production:segment/*"]}]"#,
        );
        assert!(p.allows("updateIncluded", &seg("p", "staging", "s", NONE)));
        assert!(p.allows("anyFutureAction", &seg("p", "staging", "s", NONE)));
        assert!(!p.allows("deleteSegment", &seg("p", "staging", "s", NONE)));
        assert!(!p.allows("updateTags", &seg("p", "staging", "s", NONE)));
        assert!(!p.allows("updateIncluded", &seg("p", "production", "s", NONE)));
        let none = policy(
            r#"[{"effect":"allow","notActions":["*"],"resources":["proj/*:env/*:segment/*"]}]"#,
        );
        for action in actions::ALL {
            assert!(!none.allows(action, &seg("p", "e", "s", NONE)));
        }
    }

    #[test]
    fn roles() {
        let r = seg("default", "production", "beta.g1", NONE);
        let reader = Policy::role(Role::Reader);
        let writer = Policy::role(Role::Writer);
        let admin = Policy::role(Role::Admin);
        for action in actions::ALL {
            assert_eq!(
                reader.allows(action, &r),
                action == actions::VIEW_SEGMENT,
                "{action}"
            );
            assert_eq!(
                writer.allows(action, &r),
                action == actions::CREATE_SEGMENT || action == actions::UPDATE_INCLUDED,
                "{action}"
            );
            assert!(admin.allows(action, &r), "{action}");
        }
        assert_eq!(
            writer,
            policy(
                r#"[{"effect":"allow","actions":["createSegment","updateIncluded"],"resources":["proj/*:env/*:segment/*"]}]"#
            )
        );
        for role in Role::ALL {
            assert_eq!(Policy::role(role).as_role(), Some(role));
            assert_eq!(role.name().parse::<Role>(), Ok(role));
            assert_eq!(
                Policy::from_json(&Policy::role(role).to_json()),
                Ok(Policy::role(role))
            );
        }
        assert!("owner".parse::<Role>().is_err());
        assert_eq!(
            writer.summary(),
            "allow createSegment,updateIncluded on proj/*:env/*:segment/*"
        );
    }

    #[test]
    fn serde_round_trip_and_refusal() {
        let p = policy(
            r#"[{"effect":"deny","notActions":["viewSegment"],"notResources":["proj/a;x,y:env/b*:segment/c;t"]}]"#,
        );
        let json = match serde_json::to_string(&p) {
            Ok(j) => j,
            Err(e) => panic!("{e}"),
        };
        let back: Policy = match serde_json::from_str(&json) {
            Ok(b) => b,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(back, p);
        let bad: Result<Policy, _> = serde_json::from_str(r#"[{"effect":"allow"}]"#);
        assert!(bad.is_err_and(|e| e.to_string().contains("/0")));
    }

    fn key_glob() -> impl Strategy<Value = String> {
        "[a-z0-9*._-]{1,8}"
    }

    fn tags() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec("[a-z]{1,4}", 0..3)
    }

    fn part() -> impl Strategy<Value = PartPattern> {
        (key_glob(), tags()).prop_map(|(glob, tags)| PartPattern { glob, tags })
    }

    fn pattern() -> impl Strategy<Value = ResourcePattern> {
        (part(), part(), part()).prop_map(|(project, environment, segment)| ResourcePattern {
            project,
            environment,
            segment,
        })
    }

    fn action_names() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec(
            prop::sample::select(
                std::iter::once(ANY_ACTION)
                    .chain(actions::ALL)
                    .map(str::to_owned)
                    .collect::<Vec<_>>(),
            ),
            1..4,
        )
    }

    fn statement() -> impl Strategy<Value = Statement> {
        (
            any::<bool>(),
            any::<bool>(),
            action_names(),
            any::<bool>(),
            prop::collection::vec(pattern(), 1..3),
        )
            .prop_map(
                |(allow, not_actions, names, not_resources, patterns)| Statement {
                    effect: if allow { Effect::Allow } else { Effect::Deny },
                    actions: if not_actions {
                        ActionSet::NotActions(names)
                    } else {
                        ActionSet::Actions(names)
                    },
                    resources: if not_resources {
                        ResourceSet::NotResources(patterns)
                    } else {
                        ResourceSet::Resources(patterns)
                    },
                },
            )
    }

    fn any_policy() -> impl Strategy<Value = Policy> {
        prop::collection::vec(statement(), 1..4).prop_map(|statements| Policy { statements })
    }

    proptest! {
        #[test]
        fn policy_survives_json(p in any_policy()) {
            prop_assert_eq!(Policy::from_json(&p.to_json()), Ok(p));
        }

        #[test]
        fn random_resources_and_actions_never_panic(
            p in any_policy(),
            action in ".{0,12}",
            project in ".{0,12}",
            environment in ".{0,12}",
            segment in ".{0,12}",
            segment_tags in prop::collection::vec(".{0,4}", 0..3),
        ) {
            let r = Resource::new(&project, &environment, &segment, &segment_tags);
            let allowed = p.allows(&action, &r);
            // Allowed implies no deny statement matched and an allow one did: cross-check
            // against a direct reading of the rule.
            let any_deny = p.statements.iter().any(|s| s.effect == Effect::Deny && s.matches(&action, &r) != Match::No);
            let any_allow = p.statements.iter().any(|s| s.effect == Effect::Allow && s.matches(&action, &r) == Match::Yes);
            prop_assert_eq!(allowed, any_allow && !any_deny);
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,200}") {
            let _ = Policy::from_json(&text);
            let _ = ResourcePattern::parse(&text);
        }

        #[test]
        fn glob_star_matches_any_infix(prefix in "[a-c]{0,4}", middle in "[a-c*]{0,6}", suffix in "[a-c]{0,4}") {
            let glob = format!("{prefix}*{suffix}");
            let text = format!("{prefix}{middle}{suffix}");
            prop_assert!(glob_matches(&glob, &text));
        }
    }
}
