//! Audit log and usage accounting for portcullis: one JSON line per proxied request, and
//! requests, tokens and errors per gateway key and model, as a tower layer.
//!
//! [`Audit`] watches each response body to its end (or its drop): token usage is read as
//! the body streams by ([`Sniffer`](portcullis_core::usage::Sniffer): line by line, never
//! buffering a stream), then the request is counted in the [`UsageTable`] and, when
//! `path` is set, its line is queued for a background writer.
//!
//! # The line
//! One JSON object per line, written when the response body ends, fails or is dropped
//! (`null` where unknown):
//!
//! | field | what |
//! | --- | --- |
//! | `time` | when the request arrived, RFC 3339 UTC with milliseconds |
//! | `request_id` | the request's `x-request-id` (else the response's) |
//! | `key` | the gateway key's name ([`KeyName`], inserted by the gateway's key auth) |
//! | `user_id` | the memory user id (`UserId`, else `RouteInfo.user_id`) |
//! | `session` | the `x-session-id` header |
//! | `method`, `path` | the request's method and path (never the query string) |
//! | `model` | the model asked (`RouteInfo.model`, else `RequestMeta`) |
//! | `response_model` | the model the upstream says answered (read from the body) |
//! | `entry` | the `[[models]]` entry (`RouteInfo.entry`, else [`AuditLayer::with_model_entries`]) |
//! | `upstream`, `attempts` | `RouteInfo.upstream` / `.attempts` (else `x-portcullis-upstream`, `Attempts`) |
//! | `status` | the response status (`null`: none: the inner service failed, or the request was dropped before its answer) |
//! | `input_tokens`, `output_tokens`, `cached_tokens` | usage the upstream reported |
//! | `latency_ms` | from the request to the end of the response body |
//! | `cache` | `CacheOutcome`: `miss`, `hit`, `coalesced`, `bypass` |
//! | `error` | the gateway's `ErrorCode` (`x-portcullis-error`) |
//! | `stream` | the response was `text/event-stream` |
//! | `ending` | `complete`, `failed` (the body errored), `aborted` (dropped early, before or during the answer: the client went away), `no_response` |
//! | `request_body`, `response_body` (+ `_truncated`) | only with `include_bodies`: the first `max_body_bytes` of each, as text |
//!
//! Headers are never written (no credential, cookie or key can reach the file); the key
//! appears only as its configured name.
//!
//! # Never blocking a request
//! Lines go through a bounded queue (`queue` lines) to one writer thread that appends them in
//! batches (`portcullis_core::lines`); when the
//! queue is full the line is dropped and counted (`portcullis_audit_dropped_total`,
//! [`AuditHandle::dropped`]). Write failures are logged once per run of them and counted in
//! `portcullis_audit_write_errors_total`. [`AuditHandle::reopen`] reopens the file at its
//! path (call it on `SIGHUP`, after logrotate moved the file); [`AuditHandle::flush`] waits
//! until the lines queued so far are on disk.
//!
//! # Usage
//! [`UsageTable`] counts requests, errors (status >= 400 or a failed body) and input /
//! output / cached tokens per (key name, `[[models]]` entry) since start; cache hits and
//! coalesced answers count as requests but spend no tokens. [`UsageTable::to_json`] is the
//! body of `GET /admin/usage`. It is kept whether or not `path` is set.
//!
//! # Where it sits
//! Outermost, beside the access log (it sees the final status and the whole body). What only
//! inner layers learn (the key name, the user id, the model) comes back through the
//! [`AuditSlot`] request extension, filled by [`AuditRecordLayer`] stacked inside them. The
//! inner service receives `Request<AuditRequestBody<B>>`: the body unchanged (copied as it is
//! read only with `include_bodies`).
//!
//! # Example
//! ```
//! use std::convert::Infallible;
//!
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use portcullis_audit::{AuditLayer, AuditRequestBody, Config, KeyName};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("audit.jsonl");
//! let config = Config { path: path.to_string_lossy().into_owned(), ..Config::default() };
//! let layer = AuditLayer::from_config(&config)?;
//! let handle = layer.handle();
//! let svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|_req: Request<AuditRequestBody<Full<Bytes>>>| async {
//!         let answer = r#"{"model":"gpt-4o-mini-2024-07-18","usage":{"prompt_tokens":9,"completion_tokens":2}}"#;
//!         let resp = Response::builder()
//!             .header("content-type", "application/json")
//!             .body(Full::new(Bytes::from_static(answer.as_bytes())))
//!             .unwrap();
//!         Ok::<_, Infallible>(resp)
//!     }));
//!
//! let mut request = Request::post("/v1/chat/completions").body(Full::new(Bytes::new()))?;
//! request.extensions_mut().insert(KeyName::new("team-a"));
//! let response = svc.oneshot(request).await?;
//! response.into_body().collect().await?; // the line is queued when the body ends
//!
//! handle.flush().await;
//! let line: serde_json::Value = serde_json::from_str(std::fs::read_to_string(&path)?.trim())?;
//! assert_eq!(line["key"], "team-a");
//! assert_eq!((line["input_tokens"].as_u64(), line["output_tokens"].as_u64()), (Some(9), Some(2)));
//! let usage = handle.usage().to_json();
//! assert_eq!(usage["usage"][0]["model"], "other"); // no [[models]] entry was matched
//! # Ok(())
//! # }
//! ```

mod body;
mod config;
pub mod future;
mod key;
mod layer;
mod line;
mod service;
mod slot;
mod usage;
mod writer;

pub use body::{AuditBody, AuditRequestBody};
pub use config::Config;
pub use key::KeyName;
pub use layer::{AuditError, AuditLayer};
pub use service::Audit;
pub use slot::{AuditRecord, AuditRecordLayer, AuditSlot};
pub use usage::{Counts, UsageTable, OTHER};
pub use writer::AuditHandle;

/// The counter of audit lines dropped because the writer's queue was full.
pub const DROPPED_METRIC: &str = "portcullis_audit_dropped_total";

/// The counter of audit log writes that failed.
pub const WRITE_ERRORS_METRIC: &str = "portcullis_audit_write_errors_total";
