//! The rules: what each [`Level`] checks for each [`Route`].
//!
//! The rules follow the public OpenAI and Anthropic API references. They check what every
//! OpenAI-compatible server agrees on (required fields, JSON types, documented numeric ranges)
//! and leave enumerations that grow often (model names, `reasoning_effort` values, content part
//! types) to the upstream, so a new API feature does not need a gateway release. `null` is
//! accepted wherever a field is optional, as both APIs accept it.

use std::{collections::HashSet, fmt, sync::Arc};

use portcullis_core::RequestMeta;

use crate::{
    json::{self, Node, Num},
    InvalidRequest, Level, Route,
};

type Check = Result<(), InvalidRequest>;

/// Check `body` for `route` at `level`; on success return what the request asks for.
///
/// The body is parsed once (see the crate docs for the borrowed tree that makes this cheap).
/// The first problem found is returned, with the path of the field at fault.
///
/// ```
/// use portcullis_validation::{validate, Level, Route};
///
/// let body = br#"{"model":"gpt-4o","messages":[{"role":"robot","content":"hi"}]}"#;
/// let err = validate(Route::ChatCompletions, Level::Moderate, body).unwrap_err();
/// assert_eq!(err.field, "messages[0].role");
/// assert_eq!(
///     err.to_string(),
///     r#"messages[0].role: unknown role "robot"; expected one of system, developer, user, assistant, tool"#
/// );
/// let meta = validate(Route::ChatCompletions, Level::Lenient, body).unwrap();
/// assert_eq!(meta.model.as_deref(), Some("gpt-4o"));
/// ```
pub fn validate(route: Route, level: Level, body: &[u8]) -> Result<RequestMeta, InvalidRequest> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(InvalidRequest::new(
            "",
            "request body is empty; expected a JSON object",
        ));
    }
    let root = json::parse(body)
        .map_err(|e| InvalidRequest::new("", format!("request body is not valid JSON: {e}")))?;
    let Node::Obj(fields) = &root else {
        return Err(InvalidRequest::new(
            "",
            format!("request body must be a JSON object, got {}", root.kind()),
        ));
    };

    let model = match root.get("model") {
        None => return Err(fail(&Path::Root.key("model"), "is required")),
        Some(Node::Str(s)) if s.is_empty() => {
            return Err(fail(&Path::Root.key("model"), "must not be empty"))
        }
        Some(Node::Str(s)) => Arc::<str>::from(&**s),
        Some(other) => {
            return Err(fail(
                &Path::Root.key("model"),
                format!("must be a string, got {}", other.kind()),
            ))
        }
    };
    let stream = matches!(root.get("stream"), Some(Node::Bool(true)));

    if level >= Level::Moderate {
        match route {
            Route::ChatCompletions => chat(&root, level)?,
            Route::Completions => completions(&root)?,
            Route::Embeddings => embeddings(&root)?,
            Route::Messages => messages(&root)?,
        }
    }
    if level >= Level::Strict {
        top_level_fields(route, fields)?;
    }
    Ok(RequestMeta {
        model: Some(model),
        stream,
    })
}

// === field paths ===

/// Where a value sits in the body, built on the stack and only formatted on error.
#[derive(Clone, Copy)]
enum Path<'p> {
    Root,
    Key(&'p Path<'p>, &'p str),
    Index(&'p Path<'p>, usize),
}

impl<'p> Path<'p> {
    fn key(&'p self, key: &'p str) -> Path<'p> {
        Path::Key(self, key)
    }

    fn index(&'p self, i: usize) -> Path<'p> {
        Path::Index(self, i)
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Key(Path::Root, k) => f.write_str(k),
            Path::Key(p, k) => write!(f, "{p}.{k}"),
            Path::Index(p, i) => write!(f, "{p}[{i}]"),
        }
    }
}

fn fail(path: &Path<'_>, message: impl Into<String>) -> InvalidRequest {
    InvalidRequest::new(path.to_string(), message)
}

/// How many characters of a request's own strings an error message quotes: errors echo into
/// logs and responses, and a role or key may be megabytes long.
const MAX_QUOTED_CHARS: usize = 64;

/// A value from the request, JSON-quoted for an error message and cut short.
fn quoted(s: &str) -> String {
    let (s, cut) = match s.char_indices().nth(MAX_QUOTED_CHARS) {
        None => (s, ""),
        Some((end, _)) => (&s[..end], "..."),
    };
    format!("{}{cut}", serde_json::to_string(s).unwrap_or_default())
}

/// A top-level key from the request as a field path: bare when it reads unambiguously
/// (`foo`), bracketed and quoted otherwise (`[""]`, `["a.b"]`), cut short like [`quoted`].
fn key_path(key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| !matches!(c, '.' | '[' | ']' | '"' | '\\') && !c.is_control());
    match key.char_indices().nth(MAX_QUOTED_CHARS) {
        _ if !plain => format!("[{}]", quoted(key)),
        None => key.to_owned(),
        Some((end, _)) => format!("{}...", &key[..end]),
    }
}

fn wrong_type(path: &Path<'_>, expected: &str, got: &Node<'_>) -> InvalidRequest {
    fail(path, format!("must be {expected}, got {}", got.kind()))
}

// === typed optional fields ===
//
// Each takes the object holding the field and the object's path; an absent or null field passes.

fn present<'n, 'a>(obj: &'n Node<'a>, key: &str) -> Option<&'n Node<'a>> {
    obj.get(key).filter(|v| !matches!(v, Node::Null))
}

fn number(obj: &Node<'_>, at: &Path<'_>, key: &str, min: f64, max: f64) -> Check {
    let Some(v) = present(obj, key) else {
        return Ok(());
    };
    let path = at.key(key);
    match v {
        Node::Num(n) if (min..=max).contains(&n.as_f64()) => Ok(()),
        Node::Num(n) => Err(fail(
            &path,
            format!("must be between {min} and {max}, got {n}"),
        )),
        other => Err(wrong_type(&path, "a number", other)),
    }
}

fn integer(obj: &Node<'_>, at: &Path<'_>, key: &str, min: i128, max: Option<i128>) -> Check {
    match present(obj, key) {
        Some(v) => integer_value(&at.key(key), v, min, max),
        None => Ok(()),
    }
}

fn integer_value(path: &Path<'_>, v: &Node<'_>, min: i128, max: Option<i128>) -> Check {
    let n = match v {
        Node::Num(n) => n,
        other => return Err(wrong_type(path, "an integer", other)),
    };
    let Some(i) = n.as_int() else {
        return Err(fail(path, format!("must be an integer, got {n}")));
    };
    match max {
        Some(max) if !(min..=max).contains(&i) => Err(fail(
            path,
            format!("must be between {min} and {max}, got {i}"),
        )),
        None if i < min => Err(fail(path, format!("must be >= {min}, got {i}"))),
        _ => Ok(()),
    }
}

/// A field whose value must match `is`, described as `expected` in the error.
fn typed(
    obj: &Node<'_>,
    at: &Path<'_>,
    key: &str,
    expected: &str,
    is: fn(&Node<'_>) -> bool,
) -> Check {
    match present(obj, key) {
        Some(v) if !is(v) => Err(wrong_type(&at.key(key), expected, v)),
        _ => Ok(()),
    }
}

fn boolean(obj: &Node<'_>, at: &Path<'_>, key: &str) -> Check {
    typed(obj, at, key, "a boolean", |v| matches!(v, Node::Bool(_)))
}

fn string(obj: &Node<'_>, at: &Path<'_>, key: &str) -> Check {
    typed(obj, at, key, "a string", |v| matches!(v, Node::Str(_)))
}

fn object(obj: &Node<'_>, at: &Path<'_>, key: &str) -> Check {
    typed(obj, at, key, "an object", |v| matches!(v, Node::Obj(_)))
}

fn string_or_object(obj: &Node<'_>, at: &Path<'_>, key: &str) -> Check {
    typed(obj, at, key, "a string or an object", |v| {
        matches!(v, Node::Str(_) | Node::Obj(_))
    })
}

/// An array whose items are all objects (`tools`, `functions`, `tool_calls`...).
fn array_of_objects(obj: &Node<'_>, at: &Path<'_>, key: &str) -> Check {
    let Some(v) = present(obj, key) else {
        return Ok(());
    };
    let path = at.key(key);
    let Node::Arr(items) = v else {
        return Err(wrong_type(&path, "an array of objects", v));
    };
    for (i, item) in items.iter().enumerate() {
        if !matches!(item, Node::Obj(_)) {
            return Err(wrong_type(&path.index(i), "an object", item));
        }
    }
    Ok(())
}

fn array_of_strings(path: &Path<'_>, v: &Node<'_>) -> Check {
    let Node::Arr(items) = v else {
        return Err(wrong_type(path, "an array of strings", v));
    };
    for (i, item) in items.iter().enumerate() {
        if !matches!(item, Node::Str(_)) {
            return Err(wrong_type(&path.index(i), "a string", item));
        }
    }
    Ok(())
}

/// OpenAI `stop`: a string or an array of strings.
fn stop(obj: &Node<'_>, at: &Path<'_>, key: &str) -> Check {
    match present(obj, key) {
        None | Some(Node::Str(_)) => Ok(()),
        Some(v @ Node::Arr(_)) => array_of_strings(&at.key(key), v),
        Some(v) => Err(wrong_type(
            &at.key(key),
            "a string or an array of strings",
            v,
        )),
    }
}

/// Message content: a string, or an array of parts (objects with a string `type`).
fn content(path: &Path<'_>, v: &Node<'_>, parts: &str) -> Check {
    match v {
        Node::Str(_) => Ok(()),
        Node::Arr(items) => {
            for (i, item) in items.iter().enumerate() {
                let item_path = path.index(i);
                if !matches!(item, Node::Obj(_)) {
                    return Err(wrong_type(&item_path, "an object", item));
                }
                match item.get("type") {
                    Some(Node::Str(_)) => {}
                    None => return Err(fail(&item_path.key("type"), "is required")),
                    Some(other) => {
                        return Err(wrong_type(&item_path.key("type"), "a string", other))
                    }
                }
            }
            Ok(())
        }
        other => Err(fail(
            path,
            format!(
                "must be a string or an array of {parts}, got {}",
                other.kind()
            ),
        )),
    }
}

fn required_content(msg: &Node<'_>, at: &Path<'_>, parts: &str) -> Check {
    let path = at.key("content");
    match msg.get("content") {
        None => Err(fail(&path, "is required")),
        Some(v) => content(&path, v, parts),
    }
}

/// A required, non-empty array of message objects; calls `each` on every message.
fn message_list(body: &Node<'_>, each: impl Fn(&Path<'_>, &Node<'_>) -> Check) -> Check {
    let path = Path::Root.key("messages");
    match body.get("messages") {
        None => Err(fail(&path, "is required")),
        Some(Node::Arr(msgs)) if msgs.is_empty() => Err(fail(&path, "must not be empty")),
        Some(Node::Arr(msgs)) => {
            for (i, msg) in msgs.iter().enumerate() {
                let msg_path = path.index(i);
                if !matches!(msg, Node::Obj(_)) {
                    return Err(wrong_type(&msg_path, "an object", msg));
                }
                each(&msg_path, msg)?;
            }
            Ok(())
        }
        Some(other) => Err(wrong_type(&path, "an array of messages", other)),
    }
}

fn role<'n>(msg: &'n Node<'_>, at: &Path<'_>) -> Result<&'n str, InvalidRequest> {
    let path = at.key("role");
    match msg.get("role") {
        None => Err(fail(&path, "is required")),
        Some(Node::Str(s)) => Ok(s),
        Some(other) => Err(wrong_type(&path, "a string", other)),
    }
}

// === POST /v1/chat/completions ===

const CHAT_ROLES: &str = "system, developer, user, assistant, tool";

fn chat(body: &Node<'_>, level: Level) -> Check {
    message_list(body, |at, msg| chat_message(at, msg, level))?;
    let at = &Path::Root;
    number(body, at, "temperature", 0.0, 2.0)?;
    number(body, at, "top_p", 0.0, 1.0)?;
    number(body, at, "presence_penalty", -2.0, 2.0)?;
    number(body, at, "frequency_penalty", -2.0, 2.0)?;
    integer(body, at, "n", 1, Some(128))?;
    integer(body, at, "max_tokens", 1, None)?;
    integer(body, at, "max_completion_tokens", 1, None)?;
    integer(body, at, "top_logprobs", 0, Some(20))?;
    integer(
        body,
        at,
        "seed",
        i128::from(i64::MIN),
        Some(i128::from(u64::MAX)),
    )?;
    boolean(body, at, "stream")?;
    boolean(body, at, "logprobs")?;
    boolean(body, at, "parallel_tool_calls")?;
    boolean(body, at, "store")?;
    stop(body, at, "stop")?;
    array_of_objects(body, at, "tools")?;
    array_of_objects(body, at, "functions")?;
    string_or_object(body, at, "tool_choice")?;
    string_or_object(body, at, "function_call")?;
    object(body, at, "response_format")?;
    if let Some(format) = present(body, "response_format") {
        let path = at.key("response_format");
        match format.get("type") {
            Some(Node::Str(_)) => {}
            None => return Err(fail(&path.key("type"), "is required")),
            Some(other) => return Err(wrong_type(&path.key("type"), "a string", other)),
        }
    }
    for key in [
        "stream_options",
        "metadata",
        "logit_bias",
        "prediction",
        "audio",
        "web_search_options",
    ] {
        object(body, at, key)?;
    }
    for key in [
        "user",
        "reasoning_effort",
        "service_tier",
        "verbosity",
        "prompt_cache_key",
        "prompt_cache_retention",
        "safety_identifier",
    ] {
        string(body, at, key)?;
    }
    if let Some(m) = present(body, "modalities") {
        array_of_strings(&at.key("modalities"), m)?;
    }
    Ok(())
}

fn chat_message(at: &Path<'_>, msg: &Node<'_>, level: Level) -> Check {
    const PARTS: &str = "content parts";
    let role = role(msg, at)?;
    string(msg, at, "name")?;
    match role {
        "system" | "developer" | "user" => required_content(msg, at, PARTS),
        "assistant" => {
            array_of_objects(msg, at, "tool_calls")?;
            string_or_object(msg, at, "function_call")?;
            // Content may be left out when the turn was a tool call, an audio reply or a refusal.
            let replaced = ["tool_calls", "function_call", "audio", "refusal"]
                .iter()
                .any(|k| present(msg, k).is_some());
            match present(msg, "content") {
                None if replaced => Ok(()),
                _ => required_content(msg, at, PARTS),
            }
        }
        "tool" => {
            required_content(msg, at, PARTS)?;
            // OpenAI needs it, but some OpenAI-compatible servers do not: only strict insists.
            if level >= Level::Strict && present(msg, "tool_call_id").is_none() {
                return Err(fail(&at.key("tool_call_id"), "is required"));
            }
            string(msg, at, "tool_call_id")
        }
        // Deprecated by OpenAI but still accepted there, so not rejected here.
        "function" => {
            match msg.get("name") {
                None => return Err(fail(&at.key("name"), "is required")),
                Some(Node::Str(_)) => {}
                Some(other) => return Err(wrong_type(&at.key("name"), "a string", other)),
            }
            string(msg, at, "content")
        }
        other => Err(fail(
            &at.key("role"),
            format!(
                "unknown role {}; expected one of {CHAT_ROLES}",
                quoted(other)
            ),
        )),
    }
}

// === POST /v1/completions ===

fn completions(body: &Node<'_>) -> Check {
    let at = &Path::Root;
    let path = at.key("prompt");
    match body.get("prompt") {
        None => return Err(fail(&path, "is required")),
        Some(v) => text_or_tokens(&path, v, true)?,
    }
    number(body, at, "temperature", 0.0, 2.0)?;
    number(body, at, "top_p", 0.0, 1.0)?;
    number(body, at, "presence_penalty", -2.0, 2.0)?;
    number(body, at, "frequency_penalty", -2.0, 2.0)?;
    integer(body, at, "n", 1, Some(128))?;
    // 0 is meaningful here: with `echo` it scores the prompt without generating.
    integer(body, at, "max_tokens", 0, None)?;
    integer(body, at, "best_of", 0, Some(20))?;
    integer(body, at, "logprobs", 0, Some(5))?;
    integer(
        body,
        at,
        "seed",
        i128::from(i64::MIN),
        Some(i128::from(u64::MAX)),
    )?;
    boolean(body, at, "stream")?;
    boolean(body, at, "echo")?;
    stop(body, at, "stop")?;
    string(body, at, "suffix")?;
    string(body, at, "user")?;
    object(body, at, "logit_bias")?;
    object(body, at, "stream_options")
}

// === POST /v1/embeddings ===

fn embeddings(body: &Node<'_>) -> Check {
    let at = &Path::Root;
    let path = at.key("input");
    match body.get("input") {
        None => return Err(fail(&path, "is required")),
        Some(v) => text_or_tokens(&path, v, false)?,
    }
    integer(body, at, "dimensions", 1, None)?;
    string(body, at, "user")?;
    match present(body, "encoding_format") {
        None => Ok(()),
        Some(Node::Str(s)) if s == "float" || s == "base64" => Ok(()),
        Some(Node::Str(s)) => Err(fail(
            &at.key("encoding_format"),
            format!(
                "unknown encoding format {}; expected one of float, base64",
                quoted(s)
            ),
        )),
        Some(other) => Err(wrong_type(&at.key("encoding_format"), "a string", other)),
    }
}

/// Embedding `input` and completion `prompt`: a string, an array of strings, an array of tokens
/// (integers) or an array of token arrays. Embedding inputs must not be empty (OpenAI rejects
/// them); an empty prompt is valid.
fn text_or_tokens(path: &Path<'_>, v: &Node<'_>, allow_empty: bool) -> Check {
    #[derive(PartialEq)]
    enum Shape {
        Text,
        Token,
        Tokens,
    }
    let items = match v {
        Node::Str(s) if s.is_empty() && !allow_empty => {
            return Err(fail(path, "must not be empty"))
        }
        Node::Str(_) => return Ok(()),
        Node::Arr(items) if items.is_empty() && !allow_empty => {
            return Err(fail(path, "must not be empty"))
        }
        Node::Arr(items) => items,
        other => {
            return Err(wrong_type(
                path,
                "a string or an array of strings or tokens",
                other,
            ))
        }
    };
    let shape = match items.first() {
        None => return Ok(()),
        Some(Node::Str(_)) => Shape::Text,
        Some(Node::Num(_)) => Shape::Token,
        Some(Node::Arr(_)) => Shape::Tokens,
        Some(other) => {
            return Err(wrong_type(
                &path.index(0),
                "a string, a token (integer) or an array of tokens",
                other,
            ))
        }
    };
    for (i, item) in items.iter().enumerate() {
        let item_path = path.index(i);
        match (&shape, item) {
            (Shape::Text, Node::Str(s)) => {
                if s.is_empty() && !allow_empty {
                    return Err(fail(&item_path, "must not be empty"));
                }
            }
            (Shape::Token, Node::Num(n)) => token(&item_path, *n)?,
            (Shape::Tokens, Node::Arr(tokens)) => {
                if tokens.is_empty() && !allow_empty {
                    return Err(fail(&item_path, "must not be empty"));
                }
                for (j, t) in tokens.iter().enumerate() {
                    match t {
                        Node::Num(n) => token(&item_path.index(j), *n)?,
                        other => {
                            return Err(wrong_type(&item_path.index(j), "a token (integer)", other))
                        }
                    }
                }
            }
            (shape, other) => {
                let expected = match shape {
                    Shape::Text => "a string",
                    Shape::Token => "a token (integer)",
                    Shape::Tokens => "an array of tokens",
                };
                return Err(fail(
                    &item_path,
                    format!(
                        "must be {expected} like the first item, got {}",
                        other.kind()
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn token(path: &Path<'_>, n: Num) -> Check {
    match n.as_int() {
        Some(i) if i >= 0 => Ok(()),
        _ => Err(fail(
            path,
            format!("must be a token (an integer >= 0), got {n}"),
        )),
    }
}

// === POST /v1/messages (Anthropic) ===

fn messages(body: &Node<'_>) -> Check {
    const BLOCKS: &str = "content blocks";
    let at = &Path::Root;
    match body.get("max_tokens") {
        None => return Err(fail(&at.key("max_tokens"), "is required")),
        Some(v) => integer_value(&at.key("max_tokens"), v, 1, None)?,
    }
    message_list(body, |at, msg| match role(msg, at)? {
        "user" | "assistant" => required_content(msg, at, BLOCKS),
        "system" => Err(fail(
            &at.key("role"),
            "unknown role \"system\"; expected one of user, assistant \
             (a system prompt goes in the top-level \"system\" field)",
        )),
        other => Err(fail(
            &at.key("role"),
            format!(
                "unknown role {}; expected one of user, assistant",
                quoted(other)
            ),
        )),
    })?;
    if let Some(system) = present(body, "system") {
        content(&at.key("system"), system, BLOCKS)?;
    }
    number(body, at, "temperature", 0.0, 1.0)?;
    number(body, at, "top_p", 0.0, 1.0)?;
    integer(body, at, "top_k", 0, None)?;
    boolean(body, at, "stream")?;
    if let Some(v) = present(body, "stop_sequences") {
        array_of_strings(&at.key("stop_sequences"), v)?;
    }
    array_of_objects(body, at, "tools")?;
    array_of_objects(body, at, "mcp_servers")?;
    for key in [
        "tool_choice",
        "metadata",
        "thinking",
        "context_management",
        "output_format",
        "output_config",
    ] {
        object(body, at, key)?;
    }
    if let Some(thinking) = present(body, "thinking") {
        match thinking.get("type") {
            Some(Node::Str(_)) => {}
            None => return Err(fail(&at.key("thinking").key("type"), "is required")),
            Some(other) => {
                return Err(wrong_type(
                    &at.key("thinking").key("type"),
                    "a string",
                    other,
                ))
            }
        }
    }
    string(body, at, "service_tier")?;
    string_or_object(body, at, "container")
}

// === strict: the top-level fields each API defines ===

const CHAT_FIELDS: &[&str] = &[
    "model",
    "messages",
    "audio",
    "frequency_penalty",
    "function_call",
    "functions",
    "logit_bias",
    "logprobs",
    "max_completion_tokens",
    "max_tokens",
    "metadata",
    "modalities",
    "n",
    "parallel_tool_calls",
    "prediction",
    "presence_penalty",
    "prompt_cache_key",
    "prompt_cache_retention",
    "reasoning_effort",
    "response_format",
    "safety_identifier",
    "seed",
    "service_tier",
    "stop",
    "store",
    "stream",
    "stream_options",
    "temperature",
    "tool_choice",
    "tools",
    "top_logprobs",
    "top_p",
    "user",
    "verbosity",
    "web_search_options",
];

const COMPLETIONS_FIELDS: &[&str] = &[
    "model",
    "prompt",
    "best_of",
    "echo",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "max_tokens",
    "n",
    "presence_penalty",
    "seed",
    "stop",
    "stream",
    "stream_options",
    "suffix",
    "temperature",
    "top_p",
    "user",
];

const EMBEDDINGS_FIELDS: &[&str] = &["model", "input", "dimensions", "encoding_format", "user"];

const MESSAGES_FIELDS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "container",
    "context_management",
    "mcp_servers",
    "metadata",
    "output_config",
    "output_format",
    "service_tier",
    "stop_sequences",
    "stream",
    "system",
    "temperature",
    "thinking",
    "tool_choice",
    "tools",
    "top_k",
    "top_p",
];

/// The top-level fields `route`'s API defines (what strict mode accepts).
pub fn known_fields(route: Route) -> &'static [&'static str] {
    match route {
        Route::ChatCompletions => CHAT_FIELDS,
        Route::Completions => COMPLETIONS_FIELDS,
        Route::Embeddings => EMBEDDINGS_FIELDS,
        Route::Messages => MESSAGES_FIELDS,
    }
}

/// How many unknown fields one error names before summarising the rest.
const MAX_NAMED: usize = 10;

fn top_level_fields(route: Route, fields: &[(std::borrow::Cow<'_, str>, Node<'_>)]) -> Check {
    let known = known_fields(route);
    // Sets keep this linear: an attacker may send a million keys.
    let mut seen = HashSet::with_capacity(fields.len());
    let mut unknown: Vec<&str> = Vec::new();
    let mut unknown_count = 0usize;
    for (key, _) in fields {
        let key: &str = key;
        if !seen.insert(key) {
            // Parsers disagree on which duplicate wins; strict mode does not guess.
            return Err(InvalidRequest::new(
                key_path(key),
                format!("duplicate field {}", quoted(key)),
            ));
        }
        if !known.contains(&key) {
            unknown_count += 1;
            if unknown.len() < MAX_NAMED {
                unknown.push(key);
            }
        }
    }
    let Some(first) = unknown.first() else {
        return Ok(());
    };
    let named = unknown
        .iter()
        .map(|k| quoted(k))
        .collect::<Vec<_>>()
        .join(", ");
    let message = match unknown_count {
        1 => format!("unknown field {named}"),
        n if n <= MAX_NAMED => format!("unknown fields {named}"),
        n => format!("unknown fields {named} and {} more", n - MAX_NAMED),
    };
    Err(InvalidRequest::new(key_path(first), message))
}

#[cfg(test)]
mod tests;
