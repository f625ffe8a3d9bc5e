//! A YAML value with the path that reached it, so every refusal names the
//! source file's field (`slos[0].sli.raw`), never a Headroom one.

use std::collections::BTreeMap;

use serde_yaml::Value;

use super::ImportError;

/// A value and the path that reached it in the source document.
#[derive(Clone, Debug)]
pub struct At<'a> {
    pub value: &'a Value,
    pub path: String,
}

impl<'a> At<'a> {
    pub fn root(value: &'a Value, prefix: &str) -> Self {
        At {
            value,
            path: prefix.to_owned(),
        }
    }

    /// The path of `key` below this node.
    pub fn field(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// A child when present (a `null` counts as absent).
    pub fn get(&self, key: &str) -> Option<At<'a>> {
        self.value
            .get(key)
            .filter(|v| !v.is_null())
            .map(|value| At {
                value,
                path: self.field(key),
            })
    }

    /// A child that must be present.
    pub fn req(&self, key: &str) -> Result<At<'a>, ImportError> {
        self.get(key)
            .ok_or_else(|| ImportError::new(self.field(key), "missing"))
    }

    pub fn str(&self) -> Result<&'a str, ImportError> {
        self.value
            .as_str()
            .ok_or_else(|| ImportError::new(&self.path, "must be a string"))
    }

    pub fn req_str(&self, key: &str) -> Result<&'a str, ImportError> {
        self.req(key)?.str()
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&'a str>, ImportError> {
        self.get(key).map(|v| v.str()).transpose()
    }

    /// A number, also written as a string (Pyrra's `target: "99.5"`).
    pub fn number(&self) -> Result<f64, ImportError> {
        match self.value {
            Value::Number(n) => n
                .as_f64()
                .ok_or_else(|| ImportError::new(&self.path, "not a number")),
            Value::String(s) => s
                .trim()
                .parse()
                .map_err(|_| ImportError::new(&self.path, format!("{s:?} is not a number"))),
            _ => Err(ImportError::new(&self.path, "must be a number")),
        }
    }

    pub fn bool(&self) -> Result<bool, ImportError> {
        self.value
            .as_bool()
            .ok_or_else(|| ImportError::new(&self.path, "must be true or false"))
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, ImportError> {
        self.get(key).map(|v| v.bool()).transpose()
    }

    /// The items of a sequence, each with its index in the path.
    pub fn seq(&self) -> Result<Vec<At<'a>>, ImportError> {
        let items = self
            .value
            .as_sequence()
            .ok_or_else(|| ImportError::new(&self.path, "must be a list"))?;
        Ok(items
            .iter()
            .enumerate()
            .map(|(i, value)| At {
                value,
                path: format!("{}[{i}]", self.path),
            })
            .collect())
    }

    /// A map of strings (labels, annotations). Numbers and booleans are
    /// written as YAML renders them, as Sloth and Prometheus do.
    pub fn string_map(&self) -> Result<BTreeMap<String, String>, ImportError> {
        let map = self
            .value
            .as_mapping()
            .ok_or_else(|| ImportError::new(&self.path, "must be a map of strings"))?;
        let mut out = BTreeMap::new();
        for (k, v) in map {
            let key = k
                .as_str()
                .ok_or_else(|| ImportError::new(&self.path, "keys must be strings"))?;
            let value = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => {
                    return Err(ImportError::new(
                        self.field(key),
                        "must be a string, number or boolean",
                    ));
                }
            };
            out.insert(key.to_owned(), value);
        }
        Ok(out)
    }

    pub fn opt_string_map(&self, key: &str) -> Result<BTreeMap<String, String>, ImportError> {
        self.get(key)
            .map(|v| v.string_map())
            .transpose()
            .map(Option::unwrap_or_default)
    }

    /// Refuse a field that is set, with why.
    pub fn refuse_if_set(&self, key: &str, why: &str) -> Result<(), ImportError> {
        match self.get(key) {
            Some(v) if !is_empty(v.value) => Err(ImportError::new(self.field(key), why)),
            _ => Ok(()),
        }
    }
}

/// Empty maps, lists and strings say nothing, as in Go's `omitempty`.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Mapping(m) => m.is_empty(),
        Value::Sequence(s) => s.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}
