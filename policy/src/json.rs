//! A JSON tree that keeps object fields in order and duplicates visible, and
//! a walker over it that turns every type or shape problem into a
//! [`PolicyError`] naming the place and the field.
//!
//! `serde_json::Value` would silently keep only the last of two equal keys;
//! a policy with `"effect": "deny", ..., "effect": "permit"` must be
//! rejected, not half-read.

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;

use crate::error::PolicyError;

/// A parsed JSON value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// Parse JSON text.
    pub(crate) fn parse(text: &str) -> Result<Json, PolicyError> {
        serde_json::from_str(text).map_err(|e| PolicyError::Syntax {
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })
    }

    /// The type's name for error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        serde_json::Number::from_f64(v)
            .map(Json::Number)
            .ok_or_else(|| E::custom("number is not finite"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
        Json::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Json>()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut fields = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value::<Json>()?;
            fields.push((key, value));
        }
        Ok(Json::Object(fields))
    }
}

/// A JSON object being read, with its location for errors.
pub(crate) struct Obj<'a> {
    pub(crate) at: String,
    fields: &'a [(String, Json)],
}

impl<'a> Obj<'a> {
    /// View `value` as an object with the given `known` fields: rejects other
    /// types, duplicate fields and unknown fields.
    pub(crate) fn new(
        value: &'a Json,
        at: String,
        field: &str,
        known: &[&str],
    ) -> Result<Obj<'a>, PolicyError> {
        let o = Obj::unchecked(value, at, field)?;
        o.check_known(known)?;
        Ok(o)
    }

    /// View `value` as an object, rejecting other types and duplicate
    /// fields; call [`Obj::check_known`] once the location is final.
    pub(crate) fn unchecked(
        value: &'a Json,
        at: String,
        field: &str,
    ) -> Result<Obj<'a>, PolicyError> {
        let Json::Object(fields) = value else {
            return Err(PolicyError::WrongType {
                at,
                field: field.to_owned(),
                expected: "an object",
                found: value.kind(),
            });
        };
        for (i, (key, _)) in fields.iter().enumerate() {
            if fields[..i].iter().any(|(k, _)| k == key) {
                return Err(PolicyError::DuplicateField {
                    at,
                    field: key.clone(),
                });
            }
        }
        Ok(Obj { at, fields })
    }

    /// Reject fields not in `known`.
    pub(crate) fn check_known(&self, known: &[&str]) -> Result<(), PolicyError> {
        match self
            .fields
            .iter()
            .find(|(k, _)| !known.contains(&k.as_str()))
        {
            Some((k, _)) => Err(PolicyError::UnknownField {
                at: self.at.clone(),
                field: k.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Rename the location (once a better name is known, e.g. the order
    /// number of a rule).
    pub(crate) fn relocate(&mut self, at: String) {
        self.at = at;
    }

    /// A field's value; JSON `null` counts as absent.
    pub(crate) fn get(&self, name: &str) -> Option<&'a Json> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .filter(|v| !matches!(v, Json::Null))
    }

    pub(crate) fn wrong_type(
        &self,
        field: &str,
        expected: &'static str,
        found: &Json,
    ) -> PolicyError {
        PolicyError::WrongType {
            at: self.at.clone(),
            field: field.to_owned(),
            expected,
            found: found.kind(),
        }
    }

    pub(crate) fn missing(&self, field: &'static str) -> PolicyError {
        PolicyError::MissingField {
            at: self.at.clone(),
            field,
        }
    }

    /// An optional string field.
    pub(crate) fn opt_str(&self, name: &str) -> Result<Option<&'a str>, PolicyError> {
        match self.get(name) {
            None => Ok(None),
            Some(Json::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.wrong_type(name, "a string", other)),
        }
    }

    /// A required string field.
    pub(crate) fn req_str(&self, name: &'static str) -> Result<&'a str, PolicyError> {
        self.opt_str(name)?.ok_or_else(|| self.missing(name))
    }

    /// An optional boolean field.
    pub(crate) fn opt_bool(&self, name: &str) -> Result<Option<bool>, PolicyError> {
        match self.get(name) {
            None => Ok(None),
            Some(Json::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.wrong_type(name, "a boolean", other)),
        }
    }

    /// An optional `u32` field.
    pub(crate) fn opt_u32(&self, name: &'static str) -> Result<Option<u32>, PolicyError> {
        match self.get(name) {
            None => Ok(None),
            Some(Json::Number(n)) => match n.as_u64().map(u32::try_from) {
                Some(Ok(v)) => Ok(Some(v)),
                _ => Err(PolicyError::OutOfRange {
                    at: self.at.clone(),
                    field: name,
                    value: n.to_string(),
                    range: "an integer from 0 to 4294967295",
                }),
            },
            Some(other) => Err(self.wrong_type(name, "a number", other)),
        }
    }

    /// An optional array field.
    pub(crate) fn opt_array(&self, name: &str) -> Result<Option<&'a [Json]>, PolicyError> {
        match self.get(name) {
            None => Ok(None),
            Some(Json::Array(items)) => Ok(Some(items)),
            Some(other) => Err(self.wrong_type(name, "an array", other)),
        }
    }

    /// A field that is a string or an array of strings (e.g. `action`).
    pub(crate) fn opt_str_or_list(&self, name: &str) -> Result<Option<Vec<&'a str>>, PolicyError> {
        match self.get(name) {
            None => Ok(None),
            Some(Json::String(s)) => Ok(Some(vec![s.as_str()])),
            Some(Json::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Json::String(s) => Ok(s.as_str()),
                    other => Err(self.wrong_type(name, "a string or an array of strings", other)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(other) => Err(self.wrong_type(name, "a string or an array of strings", other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_duplicates_and_order() {
        let j = Json::parse(r#"{"b": 1, "a": [true, null, "x", 1.5], "b": 2}"#).unwrap();
        let Json::Object(fields) = &j else { panic!() };
        let keys: Vec<_> = fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["b", "a", "b"]);
        let err = Obj::new(&j, "here".into(), "(document)", &["a", "b"])
            .err()
            .unwrap();
        assert!(matches!(err, PolicyError::DuplicateField { field, .. } if field == "b"));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = Json::parse("{\n  \"a\": ,\n}").unwrap_err();
        let PolicyError::Syntax { line, column, .. } = err else {
            panic!("{err:?}")
        };
        assert_eq!((line, column), (2, 8));
    }

    #[test]
    fn typed_getters() {
        let j = Json::parse(
            r#"{"s": "x", "n": 7, "neg": -1, "big": 5000000000, "b": true, "z": null}"#,
        )
        .unwrap();
        let o = Obj::new(
            &j,
            "t".into(),
            "(document)",
            &["s", "n", "neg", "big", "b", "z"],
        )
        .unwrap();
        assert_eq!(o.opt_str("s").unwrap(), Some("x"));
        assert_eq!(o.opt_str("z").unwrap(), None);
        assert_eq!(o.opt_u32("n").unwrap(), Some(7));
        assert!(matches!(
            o.opt_u32("neg"),
            Err(PolicyError::OutOfRange { .. })
        ));
        assert!(matches!(
            o.opt_u32("big"),
            Err(PolicyError::OutOfRange { .. })
        ));
        assert!(matches!(
            o.opt_bool("s"),
            Err(PolicyError::WrongType { .. })
        ));
        assert!(matches!(
            o.req_str("missing"),
            Err(PolicyError::MissingField { .. })
        ));
    }
}
