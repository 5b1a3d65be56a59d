//! Reading one JSON document of `apply` input, strictly and in one pass.
//!
//! Two rules beyond JSON's own: an object giving the same field twice is an error naming that
//! field's JSON pointer (`serde_json` would keep the last value silently), and the keys of a
//! line are never held twice. For `updates` and `patches` the key arrays are read straight
//! into keys (validated, hashed if asked) as the parser meets them, with no [`Value`] tree in
//! between, and reading stops as soon as the keys alone encode to more than one log record may
//! hold: such a line could never be written, so a huge line costs at most one record's worth
//! of keys. Partner bodies, which are small and irregular, become a [`Value`] (with the same
//! duplicate rule) and are read from there.
//!
//! A precise [`ParseError`] found inside the parser is kept in [`Ctx`] while `serde_json`
//! unwinds with a placeholder error, and returned in its place.

use super::{
    check_kind, check_ref, check_version, escape_token, field_err, make_key, opt_string,
    wrong_type, ParseError,
};
use crate::change::{ListChange, Patch, SegmentChange};
use crate::keys::Keys;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::cell::{Cell, RefCell};
use std::fmt;

/// The most bytes the keys of one line may encode to: a log record's payload limit. Each key
/// encodes as a 4-byte length and its bytes, so keys alone over this make a batch too large.
pub(crate) const MAX_ENCODED_KEYS: usize = crate::log::MAX_RECORD_LEN;

/// One step from the document's root to the value being read.
enum Step {
    Key(String),
    Index(usize),
}

/// What a parse carries along.
struct Ctx {
    /// Where the value being read is.
    path: RefCell<Vec<Step>>,
    /// The first precise error found.
    error: RefCell<Option<ParseError>>,
    /// Bytes the keys read so far encode to.
    encoded: Cell<usize>,
    /// Hash raw keys (updates format).
    hash: bool,
    /// The most bytes the keys may encode to before the parse stops.
    key_limit: usize,
}

impl Ctx {
    fn new(hash: bool, key_limit: usize) -> Ctx {
        Ctx {
            path: RefCell::new(Vec::new()),
            error: RefCell::new(None),
            encoded: Cell::new(0),
            hash,
            key_limit,
        }
    }

    /// The JSON pointer of the value being read.
    fn pointer(&self) -> String {
        let mut out = String::new();
        for step in self.path.borrow().iter() {
            out.push('/');
            match step {
                Step::Key(k) => out.push_str(&escape_token(k)),
                Step::Index(i) => out.push_str(&i.to_string()),
            }
        }
        out
    }

    /// The JSON pointer of field `key` of the object being read.
    fn pointer_to(&self, key: &str) -> String {
        format!("{}/{}", self.pointer(), escape_token(key))
    }

    /// Keeps `error` (the first one wins) and returns the error that unwinds the parser.
    fn fail<E: serde::de::Error>(&self, error: ParseError) -> E {
        let mut slot = self.error.borrow_mut();
        let message = error.to_string();
        if slot.is_none() {
            *slot = Some(error);
        }
        E::custom(message)
    }

    /// Runs `f` with `step` appended to the path.
    fn within<T>(&self, step: Step, f: impl FnOnce() -> T) -> T {
        self.path.borrow_mut().push(step);
        let out = f();
        self.path.borrow_mut().pop();
        out
    }

    fn duplicate<E: serde::de::Error>(&self, key: &str) -> E {
        self.fail(field_err(
            self.pointer_to(key),
            "duplicate field: it appears more than once in its object, and which one counts \
             would be a guess",
        ))
    }

    /// Counts a key toward the line's encoded size.
    fn count_key<E: serde::de::Error>(&self, len: usize) -> Result<(), E> {
        let total = self.encoded.get().saturating_add(4).saturating_add(len);
        self.encoded.set(total);
        if total > self.key_limit {
            return Err(self.fail(ParseError::TooLarge {
                limit: self.key_limit,
            }));
        }
        Ok(())
    }
}

/// The result of a whole parse: the precise error kept in `ctx` wins over `serde_json`'s.
fn finish<T>(ctx: Ctx, parsed: Result<T, serde_json::Error>) -> Result<T, ParseError> {
    match parsed {
        Ok(value) => Ok(value),
        Err(e) => match ctx.error.into_inner() {
            Some(precise) => Err(precise),
            None => Err(ParseError::Json(e.to_string())),
        },
    }
}

/// Parses one whole document with the seed `$seed { ctx }`: nothing but whitespace may
/// follow it.
macro_rules! parse_document {
    ($de:expr, $hash:expr, $limit:expr, $seed:ident) => {{
        let ctx = Ctx::new($hash, $limit);
        let de = $de;
        let parsed = $seed { ctx: &ctx }
            .deserialize(&mut *de)
            .and_then(|value| de.end().map(|()| value));
        finish(ctx, parsed)
    }};
}

/// An `updates` document; reading stops once its keys encode to more than `key_limit`.
pub(crate) fn parse_update<'de, R: serde_json::de::Read<'de>>(
    de: &mut serde_json::Deserializer<R>,
    hash: bool,
    key_limit: usize,
) -> Result<SegmentChange, ParseError> {
    // Whole-object rules (a missing segment, ...) are checked once the document is known to
    // be well-formed JSON, so a malformed line is reported as such.
    parse_document!(de, hash, key_limit, UpdateSeed).and_then(|raw| raw.and_then(RawUpdate::finish))
}

/// A `patches` document; reading stops once its keys encode to more than `key_limit`.
pub(crate) fn parse_patches<'de, R: serde_json::de::Read<'de>>(
    de: &mut serde_json::Deserializer<R>,
    key_limit: usize,
) -> Result<Vec<Patch>, ParseError> {
    parse_document!(de, false, key_limit, PatchesSeed)??
        .into_iter()
        .map(RawPatch::finish)
        .collect()
}

/// Any document, as a [`Value`].
pub(crate) fn parse_value<'de, R: serde_json::de::Read<'de>>(
    de: &mut serde_json::Deserializer<R>,
) -> Result<Value, ParseError> {
    parse_document!(de, false, usize::MAX, StrictValue)
}

/// What JSON type a visitor was handed, for messages.
fn found(kind: &'static str) -> Value {
    // A stand-in of the right type: `wrong_type` names the type of the value it is given.
    match kind {
        "null" => Value::Null,
        "a boolean" => Value::Bool(false),
        "a number" => Value::from(0),
        "a string" => Value::String(String::new()),
        "an array" => Value::Array(Vec::new()),
        _ => Value::Object(Map::new()),
    }
}

/// Visitor methods for the JSON types a visitor does not accept: each fails with
/// `$reject(self, type name)`.
macro_rules! reject_types {
    ($reject:ident; $($method:ident($($arg:ty)?) => $kind:literal),* $(,)?) => {
        $(
            fn $method<E: serde::de::Error>(self $(, _: $arg)?) -> Result<Self::Value, E> {
                Err(self.$reject($kind))
            }
        )*
    };
}

/// Visitor methods for the JSON types a document-level visitor does not accept: each reads the
/// value to its end (so that malformed JSON is still reported as such) and returns
/// `Ok(Err(self.$wrong(type name)))`, an error checked once the document is known to be
/// well-formed.
macro_rules! defer_types {
    ($wrong:ident) => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(Err(self.$wrong("a boolean")))
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(Err(self.$wrong("a number")))
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(Err(self.$wrong("a number")))
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(Err(self.$wrong("a number")))
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(Err(self.$wrong("a string")))
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(Err(self.$wrong("null")))
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Any value, as a `Value`, refusing duplicate fields.

#[derive(Clone, Copy)]
struct StrictValue<'c> {
    ctx: &'c Ctx,
}

impl<'de> DeserializeSeed<'de> for StrictValue<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let item = self
                .ctx
                .within(Step::Index(items.len()), || seq.next_element_seed(self))?;
            match item {
                Some(item) => items.push(item),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(self.ctx.duplicate(&key));
            }
            let value = self
                .ctx
                .within(Step::Key(key.clone()), || map.next_value_seed(self))?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

// ---------------------------------------------------------------------------------------------
// Keys: an array of strings read straight into keys.

/// One key of a key array, at `index`, pushed onto `keys`.
struct KeySeed<'c, 'k> {
    ctx: &'c Ctx,
    index: usize,
    keys: &'k mut Keys,
}

impl KeySeed<'_, '_> {
    fn not_a_string<E: serde::de::Error>(&self, kind: &'static str) -> E {
        self.ctx.fail(ParseError::Key {
            path: format!("{}/{}", self.ctx.pointer(), self.index),
            index: self.index,
            detail: format!("expected a string, found {kind}"),
        })
    }
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        let ctx = self.ctx;
        let index = self.index;
        let path = || format!("{}/{index}", ctx.pointer());
        let key = make_key(v, path, index, ctx.hash).map_err(|e| ctx.fail(e))?;
        ctx.count_key(key.len())?;
        self.keys.push(key);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(self.not_a_string("an array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(self.not_a_string("an object"))
    }

    reject_types!(not_a_string;
        visit_bool(bool) => "a boolean",
        visit_i64(i64) => "a number",
        visit_u64(u64) => "a number",
        visit_f64(f64) => "a number",
        visit_unit() => "null",
    );
}

/// An array of keys; `null` is empty.
struct KeysSeed<'c> {
    ctx: &'c Ctx,
}

impl KeysSeed<'_> {
    fn wrong<E: serde::de::Error>(&self, kind: &'static str) -> E {
        self.ctx.fail(wrong_type(
            &self.ctx.pointer(),
            "an array of keys",
            &found(kind),
        ))
    }
}

impl<'de> DeserializeSeed<'de> for KeysSeed<'_> {
    type Value = Keys;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeysSeed<'_> {
    type Value = Keys;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of keys")
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Keys::new())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut keys = Keys::new();
        loop {
            let seed = KeySeed {
                ctx: self.ctx,
                index: keys.len(),
                keys: &mut keys,
            };
            if seq.next_element_seed(seed)?.is_none() {
                break;
            }
        }
        // A batch of millions of keys keeps its buffer until written: no room to spare.
        keys.shrink_to_fit();
        Ok(keys)
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(self.wrong("an object"))
    }

    reject_types!(wrong;
        visit_bool(bool) => "a boolean",
        visit_i64(i64) => "a number",
        visit_u64(u64) => "a number",
        visit_f64(f64) => "a number",
        visit_str(&str) => "a string",
    );
}

/// `{"add"?: [..], "remove"?: [..]}`; `null` is empty. With `strict`, other fields are
/// rejected; without, they are read (duplicates still refused) and ignored.
struct ListSeed<'c> {
    ctx: &'c Ctx,
    strict: bool,
}

impl ListSeed<'_> {
    fn wrong<E: serde::de::Error>(&self, kind: &'static str) -> E {
        self.ctx.fail(wrong_type(
            &self.ctx.pointer(),
            "an object with add and remove",
            &found(kind),
        ))
    }
}

impl<'de> DeserializeSeed<'de> for ListSeed<'_> {
    type Value = ListChange;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<ListChange, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ListSeed<'_> {
    type Value = ListChange;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object with add and remove")
    }

    fn visit_unit<E>(self) -> Result<ListChange, E> {
        Ok(ListChange::default())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ListChange, A::Error> {
        let ctx = self.ctx;
        let mut add = None;
        let mut remove = None;
        let mut others: Vec<String> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let slot = match key.as_str() {
                "add" => &mut add,
                "remove" => &mut remove,
                _ if self.strict => {
                    return Err(ctx.fail(field_err(
                        ctx.pointer_to(&key),
                        "unknown field; the fields here are add, remove",
                    )))
                }
                _ => {
                    if others.contains(&key) {
                        return Err(ctx.duplicate(&key));
                    }
                    ctx.within(Step::Key(key.clone()), || {
                        map.next_value_seed(StrictValue { ctx })
                    })?;
                    others.push(key);
                    continue;
                }
            };
            if slot.is_some() {
                return Err(ctx.duplicate(&key));
            }
            *slot = Some(ctx.within(Step::Key(key), || map.next_value_seed(KeysSeed { ctx }))?);
        }
        Ok(ListChange {
            add: add.unwrap_or_default(),
            remove: remove.unwrap_or_default(),
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<ListChange, A::Error> {
        Err(self.wrong("an array"))
    }

    reject_types!(wrong;
        visit_bool(bool) => "a boolean",
        visit_i64(i64) => "a number",
        visit_u64(u64) => "a number",
        visit_f64(f64) => "a number",
        visit_str(&str) => "a string",
    );
}

/// Reads the fields of an object: `read(key, map)` reads the value of each field, which is
/// refused if it appears twice.
fn read_fields<'de, A: MapAccess<'de>>(
    ctx: &Ctx,
    mut map: A,
    mut read: impl FnMut(&str, &mut A) -> Result<(), A::Error>,
) -> Result<(), A::Error> {
    let mut seen: Vec<String> = Vec::new();
    while let Some(key) = map.next_key::<String>()? {
        if seen.contains(&key) {
            return Err(ctx.duplicate(&key));
        }
        ctx.path.borrow_mut().push(Step::Key(key.clone()));
        let result = read(&key, &mut map);
        ctx.path.borrow_mut().pop();
        result?;
        seen.push(key);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// updates

/// One `updates` line.
struct UpdateSeed<'c> {
    ctx: &'c Ctx,
}

impl UpdateSeed<'_> {
    fn wrong(&self, kind: &'static str) -> ParseError {
        wrong_type("", "an object", &found(kind))
    }
}

/// An `updates` object as read, before its whole-object rules are checked.
struct RawUpdate {
    segment: Option<Value>,
    kind: Option<Value>,
    name: Option<Value>,
    included: ListChange,
    excluded: ListChange,
}

impl RawUpdate {
    fn finish(self) -> Result<SegmentChange, ParseError> {
        let segment = match self.segment {
            Some(Value::String(s)) => s,
            None => {
                return Err(field_err(
                    "/segment",
                    "missing: the segment ref is required",
                ))
            }
            Some(other) => return Err(wrong_type("/segment", "a string", &other)),
        };
        check_ref(&segment, "/segment")?;
        let kind = opt_string(self.kind, "/kind")?;
        if let Some(kind) = &kind {
            check_kind(kind, "/kind")?;
        }
        let name = opt_string(self.name, "/name")?;
        Ok(SegmentChange {
            segment,
            kind,
            name,
            included: self.included,
            excluded: self.excluded,
        })
    }
}

impl<'de> DeserializeSeed<'de> for UpdateSeed<'_> {
    type Value = Result<RawUpdate, ParseError>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UpdateSeed<'_> {
    type Value = Result<RawUpdate, ParseError>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an update object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let ctx = self.ctx;
        let (mut segment, mut kind, mut name) = (None, None, None);
        let (mut included, mut excluded) = (ListChange::default(), ListChange::default());
        read_fields(ctx, map, |key, map| {
            match key {
                "segment" => segment = Some(map.next_value_seed(StrictValue { ctx })?),
                "kind" => kind = Some(map.next_value_seed(StrictValue { ctx })?),
                "name" => name = Some(map.next_value_seed(StrictValue { ctx })?),
                "included" => included = map.next_value_seed(ListSeed { ctx, strict: true })?,
                "excluded" => excluded = map.next_value_seed(ListSeed { ctx, strict: true })?,
                _ => {
                    return Err(ctx.fail(field_err(
                        ctx.pointer(),
                        format!(
                            "unknown field; the fields here are {}",
                            super::UPDATE_FIELDS.join(", ")
                        ),
                    )))
                }
            }
            Ok(())
        })?;
        Ok(Ok(RawUpdate {
            segment,
            kind,
            name,
            included,
            excluded,
        }))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Err(self.wrong("an array")))
    }

    defer_types!(wrong);
}

// ---------------------------------------------------------------------------------------------
// patches

/// A `patches` line: one patch object, or an array of them.
struct PatchesSeed<'c> {
    ctx: &'c Ctx,
}

impl PatchesSeed<'_> {
    fn wrong(&self, kind: &'static str) -> ParseError {
        wrong_type("", "a patch object or an array of them", &found(kind))
    }
}

impl<'de> DeserializeSeed<'de> for PatchesSeed<'_> {
    type Value = Result<Vec<RawPatch>, ParseError>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PatchesSeed<'_> {
    type Value = Result<Vec<RawPatch>, ParseError>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a patch object or an array of them")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let ctx = self.ctx;
        let mut patches = Vec::new();
        let mut first_wrong = None;
        for index in 0usize.. {
            let next = ctx.within(Step::Index(index), || {
                seq.next_element_seed(PatchSeed { ctx })
            })?;
            match next {
                Some(Ok(patch)) => patches.push(patch),
                // Keep reading: malformed JSON later in the line is reported first.
                Some(Err(wrong)) => {
                    first_wrong.get_or_insert(wrong);
                }
                None => break,
            }
        }
        Ok(first_wrong.map_or(Ok(patches), Err))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Ok(PatchSeed { ctx: self.ctx }
            .visit_map(map)?
            .map(|patch| vec![patch]))
    }

    defer_types!(wrong);
}

/// One patch; unknown fields are read (duplicates refused) and ignored: the feed may grow.
struct PatchSeed<'c> {
    ctx: &'c Ctx,
}

impl PatchSeed<'_> {
    fn wrong(&self, kind: &'static str) -> ParseError {
        wrong_type(&self.ctx.pointer(), "a patch object", &found(kind))
    }
}

/// A patch as read, before its whole-object rules are checked.
struct RawPatch {
    /// The patch's JSON pointer.
    base: String,
    segment: Option<Value>,
    version: Option<Value>,
    previous: Option<Value>,
    included: ListChange,
    excluded: ListChange,
}

impl RawPatch {
    fn finish(self) -> Result<Patch, ParseError> {
        let base = &self.base;
        let segment_path = format!("{base}/segmentId");
        let segment = match self.segment {
            Some(Value::String(s)) => s,
            None => {
                return Err(field_err(
                    segment_path,
                    "missing: the patch's segment ref is required",
                ))
            }
            Some(other) => return Err(wrong_type(&segment_path, "a string", &other)),
        };
        check_ref(&segment, &segment_path)?;
        let version_path = format!("{base}/version");
        let version = match self.version {
            Some(Value::String(s)) => s,
            None => {
                return Err(field_err(
                    version_path,
                    "missing: the patch's version is required (it may be \"\")",
                ))
            }
            Some(other) => return Err(wrong_type(&version_path, "a string", &other)),
        };
        check_version(&version, &version_path)?;
        let previous_path = format!("{base}/previousVersion");
        let previous_version = opt_string(self.previous, &previous_path)?.unwrap_or_default();
        check_version(&previous_version, &previous_path)?;
        Ok(Patch {
            change: SegmentChange {
                segment,
                kind: None,
                name: None,
                included: self.included,
                excluded: self.excluded,
            },
            version,
            previous_version,
        })
    }
}

impl<'de> DeserializeSeed<'de> for PatchSeed<'_> {
    type Value = Result<RawPatch, ParseError>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PatchSeed<'_> {
    type Value = Result<RawPatch, ParseError>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a patch object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let ctx = self.ctx;
        let base = ctx.pointer();
        let (mut segment, mut version, mut previous) = (None, None, None);
        let (mut included, mut excluded) = (ListChange::default(), ListChange::default());
        read_fields(ctx, map, |key, map| {
            match key {
                "segmentId" => segment = Some(map.next_value_seed(StrictValue { ctx })?),
                "version" => version = Some(map.next_value_seed(StrictValue { ctx })?),
                "previousVersion" => previous = Some(map.next_value_seed(StrictValue { ctx })?),
                "changes" => {
                    (included, excluded) = map.next_value_seed(ChangesSeed { ctx })?;
                }
                _ => {
                    map.next_value_seed(StrictValue { ctx })?;
                }
            }
            Ok(())
        })?;
        Ok(Ok(RawPatch {
            base,
            segment,
            version,
            previous,
            included,
            excluded,
        }))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Err(self.wrong("an array")))
    }

    defer_types!(wrong);
}

/// A patch's `changes`: `{"included"?: {..}, "excluded"?: {..}}`; `null` is empty; other
/// fields are ignored.
struct ChangesSeed<'c> {
    ctx: &'c Ctx,
}

impl ChangesSeed<'_> {
    fn wrong<E: serde::de::Error>(&self, kind: &'static str) -> E {
        self.ctx
            .fail(wrong_type(&self.ctx.pointer(), "an object", &found(kind)))
    }
}

impl<'de> DeserializeSeed<'de> for ChangesSeed<'_> {
    type Value = (ListChange, ListChange);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ChangesSeed<'_> {
    type Value = (ListChange, ListChange);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Default::default())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let ctx = self.ctx;
        let (mut included, mut excluded) = (ListChange::default(), ListChange::default());
        read_fields(ctx, map, |key, map| {
            match key {
                "included" => included = map.next_value_seed(ListSeed { ctx, strict: false })?,
                "excluded" => excluded = map.next_value_seed(ListSeed { ctx, strict: false })?,
                _ => {
                    map.next_value_seed(StrictValue { ctx })?;
                }
            }
            Ok(())
        })?;
        Ok((included, excluded))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(self.wrong("an array"))
    }

    reject_types!(wrong;
        visit_bool(bool) => "a boolean",
        visit_i64(i64) => "a number",
        visit_u64(u64) => "a number",
        visit_f64(f64) => "a number",
        visit_str(&str) => "a string",
    );
}
