//! Reading a JSON object key by key, so that every error names its key.
//!
//! serde's derived readers say "invalid type: string, expected usize" without saying where;
//! [`Fields`] reads each key on its own (so a wrong type names the key), takes each default
//! where it is read (so the defaults live next to the keys), and refuses the keys nobody read
//! (`deny_unknown_fields`, listing the keys that exist).

use crate::{Error, Result};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// The keys of one JSON object, consumed as they are read.
pub(crate) struct Fields {
    map: Map<String, Value>,
    /// Prefix of the keys in messages: "" at the top level, "ssm_cfg." inside it.
    path: &'static str,
    /// What the object is, for the unknown-key message ("a Mamba1 layer's ssm_cfg").
    what: &'static str,
    /// The keys read so far: the keys this object may have.
    known: Vec<&'static str>,
    /// The first required key found missing, reported by [`Fields::finish`] after any unknown
    /// key (a misspelt required key is first an unknown key).
    missing: Option<&'static str>,
}

/// An error about `key` of a configuration.
pub(crate) fn key_error(key: impl std::fmt::Display, what: impl std::fmt::Display) -> Error {
    Error::Config(format!("`{key}`: {what}"))
}

impl Fields {
    /// `value` must be an object (`name` is the key it stood under, for the message).
    pub fn new(value: Value, name: &str, path: &'static str, what: &'static str) -> Result<Fields> {
        match value {
            Value::Object(map) => Ok(Fields { map, path, what, known: Vec::new(), missing: None }),
            other => Err(key_error(name, format!("expected an object {{..}}, found {other}"))),
        }
    }

    /// The same keys, described as `what` in the unknown-key message.
    pub fn rename(self, what: &'static str) -> Fields {
        Fields { what, ..self }
    }

    /// `key`'s value if present (`Ok(None)` if absent). A value of the wrong type is an error
    /// naming the key.
    pub fn get<T: DeserializeOwned>(&mut self, key: &'static str) -> Result<Option<T>> {
        self.known.push(key);
        match self.map.remove(key) {
            None => Ok(None),
            Some(v) => serde_json::from_value(v).map(Some).map_err(|e| key_error(self.path.to_string() + key, e)),
        }
    }

    /// `key`'s value, or `default` if absent.
    pub fn or<T: DeserializeOwned>(&mut self, key: &'static str, default: T) -> Result<T> {
        Ok(self.get(key)?.unwrap_or(default))
    }

    /// `key`'s value; if absent, [`Fields::finish`] will fail (this returns `T::default()`
    /// meanwhile, which nobody sees).
    pub fn required<T: DeserializeOwned + Default>(&mut self, key: &'static str) -> Result<T> {
        let value = self.get(key)?;
        if value.is_none() {
            self.missing = self.missing.or(Some(key));
        }
        Ok(value.unwrap_or_default())
    }

    /// Every key must have been read: a key left over is unknown (a misspelling, or a setting
    /// of another layer), and a required key must be present.
    pub fn finish(self) -> Result<()> {
        if let Some(key) = self.map.keys().next() {
            let known = self.known.join(", ");
            return Err(key_error(
                format!("{}{key}", self.path),
                format!("unknown key: {} has the keys {known}", self.what),
            ));
        }
        match self.missing {
            Some(key) => Err(key_error(format!("{}{key}", self.path), "missing (it has no default)")),
            None => Ok(()),
        }
    }
}
