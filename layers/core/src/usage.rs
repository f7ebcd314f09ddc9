//! Token usage, response model and id read from an LLM response body as it passes (never the
//! prompt or the completion text), for OpenAI chat/completions/embeddings, the Responses API
//! and Anthropic messages, plain or streamed. Read by the gateway's access log, spans and
//! metrics; here so any layer (token budgets, an audit log) can read usage too.
//!
//! Streams are scanned line by line as frames go by: only the SSE `data:` lines that can
//! carry what we need (`"usage"`, or `"model"` until it is known) are parsed, into structs
//! that skip everything else, so content deltas are never copied. A non-streaming JSON body is
//! kept up to [`JSON_CAP`] bytes and parsed once at its end.

use serde::Deserialize;

use crate::json_skim::{object, string_stop, ws};

/// The most of a non-streaming JSON response kept for reading its usage.
pub const JSON_CAP: usize = 2 * 1024 * 1024;

/// The longest SSE line kept while waiting for its end; longer ones are skipped.
const LINE_CAP: usize = 1024 * 1024;

/// What was learnt from a response body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// `gen_ai.response.model`.
    pub response_model: Option<String>,
    /// `gen_ai.response.id`.
    pub response_id: Option<String>,
    /// `gen_ai.usage.input_tokens` (Anthropic: cache reads and writes included, as OpenAI's
    /// `prompt_tokens` includes cached tokens).
    pub input_tokens: Option<u64>,
    /// `gen_ai.usage.output_tokens`.
    pub output_tokens: Option<u64>,
    /// Input tokens served from the provider's prompt cache (OpenAI `cached_tokens`,
    /// Anthropic `cache_read_input_tokens`), part of `input_tokens`.
    pub cached_input_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<UsageJson>,
    /// Anthropic `message_start` nests the message.
    #[serde(default)]
    message: Option<Message>,
    /// Responses API events (`response.created`, `response.completed`) nest the response.
    #[serde(default)]
    response: Option<Message>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<UsageJson>,
}

#[derive(Deserialize, Default)]
struct UsageJson {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    /// Chat completions.
    prompt_tokens_details: Option<CachedJson>,
    /// Responses API.
    input_tokens_details: Option<CachedJson>,
}

#[derive(Deserialize)]
struct CachedJson {
    cached_tokens: Option<u64>,
}

impl Usage {
    fn absorb(&mut self, chunk: Chunk) {
        // The Responses API's events say `"type":"response.created"` etc. beside the nested
        // response; their own `id`/`model` are absent, so the nested ones are read.
        let nested = chunk.message.or(chunk.response);
        if self.response_model.is_none() {
            self.response_model = chunk
                .model
                .or_else(|| nested.as_ref().and_then(|m| m.model.clone()));
        }
        if self.response_id.is_none() {
            self.response_id = chunk
                .id
                .or_else(|| nested.as_ref().and_then(|m| m.id.clone()));
        }
        for u in [chunk.usage, nested.and_then(|m| m.usage)]
            .into_iter()
            .flatten()
        {
            let cached = u
                .cache_read_input_tokens
                .or(u.prompt_tokens_details.and_then(|d| d.cached_tokens))
                .or(u.input_tokens_details.and_then(|d| d.cached_tokens));
            if let Some(c) = cached {
                self.cached_input_tokens = Some(self.cached_input_tokens.map_or(c, |o| o.max(c)));
            }
            // Anthropic reports counts cumulatively (message_start, then message_delta):
            // the largest is the total. OpenAI reports once.
            let input = u.prompt_tokens.or(u.input_tokens.map(|i| {
                i + u.cache_creation_input_tokens.unwrap_or(0)
                    + u.cache_read_input_tokens.unwrap_or(0)
            }));
            let output = u.completion_tokens.or(u.output_tokens);
            if let Some(i) = input {
                self.input_tokens = Some(self.input_tokens.map_or(i, |o| o.max(i)));
            }
            if let Some(o) = output {
                self.output_tokens = Some(self.output_tokens.map_or(o, |p| p.max(o)));
            }
        }
    }
}

/// How to read a response body.
#[derive(Debug)]
pub enum Sniffer {
    /// Server-sent events.
    Sse {
        /// The unfinished last line.
        line: Vec<u8>,
        /// The current line is over [`LINE_CAP`]: skip to its end.
        skipping: bool,
        /// Found so far.
        usage: Usage,
    },
    /// One JSON document.
    Json {
        /// The body so far.
        buf: Vec<u8>,
        /// Over [`JSON_CAP`]: give up.
        over: bool,
    },
}

/// One usage scan for two readers of the same response: a request extension that an outer
/// observer (the gateway's access log) inserts and an inner one (the audit layer) claims and
/// fills when its body ends, so the body is scanned once. Cloning shares it.
///
/// The filler must finish before the reader: the inner body ends (or is dropped) first.
#[derive(Debug, Clone, Default)]
pub struct UsageShare(std::sync::Arc<ShareInner>);

#[derive(Debug, Default)]
struct ShareInner {
    claimed: std::sync::atomic::AtomicBool,
    usage: std::sync::OnceLock<Usage>,
}

impl UsageShare {
    /// The inner observer will fill it: the outer one need not scan.
    pub fn claim(&self) {
        self.0
            .claimed
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether an inner observer claimed it.
    pub fn is_claimed(&self) -> bool {
        self.0.claimed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Fill it with `usage`, moved in (the first fill wins): the usage it now holds, or
    /// `usage` back when it was filled already. The filler reads its own usage from here,
    /// so the strings in it are not copied.
    pub fn fill(&self, usage: Usage) -> Result<&Usage, Usage> {
        let mut ours = Some(usage);
        let held = self.0.usage.get_or_init(|| ours.take().unwrap_or_default());
        match ours {
            None => Ok(held),
            Some(usage) => Err(usage),
        }
    }

    /// What was filled, if anything yet.
    pub fn get(&self) -> Option<&Usage> {
        self.0.usage.get()
    }
}

impl Sniffer {
    /// A sniffer for a response with these headers, or `None` when there is nothing to read
    /// (an error status, a compressed or non-JSON body).
    pub fn for_response(status: http::StatusCode, headers: &http::HeaderMap) -> Option<Self> {
        Some(match crate::headers::ReadableBody::of(status, headers)? {
            crate::headers::ReadableBody::Sse => Self::Sse {
                line: Vec::new(),
                skipping: false,
                usage: Usage::default(),
            },
            crate::headers::ReadableBody::Json => Self::Json {
                buf: Vec::new(),
                over: false,
            },
        })
    }

    /// Look at the next piece of the body.
    pub fn feed(&mut self, data: &[u8]) {
        match self {
            Self::Sse {
                line,
                skipping,
                usage,
            } => {
                let mut rest = data;
                while let Some(nl) = memchr::memchr(b'\n', rest) {
                    let (head, tail) = rest.split_at(nl);
                    rest = &tail[1..];
                    if *skipping {
                        *skipping = false;
                        line.clear();
                        continue;
                    }
                    if line.is_empty() {
                        sse_line(head, usage);
                    } else {
                        line.extend_from_slice(head);
                        sse_line(line, usage);
                        line.clear();
                    }
                }
                if !*skipping && !rest.is_empty() {
                    if line.len() + rest.len() > LINE_CAP {
                        *skipping = true;
                        line.clear();
                    } else {
                        line.extend_from_slice(rest);
                    }
                }
            }
            Self::Json { buf, over } => {
                if *over {
                    return;
                }
                if buf.len() + data.len() > JSON_CAP {
                    *over = true;
                    *buf = Vec::new();
                } else {
                    buf.extend_from_slice(data);
                }
            }
        }
    }

    /// The body ended (or was dropped): what was found.
    pub fn finish(self) -> Usage {
        match self {
            Self::Sse {
                line,
                skipping,
                mut usage,
            } => {
                if !skipping && !line.is_empty() {
                    sse_line(&line, &mut usage);
                }
                usage
            }
            Self::Json { buf, over } => {
                let mut usage = Usage::default();
                if !over {
                    if let Some(chunk) = json_chunk(&buf) {
                        usage.absorb(chunk);
                    }
                }
                usage
            }
        }
    }
}

/// The [`Chunk`] of a whole JSON answer, `None` where serde refuses it.
///
/// An answer is mostly what the usage is not read from (choices, their text, logprobs), so
/// [`skim`] steps over that, and only the few members [`Chunk`] reads go through serde (tens
/// of bytes instead of the whole answer). Where the skim is unsure (a key with an escape, a
/// member twice, a top level that is not an object, anything out of place) serde reads the
/// whole answer as before. The one difference: the skim does not check the contents of the
/// values it steps over (an invalid number or escape deep inside `choices`), where serde
/// would refuse the whole document; usage is then still read from an answer whose structure
/// is whole.
fn json_chunk(buf: &[u8]) -> Option<Chunk> {
    match skim(buf) {
        Some(members) => chunk_of(members),
        None => serde_json::from_slice::<Chunk>(buf).ok(),
    }
}

/// The [`Chunk`] of the raw members found by [`skim`]: the common shapes (a plain string,
/// a usage object of counts) read here, anything else by serde. A member of the wrong type
/// refuses the whole answer, as serde refuses it.
fn chunk_of(members: [Option<&[u8]>; 5]) -> Option<Chunk> {
    fn member<T: serde::de::DeserializeOwned>(
        raw: Option<&[u8]>,
        quick: impl FnOnce(&[u8]) -> Option<Option<T>>,
    ) -> Option<Option<T>> {
        match raw {
            None => Some(None),
            Some(b"null") => Some(None),
            Some(raw) => quick(raw).or_else(|| serde_json::from_slice::<Option<T>>(raw).ok()),
        }
    }
    let none = |_: &[u8]| None;
    let [id, model, usage, message, response] = members;
    Some(Chunk {
        id: member(id, plain_string)?,
        model: member(model, plain_string)?,
        usage: member(usage, usage_counts)?,
        message: member(message, none)?,
        response: member(response, none)?,
    })
}

/// A JSON string without escapes or control characters, read without serde.
fn plain_string(raw: &[u8]) -> Option<Option<String>> {
    let inner = raw.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if string_stop(inner, 0) != inner.len() {
        return None; // an escape, a quote or a control character: serde's to read
    }
    Some(Some(std::str::from_utf8(inner).ok()?.to_owned()))
}

/// A usage object whose members are counts (`null` or digits) and `*_details` objects of
/// them, read without serde; anything else (a sign, a fraction, a key twice, an escape) is
/// serde's to read or refuse.
fn usage_counts(raw: &[u8]) -> Option<Option<UsageJson>> {
    enum Slot<'u> {
        Count(&'u mut Option<u64>),
        Details(&'u mut Option<CachedJson>),
    }
    let mut u = UsageJson::default();
    // One bit per member read: serde refuses a member twice, so the skim leaves it to serde.
    let mut seen = 0u16;
    let end = object(raw, 0, |key, value| {
        let (bit, slot) = match key {
            b"prompt_tokens" => (1, Slot::Count(&mut u.prompt_tokens)),
            b"completion_tokens" => (2, Slot::Count(&mut u.completion_tokens)),
            b"input_tokens" => (4, Slot::Count(&mut u.input_tokens)),
            b"output_tokens" => (8, Slot::Count(&mut u.output_tokens)),
            b"cache_creation_input_tokens" => (16, Slot::Count(&mut u.cache_creation_input_tokens)),
            b"cache_read_input_tokens" => (32, Slot::Count(&mut u.cache_read_input_tokens)),
            b"prompt_tokens_details" => (64, Slot::Details(&mut u.prompt_tokens_details)),
            b"input_tokens_details" => (128, Slot::Details(&mut u.input_tokens_details)),
            _ => return Some(()),
        };
        if seen & bit != 0 {
            return None;
        }
        seen |= bit;
        match slot {
            Slot::Count(n) => *n = count(value)?,
            Slot::Details(d) => *d = cached_details(value)?,
        }
        Some(())
    })?;
    (end == raw.len()).then_some(Some(u))
}

/// A `*_tokens_details` object (`null`, or an object whose `cached_tokens` is a count).
fn cached_details(raw: &[u8]) -> Option<Option<CachedJson>> {
    if raw == b"null" {
        return Some(None);
    }
    let mut cached = None;
    let mut once = false;
    let end = object(raw, 0, |key, value| {
        if key == b"cached_tokens" {
            if std::mem::replace(&mut once, true) {
                return None;
            }
            cached = count(value)?;
        }
        Some(())
    })?;
    (end == raw.len()).then_some(Some(CachedJson {
        cached_tokens: cached,
    }))
}

/// A token count: `null` or plain digits that fit a `u64`.
fn count(raw: &[u8]) -> Option<Option<u64>> {
    if raw == b"null" {
        return Some(None);
    }
    if raw.is_empty() || raw.len() > 1 && raw[0] == b'0' {
        return None;
    }
    let mut n: u64 = 0;
    for &c in raw {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(Some(n))
}

/// The raw values of the members of a JSON object that [`Chunk`] reads (in its order), stepping over every other member
/// without reading it; `None` where this cannot be sure what serde would make of `b`.
fn skim(b: &[u8]) -> Option<[Option<&[u8]>; 5]> {
    let mut found: [Option<&[u8]>; 5] = [None; 5];
    let end = object(b, ws(b, 0), |key, value| {
        let slot = match key {
            b"id" => 0,
            b"model" => 1,
            b"usage" => 2,
            b"message" => 3,
            b"response" => 4,
            _ => return Some(()),
        };
        if found[slot].is_some() {
            return None; // serde refuses a duplicate field: let it say so
        }
        found[slot] = Some(value);
        Some(())
    })?;
    (ws(b, end) == b.len()).then_some(found)
}

fn sse_line(line: &[u8], usage: &mut Usage) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Some(payload) = line.strip_prefix(b"data:") else {
        return;
    };
    let payload = payload.trim_ascii_start();
    if !payload.starts_with(b"{") {
        return; // `[DONE]`, keep-alives
    }
    // Most chunks carry only content: parse only those that can tell us something.
    let wanted = (usage.response_model.is_none() && crate::holds!(payload, b"\"model\""))
        || (crate::holds!(payload, b"\"usage\"") && !crate::holds!(payload, b"\"usage\":null"));
    if !wanted {
        return;
    }
    // Read as a whole answer is: skimmed, with serde where the skim is unsure.
    if let Some(chunk) = json_chunk(payload) {
        usage.absorb(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue, StatusCode};

    fn sniffer(ct: &str) -> Sniffer {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_str(ct).unwrap());
        Sniffer::for_response(StatusCode::OK, &h).unwrap()
    }

    const OPENAI_STREAM: &str = concat!(
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3,\"total_tokens\":15}}\n\n",
        "data: [DONE]\n\n",
    );

    const ANTHROPIC_STREAM: &str = concat!(
        "event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-3-5-haiku-20241022\",\"content\":[],\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":5,\"output_tokens\":1}}}\r\n\r\n",
        "event: content_block_delta\r\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"usage model\"}}\r\n\r\n",
        "event: message_delta\r\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\r\n\r\n",
        "event: message_stop\r\ndata: {\"type\":\"message_stop\"}\r\n\r\n",
    );

    fn feed_in_pieces(mut s: Sniffer, text: &str, piece: usize) -> Usage {
        for chunk in text.as_bytes().chunks(piece) {
            s.feed(chunk);
        }
        s.finish()
    }

    #[test]
    fn openai_final_usage_chunk() {
        for piece in [1, 7, 64, 4096] {
            let u = feed_in_pieces(sniffer("text/event-stream"), OPENAI_STREAM, piece);
            assert_eq!(u.response_model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
            assert_eq!(u.response_id.as_deref(), Some("chatcmpl-1"));
            assert_eq!(
                (u.input_tokens, u.output_tokens),
                (Some(12), Some(3)),
                "{piece}"
            );
        }
    }

    #[test]
    fn anthropic_message_start_and_delta() {
        for piece in [1, 5, 100, 4096] {
            let u = feed_in_pieces(
                sniffer("text/event-stream; charset=utf-8"),
                ANTHROPIC_STREAM,
                piece,
            );
            assert_eq!(
                u.response_model.as_deref(),
                Some("claude-3-5-haiku-20241022")
            );
            assert_eq!((u.input_tokens, u.output_tokens), (Some(30), Some(15)));
        }
    }

    #[test]
    fn stream_without_usage_has_none() {
        let text = "data: {\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"\\\"usage\\\"\"}}]}\n\ndata: [DONE]\n\n";
        let u = feed_in_pieces(sniffer("text/event-stream"), text, 3);
        assert_eq!(u.response_model.as_deref(), Some("m"));
        assert_eq!((u.input_tokens, u.output_tokens), (None, None));
    }

    #[test]
    fn json_bodies() {
        let openai = r#"{"id":"chatcmpl-9","object":"chat.completion","model":"gpt-4o","choices":[{"message":{"role":"assistant","content":"secret words"}}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}"#;
        let u = feed_in_pieces(sniffer("application/json"), openai, 10);
        assert_eq!(u.response_model.as_deref(), Some("gpt-4o"));
        assert_eq!((u.input_tokens, u.output_tokens), (Some(9), Some(2)));

        let anthropic = r#"{"id":"msg_1","type":"message","model":"claude-x","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":4,"output_tokens":6}}"#;
        let u = feed_in_pieces(sniffer("application/json"), anthropic, 4096);
        assert_eq!(u.response_model.as_deref(), Some("claude-x"));
        assert_eq!((u.input_tokens, u.output_tokens), (Some(4), Some(6)));

        let embeddings = r#"{"object":"list","data":[],"model":"text-embedding-3-small","usage":{"prompt_tokens":5,"total_tokens":5}}"#;
        let u = feed_in_pieces(sniffer("application/json"), embeddings, 4096);
        assert_eq!((u.input_tokens, u.output_tokens), (Some(5), None));
    }

    #[test]
    fn oversized_json_is_given_up() {
        let mut s = sniffer("application/json");
        s.feed(br#"{"model":"m","usage":{"prompt_tokens":1},"pad":""#);
        s.feed(&vec![b'x'; JSON_CAP]);
        s.feed(br#""}"#);
        assert_eq!(s.finish(), Usage::default());
    }

    #[test]
    fn nothing_to_read() {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        assert!(Sniffer::for_response(StatusCode::TOO_MANY_REQUESTS, &h).is_none());
        h.insert("content-encoding", HeaderValue::from_static("gzip"));
        assert!(Sniffer::for_response(StatusCode::OK, &h).is_none());
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("text/html"));
        assert!(Sniffer::for_response(StatusCode::OK, &h).is_none());
    }

    #[test]
    fn media_types_are_told_in_any_case_and_short_ones_are_not_taken() {
        let kind = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert("content-type", HeaderValue::from_str(ct).unwrap());
            match Sniffer::for_response(StatusCode::OK, &h) {
                Some(Sniffer::Sse { .. }) => "sse",
                Some(Sniffer::Json { .. }) => "json",
                None => "none",
            }
        };
        assert_eq!(kind("Application/JSON; charset=utf-8"), "json");
        assert_eq!(kind("  application/json"), "json");
        assert_eq!(kind("TEXT/EVENT-STREAM"), "sse");
        assert_eq!(kind("text/event-stream;charset=utf-8"), "sse");
        // Shorter than either type, or another type.
        assert_eq!(kind("application/js"), "none");
        assert_eq!(kind("text/"), "none");
        assert_eq!(kind(""), "none");
        assert_eq!(kind("text/plain"), "none");
        assert_eq!(kind("application/x-ndjson"), "none");
    }

    #[test]
    fn a_share_is_filled_once_and_read_in_place() {
        let usage = |id: &str| Usage {
            response_id: Some(id.into()),
            input_tokens: Some(3),
            ..Usage::default()
        };
        let share = UsageShare::default();
        assert_eq!(share.get(), None);
        let reader = share.clone();
        let held = share.fill(usage("first")).unwrap();
        assert_eq!(held, &usage("first"));
        // The filler's usage is the one the share holds, not a copy of it.
        assert!(std::ptr::eq(held, reader.get().unwrap()));
        // A second fill changes nothing and hands its usage back.
        assert_eq!(share.fill(usage("second")), Err(usage("second")));
        assert_eq!(reader.get(), Some(&usage("first")));
    }

    const RESPONSES_STREAM: &str = concat!(
        "event: response.created\n",
        "data: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"in_progress\",\"model\":\"gpt-5-2025-08-07\",\"output\":[],\"usage\":null}}\n\n",
        "event: response.output_text.delta\n",
        "data: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hi\"}\n\n",
        "event: response.completed\n",
        "data: {\"type\":\"response.completed\",\"sequence_number\":2,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"completed\",\"model\":\"gpt-5-2025-08-07\",",
        "\"usage\":{\"input_tokens\":40,\"input_tokens_details\":{\"cached_tokens\":32},\"output_tokens\":9,\"output_tokens_details\":{\"reasoning_tokens\":4},\"total_tokens\":49}}}\n\n",
    );

    #[test]
    fn responses_api_usage_comes_from_response_completed() {
        for piece in [1, 9, 4096] {
            let u = feed_in_pieces(sniffer("text/event-stream"), RESPONSES_STREAM, piece);
            assert_eq!(u.response_model.as_deref(), Some("gpt-5-2025-08-07"));
            assert_eq!(u.response_id.as_deref(), Some("resp_1"));
            assert_eq!((u.input_tokens, u.output_tokens), (Some(40), Some(9)));
            assert_eq!(u.cached_input_tokens, Some(32), "{piece}");
        }
        let plain = r#"{"id":"resp_2","object":"response","model":"gpt-5","output":[],
            "usage":{"input_tokens":5,"output_tokens":2,"total_tokens":7}}"#;
        let mut s = sniffer("application/json");
        s.feed(plain.as_bytes());
        let u = s.finish();
        assert_eq!((u.input_tokens, u.output_tokens), (Some(5), Some(2)));
        assert_eq!(u.response_id.as_deref(), Some("resp_2"));
    }

    #[test]
    fn cached_tokens_of_chat_completions_and_anthropic() {
        let chat = r#"{"id":"c","model":"m","usage":{"prompt_tokens":100,"completion_tokens":1,
            "prompt_tokens_details":{"cached_tokens":64}}}"#;
        let mut s = sniffer("application/json");
        s.feed(chat.as_bytes());
        assert_eq!(s.finish().cached_input_tokens, Some(64));
        let anthropic = r#"{"id":"msg","model":"claude","usage":{"input_tokens":10,
            "cache_read_input_tokens":90,"output_tokens":3}}"#;
        let mut s = sniffer("application/json");
        s.feed(anthropic.as_bytes());
        let u = s.finish();
        assert_eq!(
            (u.input_tokens, u.cached_input_tokens),
            (Some(100), Some(90))
        );
    }

    proptest::proptest! {
        /// Stand-in for a fuzz target, run by `cargo test`: whatever bytes an upstream sends,
        /// in whatever pieces, the scanner neither panics nor depends on the cut.
        #[test]
        fn arbitrary_bytes_never_panic_and_cuts_do_not_matter(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048),
            cut in 1usize..64,
        ) {
            for ct in ["text/event-stream", "application/json"] {
                let whole = {
                    let mut s = sniffer(ct);
                    s.feed(&body);
                    s.finish()
                };
                let pieces = {
                    let mut s = sniffer(ct);
                    for c in body.chunks(cut) {
                        s.feed(c);
                    }
                    s.finish()
                };
                proptest::prop_assert_eq!(whole, pieces);
            }
        }

        /// A real stream with noise between its events is read the same in any pieces.
        #[test]
        fn a_stream_reads_the_same_in_any_pieces(cut in 1usize..200) {
            let u = feed_in_pieces(sniffer("text/event-stream"), RESPONSES_STREAM, cut);
            proptest::prop_assert_eq!((u.input_tokens, u.output_tokens), (Some(40), Some(9)));
        }
    }

    /// JSON answers built from the members the usage is read from (of every type,
    /// duplicated, escaped, nested) among others, spaced or not; then possibly cut short or
    /// missing one byte.
    fn answer() -> impl proptest::strategy::Strategy<Value = (Vec<u8>, u8, bool)> {
        use proptest::prelude::*;
        let value = prop::sample::select(vec![
            r#""chatcmpl-1""#,
            r#""gpt-\u0034o""#,
            r#""é🦀 \"quoted\" \\""#,
            "null",
            "7",
            "-1.5e3",
            "true",
            "[]",
            "{}",
            r#"[{"index":0,"message":{"content":"hi \"there\" [{","role":"assistant"}}]"#,
            r#"{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}"#,
            r#"{"input_tokens":10,"output_tokens":2,"cache_read_input_tokens":5,"cache_creation_input_tokens":1}"#,
            r#"{"prompt_tokens":3,"prompt_tokens_details":{"cached_tokens":2}}"#,
            r#"{"prompt_tokens":"3"}"#,
            r#"{"prompt_tokens":1,"prompt_tokens":2}"#,
            r#"{"prompt_tokens":-1}"#,
            r#"{"id":"msg_1","model":"claude","usage":{"input_tokens":8,"output_tokens":1}}"#,
            r#"{"id":7}"#,
            r#"{"a":{"b":[1,{"c":null}]},"d":[[[]],{}]}"#,
            r#"{"\u0069d":"x"}"#,
            r#"{"prompt_tokens":1.0,"completion_tokens":2}"#,
            r#"{"prompt_tokens":01}"#,
            r#"{"prompt_tokens":18446744073709551615,"completion_tokens":18446744073709551616}"#,
            r#"{"prompt_tokens":null,"prompt_tokens_details":null,"completion_tokens":0}"#,
            r#"{"prompt_tokens_details":{"cached_tokens":1,"cached_tokens":2}}"#,
            r#"{"input_tokens":9,"input_tokens_details":{"x":[1,{"y":"}"}],"cached_tokens":4}}"#,
            r#"{"input_tokens":9,"input_tokens_details":{"cached_tokens":-4}}"#,
            r#"{"input_tokens":9,"input_tokens_details":[4]}"#,
            r#"{"output_tokens":2,"output_tokens":2}"#,
            "\"tab\there\"",
            r#""a/b""#,
        ]);
        let key = prop::sample::select(vec![
            "id",
            "model",
            "usage",
            "message",
            "response",
            "choices",
            "object",
            "created",
            "\\u0075sage",
            "us\\\"age",
        ]);
        (
            prop::collection::vec((key, value), 0..7),
            any::<bool>(),
            0..3u8,
            any::<prop::sample::Index>(),
        )
            .prop_map(|(members, spaced, mutate, at)| {
                let (sep, colon) = if spaced { (" ,\n ", " : ") } else { (",", ":") };
                let body = members
                    .iter()
                    .map(|(k, v)| format!("\"{k}\"{colon}{v}"))
                    .collect::<Vec<_>>()
                    .join(sep);
                let mut b = format!("{{{body}}}").into_bytes();
                if spaced {
                    b.insert(0, b' ');
                    b.push(b'\n');
                }
                match mutate {
                    1 => b.truncate(at.index(b.len())),
                    2 => {
                        b.remove(at.index(b.len()));
                    }
                    _ => {}
                }
                // Plain: each key once, none escaped (what the skim must be sure of).
                let mut keys: Vec<&str> = members.iter().map(|(k, _)| *k).collect();
                let escaped = keys.iter().any(|k| k.contains('\\'));
                keys.sort_unstable();
                keys.dedup();
                let plain = mutate == 0 && !escaped && keys.len() == members.len();
                (b, mutate, plain)
            })
    }

    fn absorbed(chunk: Option<Chunk>) -> Usage {
        let mut u = Usage::default();
        if let Some(c) = chunk {
            u.absorb(c);
        }
        u
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]

        /// What serde reads from (or refuses in) a valid or a cut answer, the skim reads (or
        /// refuses) too. (Invalid JSON inside a member the skim steps over is the one case
        /// where they may differ: serde refuses the answer, the skim reads the rest.)
        /// An answer serde reads, whose keys are plain and unique, is the skim's, not left
        /// to serde.
        #[test]
        fn a_skimmed_answer_reads_as_serde_reads_it((body, mutate, plain) in answer()) {
            let serde = serde_json::from_slice::<Chunk>(&body).ok();
            let skimmed = skim(&body);
            if plain && serde.is_some() {
                proptest::prop_assert!(skimmed.is_some());
            }
            // Valid JSON and cut answers read alike whatever serde makes of them (a member
            // of the wrong type refuses both); others where serde reads them.
            let valid = serde_json::from_slice::<serde_json::Value>(&body).is_ok();
            // Cut before its closing brace (a cut of trailing whitespace leaves it whole).
            let cut = mutate == 1 && !body.trim_ascii_end().ends_with(b"}");
            if valid || cut || serde.is_some() {
                let ours = json_chunk(&body);
                proptest::prop_assert_eq!(ours.is_some(), serde.is_some());
                proptest::prop_assert_eq!(absorbed(ours), absorbed(serde));
            }
        }
    }

    #[test]
    fn a_plain_answer_is_skimmed() {
        let body = br#"{"choices":[{"index":0,"logprobs":null,"message":{"content":"Hello \"x\" }]","role":"assistant"}}],"created":1,"id":"chatcmpl-1","model":"gpt-4o-mini","object":"chat.completion","usage":{"completion_tokens":3,"prompt_tokens":20,"total_tokens":23}}"#;
        let members = skim(body).expect("a plain answer is skimmed, not left to serde");
        assert_eq!(members[0], Some(&br#""chatcmpl-1""#[..]));
        let u = absorbed(json_chunk(body));
        assert_eq!(u.input_tokens, Some(20));
        assert_eq!(u.output_tokens, Some(3));
        assert_eq!(u.response_model.as_deref(), Some("gpt-4o-mini"));
        assert_eq!(u.response_id.as_deref(), Some("chatcmpl-1"));
        // Left to serde: a member twice, an escaped key, an array, a mismatched bracket,
        // something after the object; and serde refuses each of these.
        for unsure in [
            &br#"{"id":"a","id":"b"}"#[..],
            br#"{"\u0069d":"a"}"#,
            br#"[1]"#,
            br#"{"choices":[}],"id":"a"}"#,
            br#"{"id":"a"} x"#,
        ] {
            assert!(
                skim(unsure).is_none(),
                "{}",
                String::from_utf8_lossy(unsure)
            );
        }
        // A member of the wrong type refuses the whole answer, as serde does.
        assert!(json_chunk(br#"{"id":7,"usage":{"prompt_tokens":1}}"#).is_none());
        // Nesting deeper than the skim follows is serde's.
        let deep = format!(r#"{{"a":{}{}}}"#, "[".repeat(70), "]".repeat(70));
        assert!(skim(deep.as_bytes()).is_none());
        assert!(json_chunk(deep.as_bytes()).is_some());
    }
}
