//! JSON into a [`Value`] as `serde_json` builds it, except that an object giving the same
//! field twice is an error naming that field's JSON pointer, where `serde_json` keeps the last
//! value silently.

use super::{escape_token, field_err, ParseError};
use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::fmt;

/// One step from the document's root to the value being read.
enum Step {
    Key(String),
    Index(usize),
}

#[derive(Default)]
struct State {
    /// Where the value being read is.
    path: Vec<Step>,
    /// The pointer of the first duplicate field found.
    duplicate: Option<String>,
}

impl State {
    fn pointer_to(&self, key: &str) -> String {
        let mut out = String::new();
        for step in &self.path {
            out.push('/');
            match step {
                Step::Key(k) => out.push_str(&escape_token(k)),
                Step::Index(i) => out.push_str(&i.to_string()),
            }
        }
        out.push('/');
        out.push_str(&escape_token(key));
        out
    }
}

/// Parses one JSON document, refusing duplicate fields.
pub(crate) fn parse(text: &str) -> Result<Value, ParseError> {
    let state = RefCell::new(State::default());
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = StrictValue { state: &state }
        .deserialize(&mut de)
        .and_then(|value| de.end().map(|()| value));
    match parsed {
        Ok(value) => Ok(value),
        Err(e) => match state.into_inner().duplicate {
            Some(pointer) => Err(field_err(
                pointer,
                "duplicate field: it appears more than once in its object, and which one \
                 counts would be a guess",
            )),
            None => Err(ParseError::Json(e.to_string())),
        },
    }
}

#[derive(Clone, Copy)]
struct StrictValue<'s> {
    state: &'s RefCell<State>,
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
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        loop {
            self.state.borrow_mut().path.push(Step::Index(items.len()));
            let item = seq.next_element_seed(self);
            self.state.borrow_mut().path.pop();
            match item? {
                Some(item) => items.push(item),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                let mut state = self.state.borrow_mut();
                let pointer = state.pointer_to(&key);
                state.duplicate = Some(pointer);
                return Err(A::Error::custom(format!("duplicate field {key:?}")));
            }
            self.state.borrow_mut().path.push(Step::Key(key));
            let value = map.next_value_seed(self);
            let step = self.state.borrow_mut().path.pop();
            let value = value?;
            if let Some(Step::Key(key)) = step {
                object.insert(key, value);
            }
        }
        Ok(Value::Object(object))
    }
}
