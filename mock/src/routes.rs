//! The mock's built-in behaviour: OpenAI- and Anthropic-shaped answers, streaming or not.
//!
//! Token counts are deterministic so tests can assert them: prompt/input tokens are
//! `max(1, request body bytes / 4)`, completion/output tokens are the number of words
//! in the content.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use serde_json::{json, Value};

use crate::{
    response::{ToolCallSpec, TOOL_ARGUMENT_PIECE},
    schema,
};

/// The default assistant text.
pub(crate) const DEFAULT_CONTENT: &str = "Hello from mock";

/// Dimensions of the default embedding vectors (the request's `dimensions` overrides).
const EMBEDDING_DIMS: usize = 8;
const MAX_EMBEDDING_DIMS: usize = 4096;

/// The API a request path names, matched on the path's suffix so that prefixed paths
/// (`/v3/https://api.anthropic.com/v1/messages`, Supermemory's router) work too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Chat,
    /// `GET .../v1/chat/completions`: the stored chat completions (one, of the `model` query
    /// parameter's model).
    ChatList,
    /// `GET .../v1/chat/completions/{id}`: a stored chat completion.
    ChatGet,
    /// `POST .../v1/chat/completions/{id}`: its `metadata` updated.
    ChatUpdate,
    /// `DELETE .../v1/chat/completions/{id}`.
    ChatDelete,
    /// `GET .../v1/chat/completions/{id}/messages`.
    ChatMessages,
    Completions,
    Embeddings,
    Models,
    /// `GET .../v1/models/{id}`: one model, in both APIs' fields.
    ModelGet,
    Messages,
    CountTokens,
    /// `POST .../v1/responses`: create a response.
    Responses,
    /// `POST .../v1/responses/input_tokens`.
    ResponsesInputTokens,
    /// `GET .../v1/responses/{id}`.
    ResponseGet,
    /// `DELETE .../v1/responses/{id}`.
    ResponseDelete,
    /// `GET .../v1/responses/{id}/input_items`.
    ResponseInputItems,
    /// `POST .../v1/responses/{id}/cancel`.
    ResponseCancel,
    /// A multipart or binary upload, counted by the streaming sink and never buffered whole.
    Upload(Upload),
    WrongMethod,
    NotFound,
}

/// What an upload route answers as (`object` of the reply).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Upload {
    File,
    Part,
    Audio,
    /// Any other path with a multipart or binary body.
    Other,
}

impl Upload {
    fn object(self) -> &'static str {
        match self {
            Upload::File => "file",
            Upload::Part => "upload.part",
            Upload::Audio => "audio.transcription",
            Upload::Other => "upload",
        }
    }
}

impl Route {
    /// The route of a request; `content_type` sends multipart and binary bodies on paths the
    /// mock does not know to the upload sink.
    pub(crate) fn of(method: &Method, path: &str, content_type: Option<&str>) -> Route {
        let (route, want) = if path.ends_with("/v1/chat/completions") {
            match *method {
                Method::GET => (Route::ChatList, Method::GET),
                _ => (Route::Chat, Method::POST),
            }
        } else if let Some(rest) = after_last(path, "/v1/chat/completions/") {
            match rest.split('/').collect::<Vec<_>>()[..] {
                [id] if !id.is_empty() => match *method {
                    Method::DELETE => (Route::ChatDelete, Method::DELETE),
                    Method::POST => (Route::ChatUpdate, Method::POST),
                    _ => (Route::ChatGet, Method::GET),
                },
                [id, "messages"] if !id.is_empty() => (Route::ChatMessages, Method::GET),
                _ => return Route::NotFound,
            }
        } else if path.ends_with("/v1/completions") {
            (Route::Completions, Method::POST)
        } else if path.ends_with("/v1/embeddings") {
            (Route::Embeddings, Method::POST)
        } else if path.ends_with("/v1/messages") {
            (Route::Messages, Method::POST)
        } else if path.ends_with("/v1/messages/count_tokens") {
            (Route::CountTokens, Method::POST)
        } else if path.ends_with("/v1/models") {
            (Route::Models, Method::GET)
        } else if after_last(path, "/v1/models/").is_some_and(|id| !id.is_empty()) {
            (Route::ModelGet, Method::GET)
        } else if path.ends_with("/v1/responses") {
            (Route::Responses, Method::POST)
        } else if let Some(rest) = after_last(path, "/v1/responses/") {
            match rest.split('/').collect::<Vec<_>>()[..] {
                ["input_tokens"] => (Route::ResponsesInputTokens, Method::POST),
                [id] if !id.is_empty() => match *method {
                    Method::DELETE => (Route::ResponseDelete, Method::DELETE),
                    _ => (Route::ResponseGet, Method::GET),
                },
                [id, "input_items"] if !id.is_empty() => (Route::ResponseInputItems, Method::GET),
                [id, "cancel"] if !id.is_empty() => (Route::ResponseCancel, Method::POST),
                _ => return Route::NotFound,
            }
        } else if path.ends_with("/v1/files") {
            (Route::Upload(Upload::File), Method::POST)
        } else if path.ends_with("/v1/audio/transcriptions")
            || path.ends_with("/v1/audio/translations")
        {
            (Route::Upload(Upload::Audio), Method::POST)
        } else if path.ends_with("/v1/uploads") || after_last(path, "/v1/uploads/").is_some() {
            (Route::Upload(Upload::Part), Method::POST)
        } else if *method == Method::POST && content_type.is_some_and(is_upload_type) {
            (Route::Upload(Upload::Other), Method::POST)
        } else {
            return Route::NotFound;
        };
        if *method == want {
            route
        } else {
            Route::WrongMethod
        }
    }

    /// `NotFound` for a route of the API this mock does not speak (`only`: 1 OpenAI only,
    /// 2 Anthropic only, else every API).
    pub(crate) fn spoken(self, only: u8) -> Route {
        let anthropic = matches!(self, Route::Messages | Route::CountTokens);
        let openai = matches!(
            self,
            Route::Chat
                | Route::ChatList
                | Route::ChatGet
                | Route::ChatUpdate
                | Route::ChatDelete
                | Route::ChatMessages
                | Route::Completions
                | Route::Embeddings
                | Route::Responses
        );
        match only {
            1 if anthropic => Route::NotFound,
            2 if openai => Route::NotFound,
            _ => self,
        }
    }

    /// Whether the body goes to the streaming sink instead of being read whole.
    pub(crate) fn is_upload(self) -> bool {
        matches!(self, Route::Upload(_))
    }
}

/// Multipart forms and raw binary: the bodies a real API streams to storage.
fn is_upload_type(content_type: &str) -> bool {
    let ct = content_type.trim_start().to_ascii_lowercase();
    ct.starts_with("multipart/") || ct.starts_with("application/octet-stream")
}

/// What follows the last `needle` in `path` (the query string is already gone).
fn after_last<'a>(path: &'a str, needle: &str) -> Option<&'a str> {
    path.rfind(needle).map(|i| &path[i + needle.len()..])
}

/// The `{id}` of `.../v1/responses/{id}[/...]`.
fn response_id(path: &str) -> &str {
    path_id(path, "/v1/responses/", "resp_mock")
}

/// The segment after the last `prefix` of `path` (its query cut off), else `fallback`.
fn path_id<'a>(path: &'a str, prefix: &str, fallback: &'a str) -> &'a str {
    let path = path.split('?').next().unwrap_or(path);
    after_last(path, prefix)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or(fallback)
}

/// A built answer, before scripted headers and body pacing are applied.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) content_type: HeaderValue,
    pub(crate) body: ReplyBody,
}

#[derive(Debug)]
pub(crate) enum ReplyBody {
    Full(Bytes),
    Events(Vec<Bytes>),
}

impl Reply {
    pub(crate) fn json(status: StatusCode, v: &Value) -> Reply {
        Reply {
            status,
            content_type: HeaderValue::from_static("application/json"),
            body: ReplyBody::Full(Bytes::from(v.to_string())),
        }
    }

    fn events(events: Vec<Bytes>) -> Reply {
        Reply {
            status: StatusCode::OK,
            content_type: HeaderValue::from_static("text/event-stream"),
            body: ReplyBody::Events(events),
        }
    }
}

/// Everything the default behaviour needs to know about one request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call<'a> {
    pub(crate) route: Route,
    pub(crate) method: &'a Method,
    pub(crate) path: &'a str,
    pub(crate) body: &'a [u8],
    /// The request's sequence number (1-based), used in ids.
    pub(crate) seq: u64,
    pub(crate) content: &'a str,
    /// The body's full size (for uploads `body` holds only a prefix).
    pub(crate) body_len: u64,
    pub(crate) content_type: Option<&'a str>,
    /// Non-empty: chat, messages and responses answer these tool calls instead of text.
    pub(crate) tool_calls: &'a [ToolCallSpec],
}

/// The route's default answer.
pub(crate) fn default_reply(call: &Call<'_>) -> Reply {
    match call.route {
        Route::Models => models(),
        Route::ModelGet => {
            // Ids may hold `/` (`meta-llama/Llama-3-8b`): everything after `/v1/models/`.
            let path = call.path.split('?').next().unwrap_or(call.path);
            let id = after_last(path, "/v1/models/").unwrap_or("model");
            Reply::json(
                StatusCode::OK,
                &json!({"id": id, "object": "model", "created": 1_700_000_000, "owned_by": "mock",
                        "type": "model", "display_name": id, "created_at": "2023-11-14T22:13:20Z"}),
            )
        }
        Route::NotFound => openai_error(
            StatusCode::NOT_FOUND,
            &format!("mock upstream: no route for {} {}", call.method, call.path),
            "invalid_request_error",
            "not_found",
        ),
        Route::WrongMethod => openai_error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!(
                "mock upstream: method {} not allowed on {}",
                call.method, call.path
            ),
            "invalid_request_error",
            "method_not_allowed",
        ),
        Route::Upload(kind) => upload(call, kind),
        Route::ResponseGet => {
            let resp = response_object(call, response_id(call.path), "gpt-mock", "completed");
            Reply::json(StatusCode::OK, &resp)
        }
        Route::ResponseCancel => {
            let mut resp = response_object(call, response_id(call.path), "gpt-mock", "cancelled");
            resp["output"] = json!([]);
            resp["usage"] = Value::Null;
            resp["completed_at"] = Value::Null;
            Reply::json(StatusCode::OK, &resp)
        }
        Route::ResponseDelete => Reply::json(
            StatusCode::OK,
            &json!({"id": response_id(call.path), "object": "response.deleted", "deleted": true}),
        ),
        Route::ResponseInputItems => input_items(call),
        Route::ChatList | Route::ChatGet | Route::ChatUpdate => stored_chat(call),
        Route::ChatDelete => Reply::json(
            StatusCode::OK,
            &json!({
                "id": path_id(call.path, "/v1/chat/completions/", "chatcmpl-mock"),
                "object": "chat.completion.deleted",
                "deleted": true,
            }),
        ),
        Route::ChatMessages => stored_chat_messages(call),
        Route::Chat
        | Route::Completions
        | Route::Embeddings
        | Route::Messages
        | Route::CountTokens
        | Route::Responses
        | Route::ResponsesInputTokens => {
            let req: Value = match serde_json::from_slice(call.body) {
                Ok(v @ Value::Object(_)) => v,
                _ => {
                    let msg = "mock upstream: request body is not a JSON object";
                    return if matches!(call.route, Route::Messages | Route::CountTokens) {
                        anthropic_error(StatusCode::BAD_REQUEST, msg)
                    } else {
                        openai_error(
                            StatusCode::BAD_REQUEST,
                            msg,
                            "invalid_request_error",
                            "invalid_json",
                        )
                    };
                }
            };
            // Structured outputs: a model constrained to a schema answers JSON of it (as
            // text, or as the forced tool's call that Anthropic clients use for it).
            let (json_text, forced);
            let mut call = *call;
            if call.tool_calls.is_empty() {
                if let Some(schema) = schema::requested(&req) {
                    json_text = schema::example(schema).to_string();
                    call.content = &json_text;
                } else if let Some(tool) = forced_tool(&req) {
                    forced = [tool];
                    call.tool_calls = &forced;
                }
            }
            let call = &call;
            if !call.tool_calls.is_empty() {
                match call.route {
                    Route::Chat => return chat_tool_calls(call, &req),
                    Route::Messages => return messages_tool_calls(call, &req),
                    Route::Responses => return responses_tool_calls(call, &req),
                    _ => {}
                }
            }
            match call.route {
                Route::Chat => chat(call, &req),
                Route::Completions => completions(call, &req),
                Route::Embeddings => embeddings(&req),
                Route::CountTokens => count_tokens(call.body, &req),
                Route::Responses => responses(call, &req),
                Route::ResponsesInputTokens => Reply::json(
                    StatusCode::OK,
                    &json!({"object": "response.input_tokens", "input_tokens": prompt_tokens(call.body)}),
                ),
                _ => messages(call, &req),
            }
        }
    }
}

fn openai_error(status: StatusCode, message: &str, kind: &str, code: &str) -> Reply {
    Reply::json(
        status,
        &json!({"error": {"message": message, "type": kind, "code": code}}),
    )
}

fn anthropic_error(status: StatusCode, message: &str) -> Reply {
    Reply::json(
        status,
        &json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}}),
    )
}

/// Anthropic's `count_tokens`: the fields only generation takes are refused, as Anthropic
/// refuses them (`max_tokens: Extra inputs are not permitted`).
fn count_tokens(body: &[u8], req: &Value) -> Reply {
    const GENERATION_ONLY: &[&str] = &[
        "max_tokens",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "metadata",
    ];
    if let Some(k) = GENERATION_ONLY.iter().find(|k| req.get(**k).is_some()) {
        return anthropic_error(
            StatusCode::BAD_REQUEST,
            &format!("{k}: Extra inputs are not permitted"),
        );
    }
    Reply::json(
        StatusCode::OK,
        &json!({"input_tokens": prompt_tokens(body)}),
    )
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn prompt_tokens(body: &[u8]) -> u64 {
    (body.len() as u64 / 4).max(1)
}

/// The content split after each space: the pieces a stream sends, one per event.
fn words(content: &str) -> Vec<&str> {
    content.split_inclusive(' ').collect()
}

fn model_of<'a>(req: &'a Value, fallback: &'a str) -> &'a str {
    req.get("model").and_then(Value::as_str).unwrap_or(fallback)
}

fn wants_stream(req: &Value) -> bool {
    req.get("stream").and_then(Value::as_bool).unwrap_or(false)
}

fn wants_usage(req: &Value) -> bool {
    req.pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn data_event(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

/// One `chat.completion.chunk` event. OpenAI sends `usage: null` on every chunk but the last
/// when usage is asked for.
fn chat_chunk(
    id: &str,
    created: u64,
    model: &str,
    include_usage: bool,
    delta: Value,
    finish: Option<&str>,
) -> Bytes {
    let mut c = json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_mock",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
    });
    if include_usage {
        c["usage"] = Value::Null;
    }
    data_event(&c)
}

/// The last chunk of a chat stream that asked for usage: no choices, the usage.
fn chat_usage_chunk(id: &str, created: u64, model: &str, usage: &Value) -> Bytes {
    data_event(&json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_mock",
        "choices": [],
        "usage": usage,
    }))
}

fn done_event() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}

fn usage(prompt: u64, completion: u64) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

// === OpenAI ===

fn chat(call: &Call<'_>, req: &Value) -> Reply {
    let id = format!("chatcmpl-mock-{}", call.seq);
    let model = model_of(req, "gpt-mock");
    let created = now();
    let words = words(call.content);
    let usage = usage(prompt_tokens(call.body), words.len() as u64);
    if !wants_stream(req) {
        return Reply::json(
            StatusCode::OK,
            &json!({
                "id": id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_mock",
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": call.content, "refusal": null},
                    "logprobs": null,
                    "finish_reason": "stop",
                }],
                "usage": usage,
            }),
        );
    }
    let include_usage = wants_usage(req);
    let chunk = |delta: Value, finish: Option<&str>| {
        chat_chunk(&id, created, model, include_usage, delta, finish)
    };
    let mut events = Vec::with_capacity(words.len() + 4);
    events.push(chunk(
        json!({"role": "assistant", "content": "", "refusal": null}),
        None,
    ));
    for w in &words {
        events.push(chunk(json!({"content": w}), None));
    }
    events.push(chunk(json!({}), Some("stop")));
    if include_usage {
        events.push(chat_usage_chunk(&id, created, model, &usage));
    }
    events.push(done_event());
    Reply::events(events)
}

fn completions(call: &Call<'_>, req: &Value) -> Reply {
    let id = format!("cmpl-mock-{}", call.seq);
    let model = model_of(req, "gpt-mock-instruct");
    let created = now();
    let words = words(call.content);
    let usage = usage(prompt_tokens(call.body), words.len() as u64);
    let choice = |text: &str, finish: Option<&str>| json!({"text": text, "index": 0, "logprobs": null, "finish_reason": finish});
    if !wants_stream(req) {
        return Reply::json(
            StatusCode::OK,
            &json!({
                "id": id,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [choice(call.content, Some("stop"))],
                "usage": usage,
            }),
        );
    }
    let chunk = |choices: Value| {
        data_event(&json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": choices,
        }))
    };
    let mut events = Vec::with_capacity(words.len() + 3);
    for w in &words {
        events.push(chunk(json!([choice(w, None)])));
    }
    events.push(chunk(json!([choice("", Some("stop"))])));
    if wants_usage(req) {
        events.push(data_event(&json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [],
            "usage": usage,
        })));
    }
    events.push(done_event());
    Reply::events(events)
}

fn embeddings(req: &Value) -> Reply {
    let inputs: Vec<String> = match req.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        // A single tokenised input is an array of integers.
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_number) => {
            vec![Value::Array(a.clone()).to_string()]
        }
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| match x {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        _ => {
            return openai_error(
                StatusCode::BAD_REQUEST,
                "mock upstream: 'input' is required",
                "invalid_request_error",
                "missing_input",
            )
        }
    };
    let dims = req
        .get("dimensions")
        .and_then(Value::as_u64)
        .map_or(EMBEDDING_DIMS, |d| {
            (d as usize).clamp(1, MAX_EMBEDDING_DIMS)
        });
    let base64 = req.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let mut tokens = 0;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            tokens += prompt_tokens(text.as_bytes());
            let v = embedding(text, dims);
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                Value::String(base64_encode(&bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    Reply::json(
        StatusCode::OK,
        &json!({
            "object": "list",
            "data": data,
            "model": model_of(req, "text-embedding-mock"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }),
    )
}

/// A deterministic vector in [-1, 1) derived from the text: equal inputs embed equally.
fn embedding(text: &str, dims: usize) -> Vec<f32> {
    // FNV-1a seeds a splitmix64 sequence.
    let mut state = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (0..dims)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> shift) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn models() -> Reply {
    let created = 1_700_000_000;
    let data: Vec<Value> = [
        ("gpt-4o-mini", "openai"),
        ("gpt-4o", "openai"),
        ("text-embedding-3-small", "openai"),
        ("claude-3-5-haiku-latest", "anthropic"),
        ("claude-sonnet-4-5", "anthropic"),
    ]
    .into_iter()
    .map(|(id, owner)| json!({"id": id, "object": "model", "created": created, "owned_by": owner}))
    .collect();
    Reply::json(StatusCode::OK, &json!({"object": "list", "data": data}))
}

// === OpenAI Responses API ===

/// The `usage` of a response: input tokens by the body rule, output tokens the words.
fn response_usage(input: u64, output: u64) -> Value {
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input + output,
    })
}

/// The assistant's `message` output item, `text` in one `output_text` part.
fn message_item(id: &str, status: &str, text: Option<&str>) -> Value {
    let content = match text {
        Some(t) => json!([output_text(t)]),
        None => json!([]),
    };
    json!({"id": id, "type": "message", "status": status, "role": "assistant", "content": content})
}

fn output_text(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// A whole `response` object with id `id`, completed (with output and usage) unless `status`
/// says otherwise; request fields the API echoes are echoed from the call's JSON body.
fn response_object(call: &Call<'_>, id: &str, fallback_model: &str, status: &str) -> Value {
    let req: Value = serde_json::from_slice(call.body).unwrap_or(Value::Null);
    let model = model_of(&req, fallback_model);
    let created = now();
    let words = words(call.content).len() as u64;
    let echo = |field: &str, default: Value| req.get(field).cloned().unwrap_or(default);
    json!({
        "id": id,
        "object": "response",
        "created_at": created,
        "status": status,
        "completed_at": created,
        "background": echo("background", json!(false)),
        "error": null,
        "incomplete_details": null,
        "instructions": echo("instructions", Value::Null),
        "max_output_tokens": echo("max_output_tokens", Value::Null),
        "model": model,
        "output": [message_item(&format!("msg_mock_{}", call.seq), "completed", Some(call.content))],
        "parallel_tool_calls": echo("parallel_tool_calls", json!(true)),
        "previous_response_id": echo("previous_response_id", Value::Null),
        "reasoning": {"effort": null, "summary": null},
        "store": echo("store", json!(true)),
        "temperature": echo("temperature", json!(1.0)),
        "text": {"format": {"type": "text"}},
        "tool_choice": echo("tool_choice", json!("auto")),
        "tools": echo("tools", json!([])),
        "top_p": echo("top_p", json!(1.0)),
        "truncation": "disabled",
        "usage": response_usage(prompt_tokens(call.body), words),
        "user": null,
        "metadata": echo("metadata", json!({})),
    })
}

fn responses(call: &Call<'_>, req: &Value) -> Reply {
    let id = format!("resp_mock_{}", call.seq);
    let done = response_object(call, &id, "gpt-mock", "completed");
    if !wants_stream(req) {
        return Reply::json(StatusCode::OK, &done);
    }
    let item_id = format!("msg_mock_{}", call.seq);
    let mut pending = done.clone();
    pending["status"] = json!("in_progress");
    pending["completed_at"] = Value::Null;
    pending["output"] = json!([]);
    pending["usage"] = Value::Null;

    let mut seq = 0_u64;
    let mut event = |kind: &str, mut v: Value| {
        v["type"] = json!(kind);
        v["sequence_number"] = json!(seq);
        seq += 1;
        Bytes::from(format!("event: {kind}\ndata: {v}\n\n"))
    };
    let at = |extra: Value| {
        let mut v = json!({"item_id": item_id, "output_index": 0, "content_index": 0});
        if let (Value::Object(v), Value::Object(extra)) = (&mut v, extra) {
            v.extend(extra);
        }
        v
    };
    let words = words(call.content);
    let mut events = Vec::with_capacity(words.len() + 8);
    events.push(event("response.created", json!({"response": pending})));
    events.push(event("response.in_progress", json!({"response": pending})));
    events.push(event(
        "response.output_item.added",
        json!({"output_index": 0, "item": message_item(&item_id, "in_progress", None)}),
    ));
    events.push(event(
        "response.content_part.added",
        at(json!({"part": output_text("")})),
    ));
    for w in &words {
        events.push(event(
            "response.output_text.delta",
            at(json!({"delta": w, "logprobs": []})),
        ));
    }
    events.push(event(
        "response.output_text.done",
        at(json!({"text": call.content, "logprobs": []})),
    ));
    events.push(event(
        "response.content_part.done",
        at(json!({"part": output_text(call.content)})),
    ));
    events.push(event(
        "response.output_item.done",
        json!({"output_index": 0, "item": message_item(&item_id, "completed", Some(call.content))}),
    ));
    events.push(event("response.completed", json!({"response": done})));
    Reply::events(events)
}

fn input_items(call: &Call<'_>) -> Reply {
    let id = response_id(call.path);
    let item = format!("msg_mock_in_{}", call.seq);
    Reply::json(
        StatusCode::OK,
        &json!({
            "object": "list",
            "data": [{
                "id": item,
                "type": "message",
                "role": "user",
                "status": "completed",
                "content": [{"type": "input_text", "text": format!("input of {id}")}],
            }],
            "first_id": item,
            "last_id": item,
            "has_more": false,
        }),
    )
}

// === Stored chat completions ===

/// A stored chat completion (`store: true`): by id, after a metadata update (the body's
/// `metadata`), or the list of one, whose model is the `model` query parameter's.
fn stored_chat(call: &Call<'_>) -> Reply {
    let query = call.path.split_once('?').map_or("", |(_, q)| q);
    let model = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "model")
        .map_or_else(|| "gpt-mock".to_owned(), |(_, v)| v.into_owned());
    let id = match call.route {
        Route::ChatList => format!("chatcmpl-mock-stored-{}", call.seq),
        _ => path_id(call.path, "/v1/chat/completions/", "chatcmpl-mock").to_owned(),
    };
    let metadata = serde_json::from_slice::<Value>(call.body)
        .ok()
        .and_then(|v| v.get("metadata").cloned())
        .unwrap_or_else(|| json!({}));
    let completion = json!({
        "id": id,
        "object": "chat.completion",
        "created": now(),
        "model": model,
        "metadata": metadata,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": DEFAULT_CONTENT, "refusal": null},
            "logprobs": null,
            "finish_reason": "stop",
        }],
        "usage": usage(1, 3),
    });
    if call.route != Route::ChatList {
        return Reply::json(StatusCode::OK, &completion);
    }
    Reply::json(
        StatusCode::OK,
        &json!({
            "object": "list",
            "data": [completion],
            "first_id": id,
            "last_id": id,
            "has_more": false,
        }),
    )
}

/// The messages of a stored chat completion: its one user message.
fn stored_chat_messages(call: &Call<'_>) -> Reply {
    let id = path_id(call.path, "/v1/chat/completions/", "chatcmpl-mock");
    let item = format!("{id}-0");
    Reply::json(
        StatusCode::OK,
        &json!({
            "object": "list",
            "data": [{"id": item, "role": "user", "content": format!("input of {id}"),
                      "name": null, "content_parts": null}],
            "first_id": item,
            "last_id": item,
            "has_more": false,
        }),
    )
}

// === Uploads ===

/// The streaming sink's answer: what arrived, never the bytes themselves.
fn upload(call: &Call<'_>, kind: Upload) -> Reply {
    let mut v = json!({
        "id": format!("file-mock-{}", call.seq),
        "object": kind.object(),
        "bytes": call.body_len,
        "content_type": call.content_type,
        "created_at": now(),
    });
    if kind == Upload::Audio {
        v["text"] = json!(call.content);
    }
    Reply::json(StatusCode::OK, &v)
}

// === Anthropic ===

/// The call of the tool a request forces, its input the smallest one the tool's schema
/// accepts: the named tool (Messages `{type: tool, name}`, chat `{type: function, function:
/// {name}}`, Responses `{type: function, name}`), or the only tool when any call is required
/// (`any`, `required`).
fn forced_tool(req: &Value) -> Option<ToolCallSpec> {
    // Each tool as (name, schema), whatever the API's shape.
    let tools: Vec<(&str, Option<&Value>)> = req
        .get("tools")?
        .as_array()?
        .iter()
        .filter_map(|t| {
            let f = t.get("function").unwrap_or(t);
            let name = f.get("name")?.as_str()?;
            Some((name, f.get("input_schema").or_else(|| f.get("parameters"))))
        })
        .collect();
    let choice = req.get("tool_choice")?;
    let name = match choice {
        Value::String(s) if s == "required" && tools.len() == 1 => tools[0].0,
        Value::Object(o) => match o.get("type").and_then(Value::as_str) {
            Some("any") if tools.len() == 1 => tools[0].0,
            Some("tool" | "function") => o
                .get("name")
                .or_else(|| o.get("function").and_then(|f| f.get("name")))?
                .as_str()?,
            _ => return None,
        },
        _ => return None,
    };
    let (_, schema) = tools.iter().find(|(n, _)| *n == name)?;
    let input = schema::example(schema.unwrap_or(&json!({"type": "object"})));
    Some(ToolCallSpec {
        name: name.to_owned(),
        arguments: input.to_string(),
    })
}

/// The page the mock's web search finds ([`messages`] with a `web_search_*` tool).
pub(crate) const SEARCH_URL: &str = "https://example.com/mock-search";
/// Its title.
pub(crate) const SEARCH_TITLE: &str = "Mock search result";

/// Whether a Messages request offers Anthropic's web search server tool.
fn wants_web_search(req: &Value) -> bool {
    req["tools"].as_array().into_iter().flatten().any(|t| {
        t["type"]
            .as_str()
            .is_some_and(|k| k.starts_with("web_search_"))
    })
}

/// The content blocks of a web search answer, as Anthropic sends them: the search call, its
/// result, a lead-in, then the answer's text citing the page.
fn web_search_blocks(query: &str, content: &str) -> [Value; 4] {
    [
        json!({"type": "server_tool_use", "id": "srvtoolu_mock", "name": "web_search",
               "input": {"query": query}}),
        json!({"type": "web_search_tool_result", "tool_use_id": "srvtoolu_mock", "content": [
            {"type": "web_search_result", "url": SEARCH_URL, "title": SEARCH_TITLE,
             "encrypted_content": "EqMockContent", "page_age": null}]}),
        json!({"type": "text", "text": "From the web: "}),
        json!({"type": "text", "text": content, "citations": [
            {"type": "web_search_result_location", "url": SEARCH_URL, "title": SEARCH_TITLE,
             "encrypted_index": "EoMockIndex", "cited_text": content}]}),
    ]
}

fn messages(call: &Call<'_>, req: &Value) -> Reply {
    if wants_web_search(req) {
        return messages_web_search(call, req);
    }
    let id = format!("msg_mock_{}", call.seq);
    let model = model_of(req, "claude-mock");
    let words = words(call.content);
    let input = prompt_tokens(call.body);
    let output = words.len() as u64;
    if !wants_stream(req) {
        return Reply::json(
            StatusCode::OK,
            &json!({
                "id": id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": call.content}],
                "stop_reason": "end_turn",
                "stop_sequence": null,
                "usage": {"input_tokens": input, "output_tokens": output},
            }),
        );
    }
    let event = |name: &str, v: Value| Bytes::from(format!("event: {name}\ndata: {v}\n\n"));
    let mut events = Vec::with_capacity(words.len() + 5);
    events.push(event(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {"input_tokens": input, "output_tokens": 1},
        }}),
    ));
    events.push(event(
        "content_block_start",
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ));
    for w in &words {
        events.push(event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}}),
        ));
    }
    events.push(event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push(event(
        "message_delta",
        json!({"type": "message_delta",
               "delta": {"stop_reason": "end_turn", "stop_sequence": null},
               "usage": {"output_tokens": output}}),
    ));
    events.push(event("message_stop", json!({"type": "message_stop"})));
    Reply::events(events)
}

/// [`messages`] when the request offers the web search tool: the search, then the answer
/// citing what it found (streamed: each block, the citation as a `citations_delta`).
fn messages_web_search(call: &Call<'_>, req: &Value) -> Reply {
    let id = format!("msg_mock_{}", call.seq);
    let model = model_of(req, "claude-mock");
    let (input, output) = (
        prompt_tokens(call.body),
        words(call.content).len() as u64 + 3,
    );
    let usage = json!({"input_tokens": input, "output_tokens": output,
                       "server_tool_use": {"web_search_requests": 1}});
    let blocks = web_search_blocks("mock query", call.content);
    if !wants_stream(req) {
        return Reply::json(
            StatusCode::OK,
            &json!({"id": id, "type": "message", "role": "assistant", "model": model,
                    "content": blocks, "stop_reason": "end_turn", "stop_sequence": null,
                    "usage": usage}),
        );
    }
    let event = |v: Value| {
        let name = v["type"].as_str().unwrap_or_default().to_owned();
        Bytes::from(format!("event: {name}\ndata: {v}\n\n"))
    };
    let mut events = vec![event(json!({"type": "message_start", "message": {
        "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": input, "output_tokens": 1}}}))];
    for (index, block) in blocks.into_iter().enumerate() {
        let delta =
            |d: Value| event(json!({"type": "content_block_delta", "index": index, "delta": d}));
        let mut start = block.clone();
        let mut deltas = Vec::new();
        match block["type"].as_str() {
            Some("server_tool_use") => {
                start["input"] = json!({});
                deltas.push(delta(json!({"type": "input_json_delta",
                    "partial_json": block["input"].to_string()})));
            }
            Some("text") => {
                start["text"] = json!("");
                if let Some(cites) = block["citations"].as_array() {
                    start["citations"] = json!([]);
                    for c in cites {
                        deltas.push(delta(json!({"type": "citations_delta", "citation": c})));
                    }
                }
                deltas.push(delta(json!({"type": "text_delta", "text": block["text"]})));
            }
            _ => {}
        }
        events.push(event(json!({"type": "content_block_start", "index": index,
                                 "content_block": start})));
        events.extend(deltas);
        events.push(event(json!({"type": "content_block_stop", "index": index})));
    }
    events.push(event(json!({"type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": usage})));
    events.push(event(json!({"type": "message_stop"})));
    Reply::events(events)
}

// === Tool calls ===

/// A call's arguments in the pieces a stream sends them in.
fn argument_pieces(arguments: &str) -> Vec<String> {
    let chars: Vec<char> = arguments.chars().collect();
    chars
        .chunks(TOOL_ARGUMENT_PIECE)
        .map(|c| c.iter().collect())
        .collect()
}

/// Output tokens of a tool-call answer: one per started 4 bytes of arguments.
fn tool_call_tokens(calls: &[ToolCallSpec]) -> u64 {
    calls
        .iter()
        .map(|c| (c.arguments.len() as u64).div_ceil(4).max(1))
        .sum()
}

fn tool_input(c: &ToolCallSpec) -> Value {
    serde_json::from_str(&c.arguments).unwrap_or_else(|_| json!({}))
}

fn chat_tool_calls(call: &Call<'_>, req: &Value) -> Reply {
    let id = format!("chatcmpl-mock-{}", call.seq);
    let model = model_of(req, "gpt-mock");
    let created = now();
    let usage = usage(prompt_tokens(call.body), tool_call_tokens(call.tool_calls));
    let call_id = |i: usize| format!("call_mock_{}_{i}", call.seq);
    if !wants_stream(req) {
        let tool_calls: Vec<Value> = call
            .tool_calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                json!({"id": call_id(i), "type": "function",
                       "function": {"name": c.name, "arguments": c.arguments}})
            })
            .collect();
        return Reply::json(
            StatusCode::OK,
            &json!({
                "id": id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_mock",
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": null, "tool_calls": tool_calls, "refusal": null},
                    "logprobs": null,
                    "finish_reason": "tool_calls",
                }],
                "usage": usage,
            }),
        );
    }
    let include_usage = wants_usage(req);
    let chunk = |delta: Value, finish: Option<&str>| {
        chat_chunk(&id, created, model, include_usage, delta, finish)
    };
    let mut events = Vec::new();
    for (i, c) in call.tool_calls.iter().enumerate() {
        // The first chunk of a call names it, with empty arguments (the role rides on the first).
        let mut open = json!({"tool_calls": [{"index": i, "id": call_id(i), "type": "function",
                                               "function": {"name": c.name, "arguments": ""}}]});
        if i == 0 {
            open["role"] = json!("assistant");
            open["content"] = Value::Null;
            open["refusal"] = Value::Null;
        }
        events.push(chunk(open, None));
        for piece in argument_pieces(&c.arguments) {
            events.push(chunk(
                json!({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}),
                None,
            ));
        }
    }
    events.push(chunk(json!({}), Some("tool_calls")));
    if include_usage {
        events.push(chat_usage_chunk(&id, created, model, &usage));
    }
    events.push(done_event());
    Reply::events(events)
}

fn messages_tool_calls(call: &Call<'_>, req: &Value) -> Reply {
    let id = format!("msg_mock_{}", call.seq);
    let model = model_of(req, "claude-mock");
    let input = prompt_tokens(call.body);
    let output = tool_call_tokens(call.tool_calls);
    let block_id = |i: usize| format!("toolu_mock_{}_{i}", call.seq);
    if !wants_stream(req) {
        let content: Vec<Value> = call
            .tool_calls
            .iter()
            .enumerate()
            .map(|(i, c)| json!({"type": "tool_use", "id": block_id(i), "name": c.name, "input": tool_input(c)}))
            .collect();
        return Reply::json(
            StatusCode::OK,
            &json!({
                "id": id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": "tool_use",
                "stop_sequence": null,
                "usage": {"input_tokens": input, "output_tokens": output},
            }),
        );
    }
    let event = |name: &str, v: Value| Bytes::from(format!("event: {name}\ndata: {v}\n\n"));
    let mut events = vec![event(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {"input_tokens": input, "output_tokens": 1},
        }}),
    )];
    for (i, c) in call.tool_calls.iter().enumerate() {
        events.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": i,
                   "content_block": {"type": "tool_use", "id": block_id(i), "name": c.name, "input": {}}}),
        ));
        // Anthropic opens every tool_use block with an empty partial_json.
        let pieces = std::iter::once(String::new()).chain(argument_pieces(&c.arguments));
        for piece in pieces {
            events.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": i,
                       "delta": {"type": "input_json_delta", "partial_json": piece}}),
            ));
        }
        events.push(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": i}),
        ));
    }
    events.push(event(
        "message_delta",
        json!({"type": "message_delta",
               "delta": {"stop_reason": "tool_use", "stop_sequence": null},
               "usage": {"output_tokens": output}}),
    ));
    events.push(event("message_stop", json!({"type": "message_stop"})));
    Reply::events(events)
}

fn responses_tool_calls(call: &Call<'_>, req: &Value) -> Reply {
    let id = format!("resp_mock_{}", call.seq);
    let item_id = |i: usize| format!("fc_mock_{}_{i}", call.seq);
    let call_id = |i: usize| format!("call_mock_{}_{i}", call.seq);
    let item = |i: usize, c: &ToolCallSpec, done: bool| {
        json!({
            "type": "function_call",
            "id": item_id(i),
            "call_id": call_id(i),
            "name": c.name,
            "arguments": if done { c.arguments.as_str() } else { "" },
            "status": if done { "completed" } else { "in_progress" },
        })
    };
    let mut done = response_object(call, &id, "gpt-mock", "completed");
    done["output"] = Value::Array(
        call.tool_calls
            .iter()
            .enumerate()
            .map(|(i, c)| item(i, c, true))
            .collect(),
    );
    done["usage"] = response_usage(prompt_tokens(call.body), tool_call_tokens(call.tool_calls));
    if !wants_stream(req) {
        return Reply::json(StatusCode::OK, &done);
    }
    let mut pending = done.clone();
    pending["status"] = json!("in_progress");
    pending["completed_at"] = Value::Null;
    pending["output"] = json!([]);
    pending["usage"] = Value::Null;

    let mut seq = 0_u64;
    let mut event = |kind: &str, mut v: Value| {
        v["type"] = json!(kind);
        v["sequence_number"] = json!(seq);
        seq += 1;
        Bytes::from(format!("event: {kind}\ndata: {v}\n\n"))
    };
    let mut events = vec![
        event("response.created", json!({"response": pending})),
        event("response.in_progress", json!({"response": pending})),
    ];
    for (i, c) in call.tool_calls.iter().enumerate() {
        events.push(event(
            "response.output_item.added",
            json!({"output_index": i, "item": item(i, c, false)}),
        ));
        for piece in argument_pieces(&c.arguments) {
            events.push(event(
                "response.function_call_arguments.delta",
                json!({"item_id": item_id(i), "output_index": i, "delta": piece}),
            ));
        }
        events.push(event(
            "response.function_call_arguments.done",
            json!({"item_id": item_id(i), "output_index": i, "name": c.name, "arguments": c.arguments}),
        ));
        events.push(event(
            "response.output_item.done",
            json!({"output_index": i, "item": item(i, c, true)}),
        ));
    }
    events.push(event("response.completed", json!({"response": done})));
    Reply::events(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_on_suffix() {
        let post = Method::POST;
        let route = |m: &Method, p: &str| Route::of(m, p, None);
        assert_eq!(route(&post, "/v1/messages"), Route::Messages);
        assert_eq!(
            route(&post, "/v3/https://api.anthropic.com/v1/messages"),
            Route::Messages
        );
        assert_eq!(route(&post, "/v1/chat/completions"), Route::Chat);
        assert_eq!(route(&Method::GET, "/v1/chat/completions"), Route::ChatList);
        assert_eq!(
            route(&Method::GET, "/v1/chat/completions/c1"),
            Route::ChatGet
        );
        assert_eq!(route(&post, "/v1/chat/completions/c1"), Route::ChatUpdate);
        assert_eq!(
            route(&Method::DELETE, "/v1/chat/completions/c1"),
            Route::ChatDelete
        );
        assert_eq!(
            route(&Method::GET, "/v1/chat/completions/c1/messages"),
            Route::ChatMessages
        );
        assert_eq!(
            route(&Method::DELETE, "/v1/chat/completions"),
            Route::WrongMethod
        );
        assert_eq!(route(&post, "/v1/completions"), Route::Completions);
        assert_eq!(route(&Method::GET, "/v1/models"), Route::Models);
        assert_eq!(route(&Method::GET, "/v1/models/gpt-4o"), Route::ModelGet);
        assert_eq!(
            route(&Method::DELETE, "/v1/models/ft:x"),
            Route::WrongMethod
        );
        assert_eq!(route(&Method::GET, "/v1/messages"), Route::WrongMethod);
        assert_eq!(route(&post, "/v1/nothing"), Route::NotFound);
        assert_eq!(
            route(&post, "/v1/messages/count_tokens"),
            Route::CountTokens
        );
        assert_eq!(route(&post, "/openai/v1/responses"), Route::Responses);
        assert_eq!(
            route(&Method::GET, "/v1/responses/resp_1"),
            Route::ResponseGet
        );
        assert_eq!(
            route(&Method::DELETE, "/v1/responses/resp_1"),
            Route::ResponseDelete
        );
        assert_eq!(route(&post, "/v1/responses/resp_1"), Route::WrongMethod);
        assert_eq!(
            route(&Method::GET, "/v1/responses/resp_1/input_items"),
            Route::ResponseInputItems
        );
        assert_eq!(
            route(&post, "/v1/responses/resp_1/cancel"),
            Route::ResponseCancel
        );
        assert_eq!(
            route(&post, "/v1/responses/input_tokens"),
            Route::ResponsesInputTokens
        );
        assert_eq!(route(&post, "/v1/responses/a/b/c"), Route::NotFound);
        assert_eq!(route(&post, "/v1/files"), Route::Upload(Upload::File));
        assert_eq!(
            route(&post, "/v1/audio/transcriptions"),
            Route::Upload(Upload::Audio)
        );
        assert_eq!(
            route(&post, "/v1/uploads/upload_1/parts"),
            Route::Upload(Upload::Part)
        );
        assert_eq!(
            Route::of(
                &post,
                "/v1/images/edits",
                Some("multipart/form-data; boundary=x")
            ),
            Route::Upload(Upload::Other)
        );
        assert_eq!(
            Route::of(&post, "/v1/images/edits", Some("application/json")),
            Route::NotFound
        );
        assert_eq!(
            response_id("/v1/responses/resp_9/input_items?limit=2"),
            "resp_9"
        );
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(input.as_bytes()), want);
        }
    }

    #[test]
    fn embeddings_are_deterministic_and_bounded() {
        let a = embedding("hello", 8);
        assert_eq!(a, embedding("hello", 8));
        assert_ne!(a, embedding("world", 8));
        assert!(a.iter().all(|x| (-1.0..1.0).contains(x)));
    }

    #[test]
    fn words_reassemble_to_the_content() {
        assert_eq!(words(DEFAULT_CONTENT), ["Hello ", "from ", "mock"]);
        assert_eq!(words(DEFAULT_CONTENT).concat(), DEFAULT_CONTENT);
    }
}
