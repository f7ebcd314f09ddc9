//! Test fixtures for portcullis: a scriptable in-process mock of the OpenAI and Anthropic APIs.
//!
//! A dev-only crate (`publish = false`) for tests, examples and benches; no library depends on
//! it. Besides the mock upstream it holds [`RedisServer`], a `redis-server` owned by one test.
//!
//! [`MockUpstream`] is a real HTTP server on a local port (plain HTTP, or HTTPS with ALPN `h2`
//! and `http/1.1`). With nothing scripted it answers like the real APIs:
//!
//! | route (matched on the path's suffix)      | answer                                            |
//! | ----------------------------------------- | ------------------------------------------------- |
//! | `POST .../v1/chat/completions`            | `chat.completion` (SSE `chat.completion.chunk`s with `"stream": true`) |
//! | `GET .../v1/chat/completions`             | the stored chat completions: a `list` of one `chat.completion`, its `model` the `model` query parameter's (else `gpt-mock`) |
//! | `GET`, `POST`, `DELETE .../v1/chat/completions/{id}` | that stored `chat.completion` (`POST`: with the body's `metadata`); deleted: `{"id", "object": "chat.completion.deleted", "deleted": true}` |
//! | `GET .../v1/chat/completions/{id}/messages` | a `list` with its one user message              |
//! | `POST .../v1/completions`                 | `text_completion` (streams too)                   |
//! | `POST .../v1/embeddings`                  | one 8-float vector per input (`dimensions`, `encoding_format: "base64"` honoured) |
//! | `POST .../v1/messages`                    | Anthropic `message` (Anthropic SSE events with `"stream": true`) |
//! | `POST .../v1/messages/count_tokens`       | `{"input_tokens": N}`, N by the same rule as `/v1/messages`; `max_tokens`, `stream` and sampling fields refused (400), as Anthropic does |
//! | `POST .../v1/responses`                   | OpenAI Responses API `response` (with `"stream": true` the real event sequence: `response.created`, `response.in_progress`, `response.output_item.added`, `response.content_part.added`, one `response.output_text.delta` per word, `response.output_text.done`, `response.content_part.done`, `response.output_item.done`, `response.completed`; each `event: TYPE` + `data:` carrying `type` and `sequence_number` from 0) |
//! | `GET .../v1/responses/{id}`               | a completed `response` with that id               |
//! | `DELETE .../v1/responses/{id}`            | `{"id", "object": "response.deleted", "deleted": true}` |
//! | `GET .../v1/responses/{id}/input_items`   | a `list` with one user `message` item             |
//! | `POST .../v1/responses/{id}/cancel`       | the `response` with `status: "cancelled"`         |
//! | `POST .../v1/responses/input_tokens`      | `{"object": "response.input_tokens", "input_tokens": N}` |
//! | `GET .../v1/responses`, `GET .../v1/realtime` with `Connection: upgrade`, `Upgrade: websocket` | a WebSocket echo: text and binary messages come back unchanged, a close is answered with a close; the first offered subprotocol is accepted |
//! | `POST .../v1/files`, `.../v1/audio/transcriptions`, `.../v1/audio/translations`, `.../v1/uploads[/...]`, and any other `POST` with a `multipart/*` or `application/octet-stream` body | the streaming sink: the body is read frame by frame and counted, never held whole; answers `{"id": "file-mock-N", "object": "file" (or `upload.part`, `audio.transcription` + `text`, `upload`), "bytes": N, "content_type": the request's}` |
//! | `GET  .../v1/models`                      | an OpenAI model list                              |
//! | `GET  .../v1/models/{id}`                 | that model, with OpenAI's and Anthropic's fields  |
//! | anything else                             | 404 JSON (405 for a known path with the wrong method) |
//!
//! The `model` of the request is echoed; the assistant says `"Hello from mock"`; usage is
//! deterministic: prompt/input tokens are `max(1, request body bytes / 4)`, completion/output
//! tokens the number of words. Ids count requests: `chatcmpl-mock-N`, `cmpl-mock-N`, `msg_mock_N`,
//! `resp_mock_N`, `file-mock-N`.
//!
//! Every request is recorded ([`MockUpstream::requests`]), WebSocket handshakes included (headers
//! and query, empty body); of an upload only the first [`UPLOAD_RECORD_PREFIX`] bytes are kept,
//! with the full size in [`RecordedRequest::body_len`]. Scripted responses apply to WebSocket
//! handshakes too: a queued [`MockResponse::status(401)`](MockResponse::status) refuses the upgrade.
//! Because routes match on the suffix, prefixed paths such as
//! `/v3/https://api.anthropic.com/v1/messages` (Supermemory's router) work too.
//!
//! Failures are scripted with [`MockResponse`]s: queue them with [`MockUpstream::push`] (first
//! in, first out, whatever the route) or replace the default with [`MockUpstream::set_default`].
//! [`MockUpstream::require_cookie`] plays Cloudflare's cookie challenge.
//!
//! Tool calls: [`MockResponse::tool_call`] makes the route's answer a tool call (parallel calls
//! with several), in the request's API shape and streamed when the request asks, arguments in
//! deltas as the real APIs stream them (chat `tool_calls`, Anthropic `tool_use` with
//! `input_json_delta`, Responses `function_call` items with
//! `response.function_call_arguments.delta`). A request scripts the same by itself with the
//! header [`TOOL_CALL_HEADER`] (`x-mock-tool-call: read_file {"path": "a.txt"}`), which goes
//! through a gateway untouched: an agent's loop is a client repeating that request. A
//! request answering a call (its last turn a tool's result) is answered with text instead,
//! so an agent that sends the header on every request makes one call and then finishes.
//!
//! Structured outputs: a request asking for JSON of a schema (chat `response_format`,
//! Responses `text.format`, Anthropic `output_config.format` or `output_format`: type
//! `json_schema`) is answered with the smallest JSON value the schema accepts (required
//! properties, `"mock"` strings, first enum values), as text; a request forcing a tool (by
//! name, or `any`/`required` with one tool offered) gets that tool's call with such an input.
//!
//! Web search: a `/v1/messages` request offering Anthropic's server tool (`tools` with a
//! `web_search_*` type) is answered as Anthropic answers one: a `server_tool_use` block, its
//! `web_search_tool_result` (one page, `https://example.com/mock-search`), then text whose
//! last block cites that page (`citations`; streamed as a `citations_delta`).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use portcullis_mock::{MockResponse, MockUpstream};
//!
//! let mock = MockUpstream::start().await?;
//! mock.push(MockResponse::status(503).retry_after("1"));
//! // The first request to `mock.url()` gets the 503, the next one a normal chat completion.
//! // ... run the code under test against mock.url() ...
//! assert_eq!(mock.request_count(), 2);
//! let first = &mock.requests()[0];
//! assert_eq!(first.json().unwrap()["model"], "gpt-4o-mini");
//! # Ok(()) }
//! ```
//!
//! # Why a hand-rolled accept loop and not `axum::serve`
//!
//! [`MockResponse::reset`] must kill the very connection a request came in on, with a TCP RST,
//! which `axum::serve` cannot express; the loop here gives each connection a handle the request
//! handler can use. The routing itself is an axum handler.

mod redis;
mod response;
mod routes;
mod schema;
mod server;
mod ws;

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

pub use redis::RedisServer;
pub use response::{MockResponse, TOOL_ARGUMENT_PIECE, TOOL_CALL_HEADER};

/// One API a mock may be limited to with [`MockUpstream::speak_only`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MockApi {
    /// OpenAI: chat completions, completions, embeddings, responses (not `/v1/messages`).
    OpenAi = 1,
    /// Anthropic: `/v1/messages` and count_tokens only.
    Anthropic = 2,
}

/// A mock OpenAI/Anthropic upstream listening on a local port.
///
/// All methods take `&self`; share it across tasks with an `Arc`. Dropping it shuts the
/// server down: the listener closes and open connections (hanging requests included) are cut.
/// The server's tasks run on the Tokio runtime that `start*` was called from, so that runtime
/// must keep running while the mock is in use (mind this in benches with several runtimes).
/// See the [crate docs](crate) for the default behaviour.
pub struct MockUpstream {
    addr: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for MockUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockUpstream")
            .field("url", &self.url())
            .field("request_count", &self.request_count())
            .finish_non_exhaustive()
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl MockUpstream {
    /// Starts a plain HTTP mock on `127.0.0.1` and a free port.
    pub async fn start() -> io::Result<MockUpstream> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    /// Starts a plain HTTP mock on `addr` (e.g. a fixed port for a load benchmark).
    pub async fn start_on(addr: SocketAddr) -> io::Result<MockUpstream> {
        Self::spawn(addr, None).await
    }

    /// Starts an HTTPS mock on `127.0.0.1` and a free port, serving the PEM certificate chain
    /// `cert_pem` with the PEM private key `key_pem` (PKCS#8, PKCS#1 or SEC1), offering ALPN
    /// `h2` and `http/1.1`. [`url`](Self::url) is `https://localhost:PORT`, so the certificate
    /// should name `localhost`.
    ///
    /// Installs rustls' aws-lc-rs crypto provider as the process default if none is installed.
    pub async fn start_tls(cert_pem: &str, key_pem: &str) -> io::Result<MockUpstream> {
        Self::start_tls_on(
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            cert_pem,
            key_pem,
        )
        .await
    }

    /// As [`start_tls`](Self::start_tls), on `addr`.
    pub async fn start_tls_on(
        addr: SocketAddr,
        cert_pem: &str,
        key_pem: &str,
    ) -> io::Result<MockUpstream> {
        let invalid = |what: &str, e: &dyn std::fmt::Display| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("mock upstream TLS {what}: {e}"),
            )
        };
        let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid("certificate", &e))?;
        if certs.is_empty() {
            return Err(invalid("certificate", &"no CERTIFICATE block in the PEM"));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| invalid("private key", &e))?;
        // Err means a provider is already installed, which is just as good.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| invalid("configuration", &e))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self::spawn(addr, Some(TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn spawn(addr: SocketAddr, tls: Option<TlsAcceptor>) -> io::Result<MockUpstream> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let shutdown = CancellationToken::new();
        let is_tls = tls.is_some();
        tokio::spawn(server::accept_loop(
            listener,
            shared.clone(),
            tls,
            shutdown.clone(),
        ));
        tracing::debug!(%addr, tls = is_tls, "mock upstream listening");
        Ok(MockUpstream {
            addr,
            tls: is_tls,
            shared,
            shutdown,
        })
    }

    /// The address the mock listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL: `http://127.0.0.1:PORT`, or `https://localhost:PORT` for
    /// [`start_tls`](Self::start_tls). An unspecified listen address (`0.0.0.0`) is given as
    /// `127.0.0.1`.
    pub fn url(&self) -> String {
        if self.tls {
            return format!("https://localhost:{}", self.addr.port());
        }
        let ip = if self.addr.ip().is_unspecified() {
            Ipv4Addr::LOCALHOST.into()
        } else {
            self.addr.ip()
        };
        format!("http://{}", SocketAddr::new(ip, self.addr.port()))
    }

    /// Queues `r`: the next request (on any route) gets it. Queued responses are served first
    /// in, first out; once the queue is empty the default behaviour applies again.
    pub fn push(&self, r: MockResponse) {
        self.shared.lock_script().queue.push_back(r);
    }

    /// Queues `r` `n` times.
    pub fn push_n(&self, n: usize, r: MockResponse) {
        let mut script = self.shared.lock_script();
        script.queue.extend(std::iter::repeat_n(r, n));
    }

    /// Replaces the default behaviour (what requests get when the queue is empty) with `r`;
    /// `None` restores the built-in OpenAI/Anthropic answers.
    pub fn set_default(&self, r: Option<MockResponse>) {
        self.shared.lock_script().default = r;
    }

    /// Cloudflare mode: a request without the cookie `name=value` gets a 503 Cloudflare
    /// `error code: 1200` page with a `cf-ray` header and `Set-Cookie: name=value; Path=/; HttpOnly`;
    /// a request carrying the cookie gets the normal behaviour (queue, then default). The
    /// challenge does not consume queued responses. [`clear`](Self::clear) ends the mode.
    ///
    /// # Panics
    ///
    /// If `name=value; Path=/; HttpOnly` is not a valid header value.
    pub fn require_cookie(&self, name: &str, value: &str) {
        assert!(
            http::HeaderValue::from_str(&format!("{name}={value}; Path=/; HttpOnly")).is_ok(),
            "require_cookie: invalid cookie {name:?}={value:?}"
        );
        self.shared.lock_script().cookie = Some((name.to_owned(), value.to_owned()));
    }

    /// The gap between the SSE events of default (and [`MockResponse::ok`]) streams; default 0.
    /// A response's own [`MockResponse::chunk_delay`] wins.
    pub fn set_chunk_delay(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.shared
            .chunk_delay_nanos
            .store(nanos, Ordering::Relaxed);
    }

    /// Answer like an upstream that speaks one API only: the other API's routes answer 404
    /// (a local chat-completions server has no `/v1/messages`; Anthropic has no
    /// `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings` or `/v1/responses`).
    /// Translation tests point the gateway at such a mock.
    pub fn speak_only(&self, api: MockApi) {
        self.shared.only.store(api as u8, Ordering::Relaxed);
    }

    /// Switch recording of requests on or off (on by default).
    pub fn set_recording(&self, on: bool) {
        self.shared.recording.store(on, Ordering::Relaxed);
    }

    /// Every request received (and recorded) since the start or the last [`clear`](Self::clear),
    /// in arrival order. Requests are recorded when their body has arrived, before any delay.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock_recorded().clone()
    }

    /// The last request received (and recorded), if any.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.shared.lock_recorded().last().cloned()
    }

    /// How many requests arrived since the start or the last [`clear`](Self::clear), recorded or not.
    pub fn request_count(&self) -> usize {
        self.shared.count.load(Ordering::Relaxed)
    }

    /// How many streamed bodies (SSE streams, and bodies cut by [`MockResponse::abort_after`])
    /// were dropped before their end since the start or the last [`clear`](Self::clear): the
    /// client (e.g. a proxy whose own client left) stopped reading and closed the stream.
    /// Counted when the server notices, i.e. at the next event it tries to send.
    pub fn streams_cancelled(&self) -> usize {
        self.shared.streams_cancelled.load(Ordering::Relaxed)
    }

    /// Forgets queued responses, recorded requests (and both counts) and leaves cookie mode.
    /// The default response, chunk delay and recording switch are kept.
    pub fn clear(&self) {
        {
            let mut script = self.shared.lock_script();
            script.queue.clear();
            script.cookie = None;
        }
        self.shared.lock_recorded().clear();
        self.shared.count.store(0, Ordering::Relaxed);
        self.shared.streams_cancelled.store(0, Ordering::Relaxed);
    }
}

/// One request as the mock received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// The request method.
    pub method: Method,
    /// The path, with the query string if there was one (`/v1/models?limit=1`).
    pub path: String,
    /// The request headers, exactly as received (secrets included: this is a test tool).
    pub headers: HeaderMap,
    /// The request body: whole, except for uploads (multipart and binary bodies, which the
    /// mock streams into a byte counter) where it is the first [`UPLOAD_RECORD_PREFIX`] bytes.
    /// Empty for a WebSocket handshake.
    pub body: Bytes,
    /// The size of the whole body in bytes, however much of it `body` holds.
    pub body_len: u64,
}

/// How much of an upload's body [`RecordedRequest::body`] keeps (64 KiB): enough to assert on
/// a multipart form's first part without holding a large upload in memory.
pub const UPLOAD_RECORD_PREFIX: usize = 64 * 1024;

impl RecordedRequest {
    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// Whether this was a WebSocket handshake (`Upgrade: websocket`).
    pub fn is_websocket(&self) -> bool {
        self.header("upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
    }

    /// The first value of header `name`, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }
}

// === Shared state ===

#[derive(Debug, Default)]
struct Script {
    queue: VecDeque<MockResponse>,
    default: Option<MockResponse>,
    cookie: Option<(String, String)>,
}

/// State shared by the handle and the server tasks. Locks are held only for the few
/// instructions that touch the data, never across an await.
#[derive(Debug)]
struct Shared {
    script: Mutex<Script>,
    recorded: Mutex<Vec<RecordedRequest>>,
    recording: AtomicBool,
    /// 0: every API; 1: OpenAI only; 2: Anthropic only (see [`MockUpstream::speak_only`]).
    pub(crate) only: std::sync::atomic::AtomicU8,
    /// Requests since start or clear.
    count: AtomicUsize,
    /// Request sequence for ids; never reset, so ids stay unique.
    seq: AtomicU64,
    chunk_delay_nanos: AtomicU64,
    /// Streamed bodies dropped before their end.
    streams_cancelled: AtomicUsize,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            script: Mutex::default(),
            recorded: Mutex::default(),
            recording: AtomicBool::new(true),
            only: std::sync::atomic::AtomicU8::new(0),
            count: AtomicUsize::new(0),
            seq: AtomicU64::new(0),
            chunk_delay_nanos: AtomicU64::new(0),
            streams_cancelled: AtomicUsize::new(0),
        }
    }
}

impl Shared {
    // A panic in a test thread while holding a lock must not break every later call.
    fn lock_script(&self) -> MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_recorded(&self) -> MutexGuard<'_, Vec<RecordedRequest>> {
        self.recorded.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn chunk_delay(&self) -> Duration {
        Duration::from_nanos(self.chunk_delay_nanos.load(Ordering::Relaxed))
    }

    /// The response for a request with these headers (`None`: the built-in behaviour), and
    /// where it came from, for the debug log.
    fn next_response(&self, headers: &HeaderMap) -> (Option<MockResponse>, &'static str) {
        let mut script = self.lock_script();
        if let Some((name, value)) = &script.cookie {
            if !has_cookie(headers, name, value) {
                return (
                    Some(response::cookie_challenge(name, value)),
                    "cookie challenge",
                );
            }
        }
        if let Some(r) = script.queue.pop_front() {
            return (Some(r), "queue");
        }
        match &script.default {
            Some(r) => (Some(r.clone()), "scripted default"),
            None => (None, "built-in default"),
        }
    }
}

/// Whether any `Cookie` header (HTTP/2 may split them) carries `name=value`.
fn has_cookie(headers: &HeaderMap, name: &str, value: &str) -> bool {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(n, v)| n == name && v == value)
}
