//! Turning figment and serde failures into [`ConfigProblem`]s with full key paths, so
//! `portcullis check` reports every problem, not only the first.

use std::fmt;

use figment::value::Value;
use portcullis_core::ConfigProblem;
use serde::de::DeserializeOwned;

/// Every problem found while loading, each with its key path.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

pub(super) fn list<'a>(it: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = it.collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

pub(super) fn deserialize_at<T: DeserializeOwned>(
    path: &str,
    v: &Value,
    problems: &mut Vec<ConfigProblem>,
) -> Option<T> {
    match v.deserialize::<T>() {
        Ok(t) => Some(t),
        Err(e) => {
            for err in e {
                problems.push(figment_problem(path, &err));
            }
            None
        }
    }
}

pub(super) fn list_at<T: DeserializeOwned>(
    path: &str,
    v: Option<&Value>,
    problems: &mut Vec<ConfigProblem>,
) -> Vec<T> {
    let Some(v) = v else { return Vec::new() };
    let Some(items) = v.as_array() else {
        problems.push(ConfigProblem::new(
            path,
            format!("must be a list ([[{path}]] tables in TOML)"),
        ));
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| deserialize_at(&format!("{path}[{i}]"), item, problems))
        .collect()
}

/// Turn one figment error into a problem whose path is the full key path.
pub(super) fn figment_problem(base: &str, err: &figment::Error) -> ConfigProblem {
    use figment::error::Kind;
    let mut path = base.to_string();
    for seg in &err.path {
        if seg.parse::<usize>().is_ok() {
            path.push_str(&format!("[{seg}]"));
        } else {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(seg);
        }
    }
    let join = |path: &str, k: &str| {
        // figment's path may already end with the offending key.
        if path == k || path.ends_with(&format!(".{k}")) {
            path.to_string()
        } else if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match &err.kind {
        Kind::UnknownField(field, expected) => ConfigProblem::new(
            join(&path, field),
            format!("unknown key; expected one of {}", expected.join(", ")),
        ),
        Kind::MissingField(field) => ConfigProblem::new(join(&path, field), "is required"),
        Kind::DuplicateField(field) => ConfigProblem::new(join(&path, field), "is set twice"),
        // The value itself is never quoted: it may be a secret (`api_key = 5` is harmless to
        // echo, `api_key = { k = "sk-live-..." }` is not).
        Kind::InvalidType(actual, expected) => ConfigProblem::new(
            or_config(path),
            format!(
                "invalid type: found {}, expected {expected}",
                kind_of(actual)
            ),
        ),
        Kind::InvalidValue(actual, expected) => ConfigProblem::new(
            or_config(path),
            format!(
                "invalid value: found {}, expected {expected}",
                kind_of(actual)
            ),
        ),
        other => {
            // A syntax error quotes the offending source line, which may hold a secret: keep
            // the first line (what and where) only.
            let full = other.to_string();
            let mut msg = full.lines().next().unwrap_or("").trim_end().to_string();
            if let Some(md) = &err.metadata {
                msg.push_str(&format!(" (from {})", md.name));
            }
            ConfigProblem::new(
                if path.is_empty() {
                    "config".into()
                } else {
                    path
                },
                msg,
            )
        }
    }
}

fn or_config(path: String) -> String {
    if path.is_empty() {
        "config".into()
    } else {
        path
    }
}

/// What kind of value was found, without the value.
fn kind_of(actual: &figment::error::Actual) -> &'static str {
    use figment::error::Actual;
    match actual {
        Actual::Bool(_) => "a boolean",
        Actual::Unsigned(_) | Actual::Signed(_) => "an integer",
        Actual::Float(_) => "a float",
        Actual::Char(_) => "a character",
        Actual::Str(_) => "a string",
        Actual::Bytes(_) => "bytes",
        Actual::Unit => "nothing",
        Actual::Option => "an option",
        Actual::NewtypeStruct => "a newtype",
        Actual::Seq => "a list",
        Actual::Map => "a table",
        Actual::Enum => "an enum",
        Actual::UnitVariant => "a unit variant",
        Actual::NewtypeVariant => "a newtype variant",
        Actual::TupleVariant => "a tuple variant",
        Actual::StructVariant => "a struct variant",
        Actual::Other(_) => "another kind of value",
    }
}
