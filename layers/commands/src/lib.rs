//! In-chat commands for portcullis: `!/set(model=gpt-4o)` in a chat changes that session's
//! later requests, answered by the gateway itself, as a tower layer.
//!
//! A user in a chat client that cannot pick models or parameters types a command as their
//! message; [`Commands`] answers it as an ordinary assistant message in the client's API
//! shape, with **no upstream call**, and applies the session's settings to its later
//! requests.
//!
//! # Commands
//! When the **last turn** of a request is the user's (the last message or `input` item,
//! past `system` and `developer` messages a client appends after it, as Claude Code does)
//! and what the user typed (a string, or the last text block or `input_text` part: clients
//! such as Claude Code put `<system-reminder>` blocks before the prompt; Responses `input`
//! may also be a plain string) starts with the prefix (`!/` by default, leading whitespace
//! ignored):
//! - `!/set(key=value, ...)`: store settings for the session.
//!   - `model=NAME`: later requests are sent as that model: the body's `model` is rewritten and
//!     the [`RequestMeta`](portcullis_core::RequestMeta) extension replaced, so a router after
//!     this layer routes them there.
//!   - `loop_detection=on|off` (or `true|false`): while `off`, later requests carry the
//!     [`LoopDetectionOff`](portcullis_loop_detection::LoopDetectionOff) extension.
//!   - any other key is a **body parameter** merged into later requests' JSON bodies at the
//!     top level, only where the request does not set that key itself (the client's own
//!     values win), e.g. `temperature=0.2`, `thinking={"type":"enabled","budget_tokens":4096}`.
//!     A value is parsed as JSON when it parses (`0.2`, `true`, `[..]`, `{..}`, `"quoted"`),
//!     else kept as a string (`gpt-4o`, `high`). Commas and parentheses inside brackets or
//!     JSON strings do not split arguments. `messages`, `input`, `stream`, `stream_options`
//!     and `prompt` cannot be set. At most `max_params` params per session.
//! - `!/unset(key, ...)`: remove settings; `!/unset(*)` removes all.
//! - `!/show`: list the session's settings. `!/help`: explain the commands.
//! - Anything else after the prefix (an unknown command, a missing `)`, a refused value) is
//!   answered with an assistant message saying what is wrong and explaining the syntax;
//!   nothing changes. Never an error status.
//!
//! The answer is a `chat.completion`, an Anthropic `message` or a Responses `response`
//! object; with `"stream": true`, a short valid event stream of that API (chat chunks and
//! `[DONE]`, with a usage chunk when `stream_options.include_usage`; `message_start` ..
//! `message_stop`; `response.created` .. `response.completed`). Usage is zero. Its response
//! has the header [`X_PORTCULLIS_COMMAND`] (`set|unset|show|help|invalid`) and the
//! [`CommandKind`] extension; each command is counted in the `metrics` counter
//! `portcullis_commands_total{command}`.
//!
//! # Sessions
//! [`session_key`]: the caller (the `ApiKeyHash` extension, else the credential headers),
//! then the `x-session-id` header, else the memory `UserId` extension. At most
//! `max_sessions` sessions are kept (least recently used go first), each forgotten
//! `session_ttl` after its last request. Only sessions with settings take memory.
//!
//! # What is read
//! Only `POST /v1/chat/completions`, `/v1/responses` and `/v1/messages` (any path prefix)
//! are looked at; other paths pass through untouched, unread. On those, the body is read up
//! to [`CommandsLayer::with_max_body_bytes`] (a larger one fails with `CollectError`, 413 at
//! the gateway's edge); it is parsed only when it contains the prefix or the session has
//! settings. A body that is not a JSON object passes on unchanged. The inner service is
//! readied (on a clone, in `call`) only for a request that goes on; `poll_ready` is always
//! ready.
//!
//! # Example
//! ```
//! use std::convert::Infallible;
//!
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use portcullis_commands::{CommandsLayer, Config};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower::BoxError> {
//! let svc = ServiceBuilder::new()
//!     .layer(CommandsLayer::from_config(&Config::default()).expect("valid config"))
//!     .service(service_fn(|req: Request<Full<Bytes>>| async move {
//!         // The upstream echoes the body it was sent.
//!         let body = req.into_body().collect().await?.to_bytes();
//!         Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Response::new(Full::new(body)))
//!     }));
//! let chat = |text: &str| {
//!     let body = serde_json::json!({"model": "gpt-4o-mini",
//!         "messages": [{"role": "user", "content": text}]});
//!     Request::post("/v1/chat/completions")
//!         .header("authorization", "Bearer sk-example")
//!         .body(Full::new(Bytes::from(body.to_string())))
//!         .unwrap()
//! };
//!
//! // Answered by the gateway: the upstream is not called.
//! let resp = svc.clone().oneshot(chat("!/set(model=gpt-4o, temperature=0.2)")).await?;
//! assert_eq!(resp.headers()["x-portcullis-command"], "set");
//! let answer: serde_json::Value =
//!     serde_json::from_slice(&resp.into_body().collect().await?.to_bytes())?;
//! assert_eq!(answer["object"], "chat.completion");
//!
//! // The session's next request goes out with its settings.
//! let resp = svc.oneshot(chat("Hello")).await?;
//! let sent: serde_json::Value =
//!     serde_json::from_slice(&resp.into_body().collect().await?.to_bytes())?;
//! assert_eq!((sent["model"].as_str(), sent["temperature"].as_f64()), (Some("gpt-4o"), Some(0.2)));
//! # Ok(())
//! # }
//! ```

mod api;
mod body;
mod command;
mod config;
mod exec;
mod layer;
mod service;
mod session;

pub use api::Api;
pub use body::CommandsBody;
pub use command::CommandKind;
pub use config::{Config, MAX_COMMAND_BYTES};
pub use layer::CommandsLayer;
pub use service::Commands;
pub use session::{session_key, SessionKey, X_SESSION_ID};

use http::HeaderName;

/// The response header naming the command answered: `set`, `unset`, `show`, `help` or
/// `invalid`.
pub const X_PORTCULLIS_COMMAND: HeaderName = HeaderName::from_static("x-portcullis-command");

/// The counter of commands answered, labelled `command` (the [`X_PORTCULLIS_COMMAND`] values).
pub const COMMANDS_METRIC: &str = "portcullis_commands_total";
