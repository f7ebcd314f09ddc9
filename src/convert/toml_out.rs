//! A small TOML writer for the converter's output: sections and array-of-table entries in the
//! order they are added, values as inline TOML, so the output reads like a hand-written file.

use std::fmt::Write;

use serde_json::Value;

/// One `[section]` or `[[array]]` entry: its header and `key = value` lines, in order.
#[derive(Debug, Default)]
pub(super) struct Table {
    header: String,
    comment: Option<String>,
    lines: Vec<(String, Value)>,
}

impl Table {
    pub(super) fn section(name: &str) -> Self {
        Self {
            header: format!("[{name}]"),
            ..Self::default()
        }
    }

    pub(super) fn entry(name: &str) -> Self {
        Self {
            header: format!("[[{name}]]"),
            ..Self::default()
        }
    }

    pub(super) fn comment(mut self, c: impl Into<String>) -> Self {
        self.comment = Some(c.into());
        self
    }

    pub(super) fn set(&mut self, key: &str, v: impl Into<Value>) {
        let v = v.into();
        match self.lines.iter_mut().find(|(k, _)| k == key) {
            Some((_, old)) => *old = v,
            None => self.lines.push((key.to_string(), v)),
        }
    }

    pub(super) fn get(&self, key: &str) -> Option<&Value> {
        self.lines.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub(super) fn remove(&mut self, key: &str) {
        self.lines.retain(|(k, _)| k != key);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    pub(super) fn render(&self, out: &mut String) {
        if let Some(c) = &self.comment {
            for l in c.lines() {
                let _ = writeln!(out, "# {l}");
            }
        }
        let _ = writeln!(out, "{}", self.header);
        for (k, v) in &self.lines {
            if v.is_null() {
                continue;
            }
            let _ = writeln!(out, "{} = {}", key(k), value(v));
        }
        out.push('\n');
    }
}

/// A bare key when TOML allows one, else a quoted key.
fn key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_string()
    } else {
        string(k)
    }
}

/// A TOML basic string: JSON's escapes are all valid TOML escapes.
fn string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// A JSON value as an inline TOML value (`null`s inside tables and arrays are left out: TOML
/// has none).
pub(super) fn value(v: &Value) -> String {
    match v {
        Value::Null => "\"\"".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s),
        Value::Array(a) => format!(
            "[{}]",
            a.iter()
                .filter(|v| !v.is_null())
                .map(value)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Object(o) if o.is_empty() => "{}".into(),
        Value::Object(o) => format!(
            "{{ {} }}",
            o.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("{} = {}", key(k), value(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_values_are_toml() {
        let v =
            serde_json::json!({"type": "enabled", "budget_tokens": 4096, "a b": [1, null, "x\"y"]});
        let text = format!("t = {}", value(&v));
        use figment::providers::{Format, Toml};
        let parsed: serde_json::Value = figment::Figment::from(Toml::string(&text))
            .extract()
            .unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(parsed["t"]["budget_tokens"], 4096);
        assert_eq!(parsed["t"]["a b"][1], "x\"y");
    }
}
