//! OpenAI custom (freeform) tools, which only the Responses API has, carried through an
//! upstream that knows only JSON-schema function tools.
//!
//! Codex's `apply_patch` is one (`{"type":"custom","name":"apply_patch","format":{"type":
//! "grammar","syntax":"lark","definition":..}}`): the model answers with free text, not JSON
//! arguments. To Anthropic or a chat upstream the tool becomes a function taking one string,
//! `input`, its description carrying the grammar; the function's call comes back to the
//! client as a `custom_tool_call` item whose `input` is that string, and the client's
//! `custom_tool_call` / `custom_tool_call_output` history items go up as the function's
//! call and result. Which names are custom rides in [`Plan::custom_tools`](crate::Plan).

use serde_json::{json, Map, Value};

use crate::types::chat::{ChatTool, FunctionDef};

/// The one parameter of the function a custom tool becomes.
pub const INPUT: &str = "input";

/// The function tool standing for custom tool `name`; `format` is the tool's `format`
/// (`{"type":"text"}` or `{"type":"grammar","syntax":..,"definition":..}`).
pub fn function_for(name: String, description: Option<String>, format: Option<&Value>) -> ChatTool {
    let grammar = format.filter(|f| f.get("type").and_then(Value::as_str) == Some("grammar"));
    let mut input = String::from("The tool's whole input, as free text (not JSON).");
    if let Some(f) = grammar {
        let syntax = f.get("syntax").and_then(Value::as_str).unwrap_or("lark");
        let definition = f.get("definition").and_then(Value::as_str).unwrap_or("");
        input.push_str(&format!(
            " It must match this {syntax} grammar:\n{definition}"
        ));
    }
    ChatTool {
        kind: "function".into(),
        function: Some(FunctionDef {
            name,
            description,
            parameters: Some(json!({
                "type": "object",
                "properties": {INPUT: {"type": "string", "description": input}},
                "required": [INPUT],
            })),
            strict: None,
        }),
        extra: Map::new(),
    }
}

/// A chat custom tool's `format` in the Responses shape [`function_for`] reads: chat nests
/// the grammar (`{"type":"grammar","grammar":{"syntax","definition"}}`), Responses does not.
pub fn flat_format(format: &Value) -> Value {
    match format.get("grammar") {
        Some(Value::Object(g)) => {
            let mut flat = g.clone();
            flat.insert("type".into(), Value::String("grammar".into()));
            Value::Object(flat)
        }
        _ => format.clone(),
    }
}

/// The arguments (JSON text) of the function call standing for a custom tool call with
/// `input`.
pub fn arguments_for(input: &str) -> String {
    json!({ INPUT: input }).to_string()
}

/// A custom tool call's `input`, read back from the function call's `arguments`: the
/// `input` string, or the arguments as they are when the model wrote something else.
pub fn input_of(arguments: &str) -> String {
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(mut m)) => match m.remove(INPUT) {
            Some(Value::String(s)) => s,
            _ => arguments.to_owned(),
        },
        _ => arguments.to_owned(),
    }
}

/// A custom tool's `input` decoded while the function's arguments stream in
/// (`{"input": "*** Begin Patch\n...`), so clients get it piece by piece as OpenAI streams
/// it, not whole at the call's end. Arguments of another shape (another key first) are left
/// to [`input_of`] at the end: [`streamed`](Self::streamed) says which.
#[derive(Debug, Default)]
pub struct InputStream {
    state: InputState,
    /// Arguments not yet decoded: before the string opens, or an escape cut in two.
    held: String,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum InputState {
    /// Before `"input": "`.
    #[default]
    Before,
    /// Inside the string.
    In,
    /// The string closed.
    Done,
    /// Not `{"input": "..`: nothing is streamed.
    Other,
}

/// What a prefix of the arguments can still become.
enum Opening {
    /// The string opens at this byte.
    At(usize),
    /// Not yet known.
    Partial,
    /// Not `{"input": "`.
    No,
}

fn opening(s: &str) -> Opening {
    let b = s.as_bytes();
    let mut i = 0;
    let ws = |i: &mut usize| {
        while b.get(*i).is_some_and(u8::is_ascii_whitespace) {
            *i += 1;
        }
    };
    for want in ["{", "\"input\"", ":", "\""] {
        ws(&mut i);
        let rest = &b[i.min(b.len())..];
        if rest.len() < want.len() {
            return if want.as_bytes().starts_with(rest) {
                Opening::Partial
            } else {
                Opening::No
            };
        }
        if !rest.starts_with(want.as_bytes()) {
            return Opening::No;
        }
        i += want.len();
    }
    Opening::At(i)
}

impl InputStream {
    /// Whether the input went out piece by piece (else send [`input_of`] the whole
    /// arguments at the end).
    pub fn streamed(&self) -> bool {
        matches!(self.state, InputState::In | InputState::Done)
    }

    /// Take the next piece of the arguments; the input text it completes.
    pub fn push(&mut self, piece: &str) -> String {
        match self.state {
            InputState::Done | InputState::Other => return String::new(),
            InputState::Before => {
                self.held.push_str(piece);
                match opening(&self.held) {
                    Opening::Partial => return String::new(),
                    Opening::No => {
                        self.state = InputState::Other;
                        self.held = String::new();
                        return String::new();
                    }
                    Opening::At(i) => {
                        self.held.drain(..i);
                        self.state = InputState::In;
                    }
                }
            }
            InputState::In => self.held.push_str(piece),
        }
        self.decode()
    }

    /// Decode what is held, keeping an escape that is not complete yet.
    fn decode(&mut self) -> String {
        let mut out = String::new();
        let held = std::mem::take(&mut self.held);
        let mut rest = held.as_str();
        while let Some(i) = rest.find(['\\', '"']) {
            out.push_str(&rest[..i]);
            rest = &rest[i..];
            if rest.starts_with('"') {
                self.state = InputState::Done;
                return out;
            }
            // An escape: `\x`, `\uXXXX`, or a surrogate pair `\uXXXX\uXXXX`.
            match unescape(rest) {
                Some((text, used)) => {
                    out.push_str(&text);
                    rest = &rest[used..];
                }
                None => break, // cut short: wait for the rest
            }
        }
        if !rest.starts_with('\\') {
            out.push_str(rest);
            rest = "";
        }
        self.held = rest.to_owned();
        out
    }
}

/// The text of the JSON escape at the start of `s` and its length; `None` when `s` ends
/// before the escape does. A malformed escape is taken as it is written.
fn unescape(s: &str) -> Option<(String, usize)> {
    let c = *s.as_bytes().get(1)?;
    if let Some(ch) = portcullis_core::json_skim::short_escape(c) {
        return Some((ch.to_string(), 2));
    }
    match c {
        b'u' => {
            let hex = |at: usize| -> Option<Option<u32>> {
                let h = s.get(at..at + 4)?;
                Some(u32::from_str_radix(h, 16).ok())
            };
            let Some(hi) = hex(2)? else {
                return Some((s[..2].to_owned(), 2));
            };
            if (0xD800..0xDC00).contains(&hi) {
                // A high surrogate: its pair follows.
                if s.len() < 12 {
                    return None;
                }
                if &s[6..8] == "\\u" {
                    if let Some(lo) = hex(8)?.filter(|lo| (0xDC00..0xE000).contains(lo)) {
                        let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                        let ch = char::from_u32(c).unwrap_or('\u{fffd}');
                        return Some((ch.to_string(), 12));
                    }
                }
                return Some(('\u{fffd}'.to_string(), 6));
            }
            let ch = char::from_u32(hi).unwrap_or('\u{fffd}');
            Some((ch.to_string(), 6))
        }
        _ => Some((s[..2].to_owned(), 2)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every way of cutting the arguments gives back the input, piece by piece.
    #[test]
    fn the_input_streams_whatever_the_cuts() {
        let input = "*** Begin Patch\n+\"hi\" \\ caf\u{e9} \u{1f600} tab\tend\n*** End Patch";
        let args = arguments_for(input);
        // With escaped unicode too (as some servers write it).
        let escaped = args
            .replace('\u{1f600}', "\\ud83d\\ude00")
            .replace('\u{e9}', "\\u00e9");
        for args in [
            args,
            format!("  {{ \"input\" :  {}", &escaped[9..]),
            escaped,
        ] {
            for step in 1..=7 {
                let mut s = InputStream::default();
                let mut out = String::new();
                let chars: Vec<char> = args.chars().collect();
                for piece in chars.chunks(step) {
                    out.push_str(&s.push(&piece.iter().collect::<String>()));
                }
                assert!(s.streamed(), "{args}");
                assert_eq!(out, input, "step {step}: {args}");
            }
        }
    }

    #[test]
    fn arguments_of_another_shape_are_not_streamed() {
        for args in [r#"{"patch": "x"}"#, "not json", r#"["input"]"#] {
            let mut s = InputStream::default();
            assert_eq!(s.push(args), "");
            assert!(!s.streamed(), "{args}");
        }
        // Not known yet: nothing decided.
        let mut s = InputStream::default();
        assert_eq!(s.push("{\"inp"), "");
        assert!(!s.streamed());
        assert_eq!(s.push("ut\": \"ab"), "ab");
        assert!(s.streamed());
    }

    #[test]
    fn a_grammar_tool_is_a_one_string_function() {
        let f = json!({"type": "grammar", "syntax": "lark", "definition": "start: \"*** Begin Patch\""});
        let t = function_for("apply_patch".into(), Some("Edit files".into()), Some(&f));
        let def = t.function.unwrap();
        assert_eq!(def.name, "apply_patch");
        assert_eq!(def.description.as_deref(), Some("Edit files"));
        let p = def.parameters.unwrap();
        assert_eq!(p["required"], json!(["input"]));
        assert_eq!(p["properties"]["input"]["type"], "string");
        let d = p["properties"]["input"]["description"].as_str().unwrap();
        assert!(
            d.contains("lark grammar") && d.contains("*** Begin Patch"),
            "{d}"
        );
        let plain = function_for("t".into(), None, Some(&json!({"type": "text"})));
        let p = plain.function.unwrap().parameters.unwrap();
        assert!(!p.to_string().contains("grammar"));
    }

    #[test]
    fn input_round_trips_through_arguments() {
        let patch = "*** Begin Patch\n*** Add File: a.txt\n+\"hi\"\n*** End Patch";
        assert_eq!(input_of(&arguments_for(patch)), patch);
        // A model that wrote something else: its text, as written.
        assert_eq!(input_of("not json"), "not json");
        assert_eq!(input_of(r#"{"patch":"x"}"#), r#"{"patch":"x"}"#);
    }
}
