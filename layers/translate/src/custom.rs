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

#[cfg(test)]
mod tests {
    use super::*;

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
