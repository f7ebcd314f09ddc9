//! [`MockResponse`]: one scripted answer of the mock upstream.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, RETRY_AFTER, SERVER, SET_COOKIE};
use http::StatusCode;

/// What the server does with the request once any [`MockResponse::delay`] has passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Respond,
    Reset,
    Hang,
}

/// The body a scripted response carries.
#[derive(Clone, Debug)]
pub(crate) enum BodyKind {
    /// The route's built-in success (chat completion, message, ...), streaming if the request asks.
    RouteDefault,
    /// `{"error":{"message":"mock error","type":"server_error","code":null}}`.
    MockError,
    /// No body at all (1xx, 204, 304).
    Empty,
    /// A fixed body sent in one piece.
    Full {
        content_type: HeaderValue,
        body: Bytes,
    },
    /// Server-sent events, each item written as given, [`MockResponse::chunk_delay`] apart.
    Events(Arc<[Bytes]>),
}

/// One scripted answer of [`MockUpstream`](super::MockUpstream): a builder.
///
/// Queue it with [`MockUpstream::push`](super::MockUpstream::push) (the next request gets it)
/// or make it the default with [`MockUpstream::set_default`](super::MockUpstream::set_default).
/// A response applies to whatever route the request hits.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// use std::time::Duration;
/// use portcullis_mock::{MockResponse, MockUpstream};
///
/// let mock = MockUpstream::start().await?;
/// mock.push(MockResponse::status(429).retry_after("1"));
/// mock.push(MockResponse::cloudflare(503, 1200).set_cookie("__cf_bm=x; Path=/"));
/// mock.push(MockResponse::ok().delay(Duration::from_millis(50)));
/// mock.push(MockResponse::ok().reset());
/// # Ok(()) }
/// ```
///
/// # Panics
///
/// The constructors panic on a status code outside `100..=999`, and [`header`](Self::header)
/// (and the helpers built on it) on an invalid header name or value: these are test scripts,
/// so a typo should fail loudly where it is written.
#[derive(Clone, Debug)]
pub struct MockResponse {
    /// `None`: the route's own status (200, or 404 for an unknown path).
    pub(crate) status: Option<StatusCode>,
    pub(crate) body: BodyKind,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) delay: Duration,
    pub(crate) action: Action,
    pub(crate) chunk_delay: Option<Duration>,
    pub(crate) abort_after: Option<usize>,
    pub(crate) content: Option<Arc<str>>,
    /// Tool calls the route's default success makes instead of answering text.
    pub(crate) tool_calls: Vec<ToolCallSpec>,
}

/// One tool call of a scripted answer: a name and its arguments (a JSON object, kept as the
/// text the upstream sends).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ToolCallSpec {
    pub(crate) name: String,
    pub(crate) arguments: String,
}

/// The request header that scripts tool calls from the request itself: each value is
/// `NAME` or `NAME {JSON object of arguments}`; several values (or several headers) are
/// parallel calls, in order.
pub const TOOL_CALL_HEADER: &str = "x-mock-tool-call";

impl ToolCallSpec {
    /// `NAME` or `NAME {"json":"object"}` (a [`TOOL_CALL_HEADER`] value).
    pub(crate) fn parse(v: &str) -> Result<ToolCallSpec, String> {
        let v = v.trim();
        let (name, args) = match v.split_once(char::is_whitespace) {
            Some((name, args)) => (name, args.trim()),
            None => (v, "{}"),
        };
        if name.is_empty() {
            return Err(format!("{TOOL_CALL_HEADER}: no tool name in {v:?}"));
        }
        match serde_json::from_str::<serde_json::Value>(args) {
            Ok(serde_json::Value::Object(_)) => Ok(ToolCallSpec {
                name: name.to_owned(),
                arguments: args.to_owned(),
            }),
            _ => Err(format!(
                "{TOOL_CALL_HEADER}: the arguments of {name} are not a JSON object: {args:?}"
            )),
        }
    }
}

impl MockResponse {
    fn with_body(status: Option<StatusCode>, body: BodyKind) -> Self {
        MockResponse {
            status,
            body,
            headers: Vec::new(),
            delay: Duration::ZERO,
            action: Action::Respond,
            chunk_delay: None,
            abort_after: None,
            content: None,
            tool_calls: Vec::new(),
        }
    }

    /// A response with status `code`.
    ///
    /// For `code >= 400` the body is `{"error":{"message":"mock error","type":"server_error","code":null}}`
    /// (on every route, `/v1/messages` included); for 1xx, 204 and 304 there is no body;
    /// otherwise the body is the route's default success (as [`ok`](Self::ok)) with this status.
    pub fn status(code: u16) -> Self {
        let status = status_code(code);
        let body = if code >= 400 {
            BodyKind::MockError
        } else if status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            BodyKind::Empty
        } else {
            BodyKind::RouteDefault
        };
        Self::with_body(Some(status), body)
    }

    /// The route's default success: exactly what the request would get with nothing queued
    /// (a chat completion, an Anthropic message, a stream if the request asks for one, ...).
    /// Useful with [`delay`](Self::delay), [`header`](Self::header), [`content`](Self::content).
    pub fn ok() -> Self {
        Self::with_body(None, BodyKind::RouteDefault)
    }

    /// A JSON body (`application/json`) with status `code`.
    pub fn json(code: u16, v: serde_json::Value) -> Self {
        Self::with_body(
            Some(status_code(code)),
            BodyKind::Full {
                content_type: HeaderValue::from_static("application/json"),
                body: Bytes::from(v.to_string()),
            },
        )
    }

    /// An HTML page (`text/html; charset=utf-8`) with status `code`, e.g. a proxy's error page.
    pub fn html(code: u16, body: &str) -> Self {
        Self::with_body(
            Some(status_code(code)),
            BodyKind::Full {
                content_type: HeaderValue::from_static("text/html; charset=utf-8"),
                body: Bytes::copy_from_slice(body.as_bytes()),
            },
        )
    }

    /// Any body with the given `content_type` and status `code`.
    pub fn body(code: u16, content_type: &str, body: impl Into<Bytes>) -> Self {
        Self::with_body(
            Some(status_code(code)),
            BodyKind::Full {
                content_type: header_value(content_type),
                body: body.into(),
            },
        )
    }

    /// A `text/event-stream` body made of `events`, each written exactly as given (include the
    /// framing, e.g. `"data: {}\n\n"`), [`chunk_delay`](Self::chunk_delay) apart.
    pub fn sse<I, E>(code: u16, events: I) -> Self
    where
        I: IntoIterator<Item = E>,
        E: Into<Bytes>,
    {
        let events: Arc<[Bytes]> = events.into_iter().map(Into::into).collect();
        Self::with_body(Some(status_code(code)), BodyKind::Events(events))
    }

    /// A Cloudflare error page as Cloudflare serves it in front of an API: status `code`,
    /// `text/html` naming `Error <cf_error>` and `error code: <cf_error>` and the Ray ID,
    /// plus `server: cloudflare` and a `cf-ray` header (e.g. `cloudflare(503, 1200)`).
    pub fn cloudflare(code: u16, cf_error: u32) -> Self {
        let ray = cf_ray();
        let page = cloudflare_page(cf_error, &ray);
        Self::with_body(
            Some(status_code(code)),
            BodyKind::Full {
                content_type: HeaderValue::from_static("text/html; charset=UTF-8"),
                body: Bytes::from(page),
            },
        )
        .header("server", "cloudflare")
        .header("cf-ray", &ray)
    }

    /// Adds a response header. Several calls with one name send every value; a name also set by
    /// the mock itself (e.g. `content-type`) replaces the mock's value.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let name = HeaderName::from_bytes(name.as_bytes())
            .unwrap_or_else(|e| panic!("MockResponse::header: invalid name {name:?}: {e}"));
        self.headers.push((name, header_value(value)));
        self
    }

    /// Adds `Retry-After: v` (seconds, e.g. `"2"`, or an HTTP date).
    pub fn retry_after(mut self, v: &str) -> Self {
        self.headers.push((RETRY_AFTER, header_value(v)));
        self
    }

    /// Adds a `Set-Cookie: v` header; call it several times to set several cookies.
    pub fn set_cookie(mut self, v: &str) -> Self {
        self.headers.push((SET_COOKIE, header_value(v)));
        self
    }

    /// Waits `d` before answering (before the status line and headers). Also delays
    /// [`reset`](Self::reset).
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }

    /// Closes the connection without answering: the socket is closed with a TCP RST, so the
    /// client sees "connection reset". Over HTTP/2 this kills the whole connection.
    pub fn reset(mut self) -> Self {
        self.action = Action::Reset;
        self
    }

    /// Never answers; the request stays open until the client gives up (or the mock is dropped).
    pub fn hang(mut self) -> Self {
        self.action = Action::Hang;
        self
    }

    /// For streaming bodies: the gap between two SSE events (overrides
    /// [`MockUpstream::set_chunk_delay`](super::MockUpstream::set_chunk_delay)).
    pub fn chunk_delay(mut self, d: Duration) -> Self {
        self.chunk_delay = Some(d);
        self
    }

    /// Cuts the connection in the middle of the body, after `events` pieces were sent: for a
    /// stream the pieces are SSE events, for any other body the whole body is one piece (so
    /// `abort_after(0)` sends the headers, then nothing). The body is sent chunked, so the
    /// client sees an incomplete message, the way a dropped upstream looks mid-stream.
    pub fn abort_after(mut self, events: usize) -> Self {
        self.abort_after = Some(events);
        self
    }

    /// The assistant text of the route's default success (default `"Hello from mock"`); streams
    /// send it split after each space, one event per word.
    pub fn content(mut self, text: &str) -> Self {
        self.content = Some(Arc::from(text));
        self
    }

    /// The route's default success becomes a tool call of `name` with `arguments` (a JSON
    /// object); call it again for parallel calls. The answer is in the request's API shape,
    /// streamed if the request asks, as the real APIs send tool calls:
    ///
    /// - `/v1/chat/completions`: `message.tool_calls` (`finish_reason: "tool_calls"`); streamed,
    ///   one chunk opening each call (`id`, `name`, empty `arguments`) then `arguments` deltas;
    /// - `/v1/messages`: `tool_use` blocks (`stop_reason: "tool_use"`); streamed,
    ///   `content_block_start` then `input_json_delta` deltas (`partial_json`, the first empty);
    /// - `/v1/responses`: `function_call` output items; streamed, `response.output_item.added`,
    ///   `response.function_call_arguments.delta` deltas, `.done`, `response.output_item.done`.
    ///
    /// Streamed arguments arrive in pieces of [`TOOL_ARGUMENT_PIECE`] characters. Ids are
    /// `call_mock_N_I` (`toolu_mock_N_I`, `fc_mock_N_I`) for request `N` and call `I`; output
    /// tokens count one per started 4 bytes of arguments. A request can script the same with the
    /// [`TOOL_CALL_HEADER`] header; a response's own calls win over the header's.
    ///
    /// # Panics
    ///
    /// If `arguments` is not a JSON object.
    pub fn tool_call(mut self, name: &str, arguments: serde_json::Value) -> Self {
        assert!(
            arguments.is_object(),
            "MockResponse::tool_call: arguments must be a JSON object, got {arguments}"
        );
        self.tool_calls.push(ToolCallSpec {
            name: name.to_owned(),
            arguments: arguments.to_string(),
        });
        self
    }
}

/// Streamed tool-call arguments arrive in pieces of this many characters.
pub const TOOL_ARGUMENT_PIECE: usize = 8;

fn status_code(code: u16) -> StatusCode {
    StatusCode::from_u16(code)
        .unwrap_or_else(|_| panic!("MockResponse: status code {code} is not in 100..=999"))
}

fn header_value(v: &str) -> HeaderValue {
    HeaderValue::from_str(v)
        .unwrap_or_else(|e| panic!("MockResponse: invalid header value {v:?}: {e}"))
}

/// The built-in mock error body for statuses >= 400.
pub(crate) const MOCK_ERROR_BODY: &str =
    r#"{"error":{"message":"mock error","type":"server_error","code":null}}"#;

/// A Ray ID in Cloudflare's shape (16 hex digits, then a data centre), unique per call.
pub(crate) fn cf_ray() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0x8f3a_52c1_0d9e_7b00);
    // splitmix64 finaliser: consecutive ids look unrelated, as real ones do.
    let mut z = SEQ
        .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    format!("{z:016x}-AMS")
}

/// A page shaped like Cloudflare's own error pages (title, `Error N` heading, Ray ID footer),
/// plus the one-line `error code: N` form Cloudflare serves to API clients.
pub(crate) fn cloudflare_page(cf_error: u32, ray: &str) -> String {
    let what = match cf_error {
        1015 => "You are being rate limited",
        1020 => "Access denied",
        1200 => "This website has been temporarily rate limited",
        520..=527 => "Web server is returning an unknown error",
        _ => "Something went wrong",
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"en-US\">\n<head>\n<title>{what} | Cloudflare</title>\n\
         <meta charset=\"UTF-8\" />\n</head>\n<body>\n<div id=\"cf-wrapper\">\n\
         <div id=\"cf-error-details\" class=\"cf-error-details-wrapper\">\n\
         <h1 data-translate=\"error\">Error {cf_error}</h1>\n\
         <h2 class=\"cf-subheadline\">{what}</h2>\n\
         <p>error code: {cf_error}</p>\n\
         <p>Cloudflare could not serve this request; too many requests may have been made.</p>\n\
         </div>\n<div class=\"cf-error-footer\">\n\
         <span class=\"cf-footer-item\">Cloudflare Ray ID: <strong class=\"font-semibold\">{ray}</strong></span>\n\
         <span class=\"cf-footer-item\">Performance &amp; security by Cloudflare</span>\n\
         </div>\n</div>\n</body>\n</html>\n"
    )
}

/// The challenge answer of cookie mode ([`MockUpstream::require_cookie`](super::MockUpstream::require_cookie)).
pub(crate) fn cookie_challenge(name: &str, value: &str) -> MockResponse {
    let ray = cf_ray();
    let mut r = MockResponse::with_body(
        Some(StatusCode::SERVICE_UNAVAILABLE),
        BodyKind::Full {
            content_type: HeaderValue::from_static("text/html; charset=UTF-8"),
            body: Bytes::from(cloudflare_page(1200, &ray)),
        },
    );
    r.headers
        .push((SERVER, HeaderValue::from_static("cloudflare")));
    if let Ok(v) = HeaderValue::from_str(&ray) {
        r.headers.push((HeaderName::from_static("cf-ray"), v));
    }
    // The cookie name and value were validated when cookie mode was switched on.
    if let Ok(v) = HeaderValue::from_str(&format!("{name}={value}; Path=/; HttpOnly")) {
        r.headers.push((SET_COOKIE, v));
    }
    r
}
