//! Carrying out a command on a session, and the text the gateway answers with.

use std::{fmt::Write, sync::Arc, time::Duration};

use serde_json::Value;

use crate::{
    command::{self, Command, CommandKind},
    session::{SessionKey, Sessions, Settings},
};

/// Keys that belong to each request and cannot be set for a session.
const RESERVED: &[&str] = &["messages", "input", "stream", "stream_options", "prompt"];

/// Run the command text (after the prefix) for `key`'s session: what it was and the answer.
pub(crate) fn run(
    sessions: &Sessions,
    key: SessionKey,
    text: &str,
    prefix: &str,
    max_params: usize,
    ttl: Duration,
) -> (CommandKind, String) {
    let command = match command::parse(text) {
        Ok(c) => c,
        Err(why) => return (CommandKind::Invalid, invalid(&why, prefix, ttl)),
    };
    match command {
        Command::Help => (CommandKind::Help, help(prefix, ttl)),
        Command::Show => {
            let settings = sessions.get(key).unwrap_or_default();
            (CommandKind::Show, show(&settings, prefix))
        }
        Command::Set(pairs) => {
            let r = sessions.update(key, |s| {
                for (k, v) in &pairs {
                    set_one(s, k, v, max_params)?;
                }
                Ok::<_, String>(show(s, prefix))
            });
            match r {
                Ok(listing) => {
                    let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
                    let text = format!(
                        "Set {} for this session's next requests.\n\n{listing}",
                        names.join(", ")
                    );
                    (CommandKind::Set, text)
                }
                Err(why) => (CommandKind::Invalid, invalid(&why, prefix, ttl)),
            }
        }
        Command::Unset(keys) => {
            let r = sessions.update(key, |s| {
                let mut removed = Vec::new();
                let mut missing = Vec::new();
                for k in &keys {
                    let was_set = match k.as_str() {
                        "*" => {
                            let any = !s.is_empty();
                            *s = Settings::default();
                            any
                        }
                        "model" => s.model.take().is_some(),
                        "loop_detection" => std::mem::take(&mut s.loop_detection_off),
                        other => s.params.remove(other).is_some(),
                    };
                    if was_set {
                        removed.push(k.as_str());
                    } else {
                        missing.push(k.as_str());
                    }
                }
                let mut text = String::new();
                if !removed.is_empty() {
                    let _ = write!(text, "Removed {}.", removed.join(", "));
                }
                if !missing.is_empty() {
                    if !text.is_empty() {
                        text.push(' ');
                    }
                    let _ = write!(text, "Not set: {}.", missing.join(", "));
                }
                let _ = write!(text, "\n\n{}", show(s, prefix));
                Ok::<_, String>(text)
            });
            match r {
                Ok(text) => (CommandKind::Unset, text),
                Err(why) => (CommandKind::Invalid, invalid(&why, prefix, ttl)),
            }
        }
    }
}

fn set_one(s: &mut Settings, key: &str, value: &Value, max_params: usize) -> Result<(), String> {
    match key {
        "model" => {
            let name = match value {
                Value::String(m) => m.trim().to_owned(),
                Value::Number(n) => n.to_string(),
                _ => String::new(),
            };
            if name.is_empty() || name.len() > 256 {
                return Err("`model` must be a model name, e.g. `model=gpt-4o`".to_owned());
            }
            s.model = Some(Arc::from(name));
        }
        "loop_detection" => {
            let on = match value {
                Value::Bool(b) => *b,
                Value::String(v) if v.eq_ignore_ascii_case("on") => true,
                Value::String(v) if v.eq_ignore_ascii_case("off") => false,
                _ => return Err("`loop_detection` must be `on` or `off`".to_owned()),
            };
            s.loop_detection_off = !on;
        }
        k if RESERVED.contains(&k) => {
            return Err(format!(
                "`{k}` cannot be set for a session: it belongs to each request"
            ));
        }
        k => {
            if !s.params.contains_key(k) && s.params.len() >= max_params {
                return Err(format!(
                    "a session holds at most {max_params} parameters; unset one first"
                ));
            }
            s.params.insert(k.to_owned(), value.clone());
        }
    }
    Ok(())
}

fn show(s: &Settings, prefix: &str) -> String {
    if s.is_empty() {
        return format!(
            "This session has no settings. Set one with `{prefix}set(key=value)`; `{prefix}help` explains."
        );
    }
    let mut out = String::from("This session's settings:");
    if let Some(m) = &s.model {
        let _ = write!(out, "\n- model = {m}");
    }
    if s.loop_detection_off {
        out.push_str("\n- loop_detection = off");
    }
    for (k, v) in &s.params {
        let _ = write!(out, "\n- {k} = {v}");
    }
    out
}

fn invalid(why: &str, prefix: &str, ttl: Duration) -> String {
    format!(
        "That command was not understood: {why}. Nothing was changed.\n\n{}",
        help(prefix, ttl)
    )
}

pub(crate) fn help(prefix: &str, ttl: Duration) -> String {
    format!(
        "Gateway commands (answered by the gateway; nothing is sent to the model):\n\
         - `{p}set(key=value, ...)`: settings for this session's next requests. \
         `model=NAME` sends them to that model; `loop_detection=on|off` turns loop detection \
         on or off; any other key is a request parameter added to each request that does not \
         set it itself, e.g. `temperature=0.2` or `thinking={{\"type\":\"enabled\",\"budget_tokens\":4096}}`. \
         Values are read as JSON when they are JSON, else as text.\n\
         - `{p}unset(key, ...)`: remove settings (`{p}unset(*)` removes them all).\n\
         - `{p}show`: list this session's settings.\n\
         - `{p}help`: this help.\n\
         A session is your `x-session-id` header, else your API key (and memory user id); \
         its settings are forgotten after {} without a request.",
        humantime::format_duration(ttl),
        p = prefix,
    )
}
