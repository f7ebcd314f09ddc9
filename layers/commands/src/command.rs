//! The command language: `!/set(key=value, ...)`, `!/unset(key, ...)`, `!/show`, `!/help`.

use std::fmt;

use serde_json::Value;

/// What a command asked for, as parsed (before its values are checked against the keys).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Command {
    /// `set(key=value, ...)`: each key with its value (JSON when it parses, else a string).
    Set(Vec<(String, Value)>),
    /// `unset(key, ...)`; `*` removes everything.
    Unset(Vec<String>),
    /// `show`.
    Show,
    /// `help`.
    Help,
}

/// Which command a response answered: the `x-portcullis-command` header value, also inserted
/// as a response extension so the access log can read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandKind {
    /// `!/set(...)` changed the session's settings.
    Set,
    /// `!/unset(...)` removed settings.
    Unset,
    /// `!/show` listed the settings.
    Show,
    /// `!/help` explained the commands.
    Help,
    /// The text started with the prefix but was not a valid command (or a value was
    /// refused): the answer explains the syntax and nothing changed.
    Invalid,
}

impl CommandKind {
    /// `set`, `unset`, `show`, `help` or `invalid`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Set => "set",
            Self::Unset => "unset",
            Self::Show => "show",
            Self::Help => "help",
            Self::Invalid => "invalid",
        }
    }
}

impl fmt::Display for CommandKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parse the text after the prefix. `Err` says what is wrong, in a sentence for the user.
pub(crate) fn parse(text: &str) -> Result<Command, String> {
    let text = text.trim();
    let name_end = text
        .find(|c: char| !c.is_ascii_alphabetic() && c != '_')
        .unwrap_or(text.len());
    let (name, rest) = text.split_at(name_end);
    let rest = rest.trim_start();
    let args = if rest.is_empty() {
        None
    } else if let Some(inner) = rest.strip_prefix('(') {
        let close = closing_paren(inner).ok_or_else(|| {
            "the arguments are not closed: a `)` is missing (or a quote or bracket is open)"
                .to_owned()
        })?;
        let after = inner[close + 1..].trim();
        if !after.is_empty() {
            return Err(format!(
                "unexpected text after the command: `{}`",
                excerpt(after)
            ));
        }
        Some(&inner[..close])
    } else {
        return Err(format!(
            "expected `(` after `{}`, found `{}`",
            excerpt(name),
            excerpt(rest)
        ));
    };
    match name.to_ascii_lowercase().as_str() {
        "set" => {
            let args = args.unwrap_or("");
            let mut pairs = Vec::new();
            for item in split_top_level(args) {
                let item = item.trim();
                if item.is_empty() {
                    continue;
                }
                let Some((key, value)) = item.split_once('=') else {
                    return Err(format!("`{}` is not `key=value`", excerpt(item)));
                };
                let key = checked_key(key.trim())?;
                let value = value.trim();
                if value.is_empty() {
                    return Err(format!("`{key}` has no value"));
                }
                pairs.push((key.to_owned(), value_of(value)));
            }
            if pairs.is_empty() {
                return Err("`set` needs at least one `key=value`".to_owned());
            }
            Ok(Command::Set(pairs))
        }
        "unset" => {
            let args = args.unwrap_or("");
            let mut keys = Vec::new();
            for item in split_top_level(args) {
                let item = item.trim();
                if item.is_empty() {
                    continue;
                }
                if item == "*" {
                    keys.push("*".to_owned());
                } else {
                    keys.push(checked_key(item)?.to_owned());
                }
            }
            if keys.is_empty() {
                return Err("`unset` needs at least one key (or `*` for all)".to_owned());
            }
            Ok(Command::Unset(keys))
        }
        "show" | "help" if args.is_some_and(|a| !a.trim().is_empty()) => {
            Err(format!("`{name}` takes no arguments"))
        }
        "show" => Ok(Command::Show),
        "help" => Ok(Command::Help),
        "" => Err("no command name after the prefix".to_owned()),
        other => Err(format!("unknown command `{}`", excerpt(other))),
    }
}

/// A value as JSON when it parses (`0.2`, `true`, `{"type":"enabled"}`, `"quoted"`), else the
/// text itself as a string (`gpt-4o`, `off`).
fn value_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

fn checked_key(key: &str) -> Result<&str, String> {
    let ok = !key.is_empty()
        && key.len() <= 64
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
    if ok {
        Ok(key)
    } else {
        Err(format!(
            "`{}` is not a key (letters, digits, `_`, `-`, `.`)",
            excerpt(key)
        ))
    }
}

/// The byte index of the `)` closing the arguments, skipping brackets and JSON strings.
fn closing_paren(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_str = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if in_str {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '[' | '{' | '(' => depth += 1,
            ']' | '}' => depth = depth.saturating_sub(1),
            ')' if depth == 0 => return Some(i),
            ')' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// Split at the commas that are not inside brackets or JSON strings.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut in_str, mut escaped, mut start) = (0usize, false, false, 0);
    for (i, c) in s.char_indices() {
        if in_str {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '[' | '{' | '(' => depth += 1,
            ']' | '}' | ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// At most 40 characters of user text, for error messages.
fn excerpt(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parses_each_command() {
        assert_eq!(
            parse("set(model=gpt-4o, temperature=0.2)").unwrap(),
            Command::Set(vec![
                ("model".into(), json!("gpt-4o")),
                ("temperature".into(), json!(0.2))
            ])
        );
        assert_eq!(
            parse(
                r#" SET ( thinking = {"type":"enabled","budget_tokens":4096}, stop=["a,b", ")"] ) "#
            )
            .unwrap(),
            Command::Set(vec![
                (
                    "thinking".into(),
                    json!({"type":"enabled","budget_tokens":4096})
                ),
                ("stop".into(), json!(["a,b", ")"]))
            ])
        );
        assert_eq!(
            parse("set(note=\"a, b\")").unwrap(),
            Command::Set(vec![("note".into(), json!("a, b"))])
        );
        assert_eq!(
            parse("unset(model, temperature,)").unwrap(),
            Command::Unset(vec!["model".into(), "temperature".into()])
        );
        assert_eq!(parse("unset(*)").unwrap(), Command::Unset(vec!["*".into()]));
        assert_eq!(parse("show").unwrap(), Command::Show);
        assert_eq!(parse("show()").unwrap(), Command::Show);
        assert_eq!(parse("help \n").unwrap(), Command::Help);
    }

    #[test]
    fn malformed_commands_say_why() {
        for (text, why) in [
            ("set", "at least one"),
            ("set()", "at least one"),
            ("set(model)", "is not `key=value`"),
            ("set(model=)", "has no value"),
            ("set(model=x", "not closed"),
            ("set(a={\"b\":1)", "not closed"),
            ("set(model=x) and more", "unexpected text"),
            ("set(bad key=1)", "is not a key"),
            ("unset()", "at least one"),
            ("show(x)", "takes no arguments"),
            ("frobnicate", "unknown command"),
            ("", "no command name"),
            ("set model=x", "expected `(`"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }
}
