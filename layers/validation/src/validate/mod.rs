//! The rules: what each [`Level`] checks for each [`Route`].
//!
//! # Why moderate checks so little
//!
//! The default level sits in front of providers whose APIs grow every month: new roles
//! (`system` entries inside Anthropic `messages`), new content block and input item types, new
//! top-level (often beta) fields. A gateway that rejects a request the provider would have
//! served is broken, not strict. So `moderate` rejects only what no version of the route's API
//! takes: the required structure (`model`, `messages`, `input`, Anthropic `max_tokens`) and the
//! JSON types of documented fields. Everything that is an enumeration or a value constraint
//! (roles, block types, known values, numeric ranges, non-empty lists, per-role required
//! fields) is checked only by `strict`, together with unknown top-level fields. `null` is
//! accepted wherever a field is optional, as both APIs accept it.
//!
//! The rules follow the official SDKs' request types (openai-python `types/chat`,
//! `types/responses`, `completion_create_params.py`, `embedding_create_params.py`;
//! anthropic-sdk-python `message_create_params.py`, `message_count_tokens_params.py` and their
//! `beta/` versions).

mod anthropic;
mod openai;

use std::{borrow::Cow, collections::HashSet, fmt, sync::Arc};

use bumpalo::Bump;
use portcullis_core::RequestMeta;

use crate::{
    json::{self, Node, Num},
    InvalidRequest, Level, Route,
};

type Check = Result<(), InvalidRequest>;

/// Check `body` for `route` at `level`; on success return what the request asks for.
///
/// The body is parsed once, into a tree that borrows its strings from the body and keeps its
/// nodes in one arena (`json.rs` says why);
/// at [`Level::Lenient`] the walk checks the whole body but builds only `model`, `stream` and
/// (for the Responses API) `prompt`. A body of more values than a tree holds
/// (`json::MAX_VALUES`, 262,144: token ids, or an attack on memory) is checked as `lenient`
/// checks it, whatever the level.
/// The first problem found is returned, with the path of the field at fault.
///
/// ```
/// use portcullis_validation::{validate, Level, Route};
///
/// // New roles pass the default level; strict knows the enumeration.
/// let body = br#"{"model":"gpt-4o","messages":[{"role":"robot","content":"hi"}]}"#;
/// assert!(validate(Route::ChatCompletions, Level::Moderate, body).is_ok());
/// let err = validate(Route::ChatCompletions, Level::Strict, body).unwrap_err();
/// assert_eq!(err.field, "messages[0].role");
///
/// // Wrong JSON types fail at the default level, naming the field.
/// let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":[{"type":7}]}]}"#;
/// let err = validate(Route::ChatCompletions, Level::Moderate, body).unwrap_err();
/// assert_eq!(err.to_string(), "messages[0].content[0].type: must be a string, got a number");
///
/// let meta = validate(Route::ChatCompletions, Level::Lenient, body).unwrap();
/// assert_eq!(meta.model.as_deref(), Some("gpt-4o"));
/// ```
pub fn validate(route: Route, level: Level, body: &[u8]) -> Result<RequestMeta, InvalidRequest> {
    check(route, level, body, false).map(|(meta, _)| meta)
}

/// [`validate`], and with `canonical` the body's canonical JSON form (the dedup key's) written
/// from the tree, when there is a whole tree (`moderate` and `strict`) and the request does
/// not stream (the dedup cache passes streams by).
pub(crate) fn check(
    route: Route,
    level: Level,
    body: &[u8],
    canonical: bool,
) -> Result<(RequestMeta, Option<Vec<u8>>), InvalidRequest> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(InvalidRequest::new(
            "",
            "request body is empty; expected a JSON object",
        ));
    }
    match check_in(route, level, body, canonical, &Bump::new()) {
        // A body of more values than a tree may hold is checked as `lenient` checks it, for
        // whatever level, once the first walk's arena is let go: its rules go unchecked (the
        // provider still checks them) and it has no canonical form (the dedup layer writes
        // its own).
        Err(Refused::TooManyValues) => {
            tracing::debug!(
                max_values = json::MAX_VALUES,
                "request body has too many values for a tree; checked as lenient"
            );
            check_in(route, Level::Lenient, body, false, &Bump::new()).map_err(|e| match e {
                Refused::Invalid(e) => e,
                // A document that is no object is built whole: an array of them.
                Refused::TooManyValues
                    if body.get(portcullis_core::json_skim::ws(body, 0)) == Some(&b'[') =>
                {
                    InvalidRequest::new("", "request body must be a JSON object, got an array")
                }
                // Only `model` and `stream` (and a Responses `prompt`) were built: one of
                // them holds the values, and none of them can.
                Refused::TooManyValues => InvalidRequest::new(
                    "",
                    format!(
                        "request body has more than {} values in `model`, `stream` or `prompt`",
                        json::MAX_VALUES
                    ),
                ),
            })
        }
        Err(Refused::Invalid(e)) => Err(e),
        Ok(checked) => Ok(checked),
    }
}

/// Why [`check_in`] gave no answer.
enum Refused {
    Invalid(InvalidRequest),
    /// The tree would hold more than [`json::MAX_VALUES`] values.
    TooManyValues,
}

impl From<InvalidRequest> for Refused {
    fn from(e: InvalidRequest) -> Self {
        Refused::Invalid(e)
    }
}

/// [`check`] with the tree's nodes in `arena`; at [`Level::Lenient`] the members it builds
/// are [`LENIENT_READS`] but a completion's `prompt` (its token ids may be what made a body
/// too large for a tree).
fn check_in(
    route: Route,
    level: Level,
    body: &[u8],
    canonical: bool,
    arena: &Bump,
) -> Result<(RequestMeta, Option<Vec<u8>>), Refused> {
    // Lenient reads a few members: the rest of the body is only checked, not built.
    let reads: &[&str] = match route {
        Route::Responses => &LENIENT_READS,
        _ => &LENIENT_READS[..2],
    };
    let root = match level {
        Level::Lenient => json::parse_members(body, reads, arena),
        _ => json::parse(body, arena),
    }
    .map_err(|e| match e {
        json::Failure::Json(e) => Refused::Invalid(InvalidRequest::new(
            "",
            format!("request body is not valid JSON: {e}"),
        )),
        json::Failure::TooManyValues => Refused::TooManyValues,
    })?;
    let Node::Obj(fields) = &root else {
        return Err(InvalidRequest::new(
            "",
            format!("request body must be a JSON object, got {}", root.kind()),
        )
        .into());
    };

    let model = model(route, &root)?;
    let stream = matches!(root.get("stream"), Some(Node::Bool(true)));

    if level >= Level::Moderate {
        let r = Rules {
            strict: level >= Level::Strict,
        };
        match route {
            Route::ChatCompletions => openai::chat(&root, r)?,
            Route::Completions => openai::completions(&root, r)?,
            Route::Embeddings => openai::embeddings(&root, r)?,
            Route::Responses => openai::responses(&root, r)?,
            Route::Messages => anthropic::messages(&root, r, true)?,
            Route::CountTokens => anthropic::messages(&root, r, false)?,
        }
    }
    if level >= Level::Strict {
        top_level_fields(route, fields)?;
    }
    let canonical = (canonical && level >= Level::Moderate && !stream).then(|| {
        let mut out = Vec::with_capacity(body.len());
        json::write_canonical(&root, body, &mut out);
        out
    });
    Ok((RequestMeta { model, stream }, canonical))
}

/// The top-level members [`validate`] reads at [`Level::Lenient`]: [`model`]'s and the
/// stream flag, and for the Responses API the `prompt` template that may name the model.
const LENIENT_READS: [&str; 3] = ["model", "stream", "prompt"];

/// `model`, at every level: a non-empty string. The Responses API alone lets a stored prompt
/// template (`prompt`) name the model, so there a missing `model` beside a `prompt` passes and
/// the request carries no model ([`RequestMeta::model`] is `None`).
fn model(route: Route, root: &Node<'_>) -> Result<Option<Arc<str>>, InvalidRequest> {
    let path = Path::Root.key("model");
    match root.get("model") {
        None if route == Route::Responses && present(root, "prompt").is_some() => Ok(None),
        None if route == Route::Responses => Err(fail(
            &path,
            "is required (unless a \"prompt\" template names it)",
        )),
        None => Err(fail(&path, "is required")),
        Some(Node::Str(s)) if s.is_empty() => Err(fail(&path, "must not be empty")),
        Some(Node::Str(s)) => Ok(Some(Arc::from(&*s.text()))),
        Some(other) => Err(wrong_type(&path, "a string", other)),
    }
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

/// The value of `key`, unless absent or `null`.
fn present<'n, 'a>(obj: &'n Node<'a>, key: &str) -> Option<&'n Node<'a>> {
    obj.get(key).filter(|v| !matches!(v, Node::Null))
}

// === the rules, by level ===

/// The checks of one level. Every method checks the JSON type at moderate and adds the
/// enumeration or range at strict; an absent or `null` optional field passes.
#[derive(Clone, Copy)]
struct Rules {
    strict: bool,
}

impl Rules {
    /// A number; within `min..=max` at strict.
    fn number(self, obj: &Node<'_>, at: &Path<'_>, key: &str, min: f64, max: f64) -> Check {
        let Some(v) = present(obj, key) else {
            return Ok(());
        };
        let path = at.key(key);
        match v {
            Node::Num(n) if !self.strict || (min..=max).contains(&n.as_f64()) => Ok(()),
            Node::Num(n) => Err(fail(
                &path,
                format!("must be between {min} and {max}, got {n}"),
            )),
            other => Err(wrong_type(&path, "a number", other)),
        }
    }

    /// A number; at strict an integer within `min..=max` (or `>= min`).
    fn integer(
        self,
        obj: &Node<'_>,
        at: &Path<'_>,
        key: &str,
        min: i128,
        max: Option<i128>,
    ) -> Check {
        match present(obj, key) {
            Some(v) => self.integer_value(&at.key(key), v, min, max),
            None => Ok(()),
        }
    }

    fn integer_value(self, path: &Path<'_>, v: &Node<'_>, min: i128, max: Option<i128>) -> Check {
        let n = match v {
            Node::Num(n) => n,
            other => return Err(wrong_type(path, "an integer", other)),
        };
        if !self.strict {
            return Ok(());
        }
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

    /// A string; at strict one of `known` (`what` names the kind of value in the error).
    fn enumerated(
        self,
        obj: &Node<'_>,
        at: &Path<'_>,
        key: &str,
        what: &str,
        known: &[&str],
    ) -> Check {
        match present(obj, key) {
            None => Ok(()),
            Some(Node::Str(s)) => self.one_of(&at.key(key), &s.text(), what, known),
            Some(other) => Err(wrong_type(&at.key(key), "a string", other)),
        }
    }

    /// At strict, `value` must be one of `known`.
    fn one_of(self, path: &Path<'_>, value: &str, what: &str, known: &[&str]) -> Check {
        if !self.strict || known.contains(&value) {
            return Ok(());
        }
        Err(fail(
            path,
            format!(
                "unknown {what} {}; expected one of {}",
                quoted(value),
                known.join(", ")
            ),
        ))
    }

    /// At strict, `key` must be present and not `null`.
    fn required(self, obj: &Node<'_>, at: &Path<'_>, key: &str) -> Check {
        if self.strict && present(obj, key).is_none() {
            return Err(match obj.get(key) {
                None => fail(&at.key(key), "is required"),
                Some(v) => wrong_type(&at.key(key), "set", v),
            });
        }
        Ok(())
    }

    /// Content: a string, or an array of parts (objects with a string `type`; at strict one of
    /// `types`). `parts` names them in errors ("content parts", "content blocks"), `what` names
    /// their type ("content part type").
    fn content(
        self,
        path: &Path<'_>,
        v: &Node<'_>,
        parts: &str,
        what: &str,
        types: &[&str],
    ) -> Check {
        match v {
            Node::Str(_) => Ok(()),
            Node::Arr(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.typed_object(&path.index(i), item, what, types)?;
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

    /// An object with a string `type` (every content part, block and format has one); at strict
    /// the type is one of `types`. Returns the type.
    fn typed_object<'a>(
        self,
        path: &Path<'_>,
        v: &Node<'a>,
        what: &str,
        types: &[&str],
    ) -> Result<Cow<'a, str>, InvalidRequest> {
        if !matches!(v, Node::Obj(_)) {
            return Err(wrong_type(path, "an object", v));
        }
        let type_path = path.key("type");
        match v.get("type") {
            Some(Node::Str(t)) => {
                let t = t.text();
                self.one_of(&type_path, &t, what, types)?;
                Ok(t)
            }
            None => Err(fail(&type_path, "is required")),
            Some(other) => Err(wrong_type(&type_path, "a string", other)),
        }
    }

    /// An array of objects (`tools`, `tool_calls`...); at strict each has a `type` in
    /// `types` (unless `types` is empty), required unless `type_optional`.
    fn array_of_objects(
        self,
        obj: &Node<'_>,
        at: &Path<'_>,
        key: &str,
        types: &[&str],
        type_optional: bool,
    ) -> Check {
        let Some(v) = present(obj, key) else {
            return Ok(());
        };
        let path = at.key(key);
        let Node::Arr(items) = v else {
            return Err(wrong_type(&path, "an array of objects", v));
        };
        for (i, item) in items.iter().enumerate() {
            let item_path = path.index(i);
            if !matches!(item, Node::Obj(_)) {
                return Err(wrong_type(&item_path, "an object", item));
            }
            match item.get("type") {
                None | Some(Node::Null) if type_optional || !self.strict || types.is_empty() => {}
                Some(Node::Str(t)) if !types.is_empty() => {
                    self.one_of(&item_path.key("type"), &t.text(), "type", types)?
                }
                Some(Node::Str(_)) => {}
                None => return Err(fail(&item_path.key("type"), "is required")),
                Some(other) => return Err(wrong_type(&item_path.key("type"), "a string", other)),
            }
        }
        Ok(())
    }
}

// === typed optional fields (the same at every level) ===

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

fn array(obj: &Node<'_>, at: &Path<'_>, key: &str) -> Check {
    typed(obj, at, key, "an array", |v| matches!(v, Node::Arr(_)))
}

fn string_or_object(obj: &Node<'_>, at: &Path<'_>, key: &str) -> Check {
    typed(obj, at, key, "a string or an object", |v| {
        matches!(v, Node::Str(_) | Node::Obj(_))
    })
}

fn string_or_array(obj: &Node<'_>, at: &Path<'_>, key: &str) -> Check {
    typed(obj, at, key, "a string or an array", |v| {
        matches!(v, Node::Str(_) | Node::Arr(_))
    })
}

fn array_of_strings(obj: &Node<'_>, at: &Path<'_>, key: &str) -> Check {
    match present(obj, key) {
        Some(v) => array_of_strings_value(&at.key(key), v),
        None => Ok(()),
    }
}

fn array_of_strings_value(path: &Path<'_>, v: &Node<'_>) -> Check {
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
        Some(v @ Node::Arr(_)) => array_of_strings_value(&at.key(key), v),
        Some(v) => Err(wrong_type(
            &at.key(key),
            "a string or an array of strings",
            v,
        )),
    }
}

/// A required, non-empty array of message objects (`messages`). Empty is refused at every
/// level but lenient: neither OpenAI nor Anthropic has ever answered a request without a
/// message. Calls `each` on every message.
fn message_list(body: &Node<'_>, each: impl Fn(&Path<'_>, &Node<'_>) -> Check) -> Check {
    let path = Path::Root.key("messages");
    match body.get("messages") {
        None => Err(fail(&path, "is required")),
        Some(Node::Arr([])) => Err(fail(&path, "must not be empty")),
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

/// A message's `role`: required and a string at every level (no API version takes a message
/// without one); its value is only checked at strict, by the caller.
fn role<'a>(msg: &Node<'a>, at: &Path<'_>) -> Result<Cow<'a, str>, InvalidRequest> {
    let path = at.key("role");
    match msg.get("role") {
        None => Err(fail(&path, "is required")),
        Some(Node::Str(s)) => Ok(s.text()),
        Some(other) => Err(wrong_type(&path, "a string", other)),
    }
}

/// Embedding `input` and completion `prompt`: a string, an array of strings, an array of tokens
/// (integers) or an array of token arrays. At strict, tokens are integers >= 0, and (unless
/// `allow_empty`) strings and lists are not empty.
fn text_or_tokens(r: Rules, path: &Path<'_>, v: &Node<'_>, allow_empty: bool) -> Check {
    #[derive(PartialEq)]
    enum Shape {
        Text,
        Token,
        Tokens,
    }
    let check_empty = r.strict && !allow_empty;
    let items = match v {
        Node::Str(s) if s.is_empty() && check_empty => return Err(fail(path, "must not be empty")),
        Node::Str(_) => return Ok(()),
        Node::Arr(items) if items.is_empty() && check_empty => {
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
                if s.is_empty() && check_empty {
                    return Err(fail(&item_path, "must not be empty"));
                }
            }
            (Shape::Token, Node::Num(n)) => token(r, &item_path, *n)?,
            (Shape::Tokens, Node::Arr(tokens)) => {
                if tokens.is_empty() && check_empty {
                    return Err(fail(&item_path, "must not be empty"));
                }
                for (j, t) in tokens.iter().enumerate() {
                    match t {
                        Node::Num(n) => token(r, &item_path.index(j), *n)?,
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

fn token(r: Rules, path: &Path<'_>, n: Num) -> Check {
    match n.as_int() {
        _ if !r.strict => Ok(()),
        Some(i) if i >= 0 => Ok(()),
        _ => Err(fail(
            path,
            format!("must be a token (an integer >= 0), got {n}"),
        )),
    }
}

// === strict: the top-level fields each API defines ===

/// The top-level fields `route`'s API defines (what strict mode accepts).
pub fn known_fields(route: Route) -> &'static [&'static str] {
    match route {
        Route::ChatCompletions => openai::CHAT_FIELDS,
        Route::Completions => openai::COMPLETIONS_FIELDS,
        Route::Embeddings => openai::EMBEDDINGS_FIELDS,
        Route::Responses => openai::RESPONSES_FIELDS,
        Route::Messages => anthropic::MESSAGES_FIELDS,
        Route::CountTokens => anthropic::COUNT_TOKENS_FIELDS,
    }
}

/// How many unknown fields one error names before summarising the rest.
const MAX_NAMED: usize = 10;

fn top_level_fields(route: Route, fields: &[(&str, Node<'_>)]) -> Check {
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
