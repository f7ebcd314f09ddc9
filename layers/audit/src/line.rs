//! One audit line: what is known when the request arrives ([`Started`]), when the response
//! head is ready ([`Pending`]) and when its body ends ([`Pending::complete`]).

use std::{
    sync::{Arc, Mutex},
    time::{Instant, SystemTime},
};

use http::{header, HeaderMap, HeaderName, Response};
use portcullis_core::{
    headers::{X_PORTCULLIS_UPSTREAM, X_REQUEST_ID},
    outcome::{Attempts, CacheOutcome},
    usage::{Sniffer, Usage},
    ErrorCode, RouteInfo,
};
use serde::Serialize;

use crate::{body::Capture, layer::Shared, slot::AuditSlot, usage::Counts, usage::OTHER};

/// The longest `x-session-id` / `x-request-id` written; longer ones are cut.
const MAX_ID_BYTES: usize = 256;

/// How the response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    Complete,
    Failed,
    Aborted,
    /// The inner service failed: there was no response.
    NoResponse,
}

impl Ending {
    fn as_str(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::Failed => "failed",
            Self::Aborted => "aborted",
            Self::NoResponse => "no_response",
        }
    }
}

/// What the request brought, kept until its response.
#[derive(Debug)]
pub(crate) struct Started {
    pub(crate) time: SystemTime,
    pub(crate) start: Instant,
    pub(crate) method: http::Method,
    pub(crate) path: Box<str>,
    pub(crate) request_id: Option<Box<str>>,
    pub(crate) session: Option<Box<str>>,
    pub(crate) slot: AuditSlot,
    pub(crate) request_body: Option<Arc<Mutex<Capture>>>,
    pub(crate) shared: Arc<Shared>,
    /// An outer observer's share of this request's usage, claimed: filled at the end.
    pub(crate) usage_share: Option<portcullis_core::usage::UsageShare>,
}

/// The value of header `name` (given as a `HeaderName`: a name given as text is parsed at
/// every lookup), cut to [`MAX_ID_BYTES`] on a character boundary; `None` when absent or empty.
pub(crate) fn header_id(headers: &HeaderMap, name: &HeaderName) -> Option<Box<str>> {
    let v = headers.get(name)?.to_str().ok()?;
    let mut end = v.len().min(MAX_ID_BYTES);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    (!v.is_empty()).then(|| v[..end].into())
}

/// Everything known when the response head is ready, kept until its body ends.
#[derive(Debug)]
pub(crate) struct Pending {
    started: Started,
    status: Option<u16>,
    route: Option<RouteInfo>,
    attempts: Option<u32>,
    upstream: Option<Box<str>>,
    cache: Option<CacheOutcome>,
    error: Option<&'static str>,
    stream: bool,
    sniffer: Option<Sniffer>,
    response_body: Option<Capture>,
}

impl Pending {
    pub(crate) fn new<B>(mut started: Started, resp: &Response<B>) -> Self {
        let ext = resp.extensions();
        let headers = resp.headers();
        if started.request_id.is_none() {
            started.request_id = header_id(headers, &X_REQUEST_ID);
        }
        let route = ext.get::<RouteInfo>().cloned();
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let capture = started.request_body.is_some();
        let max_body = started.shared.max_body_bytes;
        Self {
            status: Some(resp.status().as_u16()),
            attempts: route
                .as_ref()
                .map(|r| r.attempts)
                .or_else(|| ext.get::<Attempts>().map(|a| a.0)),
            // The gateway's own header (upstream ones are stripped before this layer).
            upstream: route
                .as_ref()
                .map(|r| Box::from(&*r.upstream))
                .or_else(|| header_id(headers, &X_PORTCULLIS_UPSTREAM))
                .filter(|u| !u.is_empty()),
            route,
            cache: ext.get::<CacheOutcome>().copied(),
            error: ext.get::<ErrorCode>().map(|e| e.0),
            stream: ct.trim_start().starts_with("text/event-stream"),
            sniffer: Sniffer::for_response(resp.status(), headers),
            response_body: capture.then(|| Capture::new(max_body)),
            started,
        }
    }

    /// A request the inner service failed: no response, no body.
    pub(crate) fn failed(started: Started) -> Self {
        Self {
            started,
            status: None,
            route: None,
            attempts: None,
            upstream: None,
            cache: None,
            error: None,
            stream: false,
            sniffer: None,
            response_body: None,
        }
    }

    pub(crate) fn feed(&mut self, data: &[u8]) {
        if let Some(s) = self.sniffer.as_mut() {
            s.feed(data);
        }
        if let Some(c) = self.response_body.as_mut() {
            c.push(data);
        }
    }

    /// The body ended: count the request and queue its line.
    pub(crate) fn complete(self: Box<Self>, ending: Ending) {
        let latency = self.started.start.elapsed();
        let Pending {
            started,
            status,
            route,
            attempts,
            upstream,
            cache,
            error,
            stream,
            sniffer,
            response_body,
        } = *self;
        let usage = sniffer.map(Sniffer::finish).unwrap_or_default();
        // Handed to the outer reader (the access log) and read back from there: no copy.
        let own;
        let usage = match &started.usage_share {
            Some(share) => match share.fill(usage) {
                Ok(shared) => shared,
                Err(usage) => {
                    own = usage;
                    &own
                }
            },
            None => {
                own = usage;
                &own
            }
        };
        let recorded = started.slot.get();
        let shared = &started.shared;
        let model = route
            .as_ref()
            .map(|r| r.model.clone())
            .filter(|m| !m.is_empty())
            .or(recorded.model);
        let entry = route
            .as_ref()
            .and_then(|r| r.entry.clone())
            .or_else(|| shared.entry_of(model.as_deref()));
        let user_id = recorded
            .user_id
            .or_else(|| route.as_ref().and_then(|r| r.user_id.clone()));
        let failed = status.is_none_or(|s| s >= 400) || ending == Ending::Failed;
        // Replayed and shared answers cost the upstream nothing: only tokens spent count.
        let spent = !matches!(cache, Some(CacheOutcome::Hit | CacheOutcome::Coalesced));
        let tokens = |n: Option<u64>| if spent { n.unwrap_or(0) } else { 0 };
        shared.usage.record(
            recorded.key.as_deref(),
            entry.as_deref().unwrap_or(OTHER),
            &Counts {
                requests: 1,
                errors: u64::from(failed),
                input_tokens: tokens(usage.input_tokens),
                output_tokens: tokens(usage.output_tokens),
                cached_tokens: tokens(usage.cached_input_tokens),
            },
        );
        let Some(writer) = &shared.writer else {
            return;
        };
        let &Usage {
            ref response_model,
            input_tokens,
            output_tokens,
            cached_input_tokens,
            ..
        } = usage;
        let request_body = started
            .request_body
            .as_ref()
            .map(|c| std::mem::take(&mut *c.lock().unwrap_or_else(|p| p.into_inner())));
        let line = Line {
            time: {
                let mut t = String::with_capacity(24);
                portcullis_core::rfc3339::push(&mut t, started.time, 3);
                t
            },
            request_id: started.request_id.as_deref(),
            key: recorded.key.as_deref(),
            user_id: user_id.as_deref(),
            session: started.session.as_deref(),
            method: started.method.as_str(),
            path: &started.path,
            model: model.as_deref(),
            response_model: response_model.as_deref(),
            entry: entry.as_deref(),
            upstream: upstream.as_deref(),
            status,
            attempts,
            input_tokens,
            output_tokens,
            cached_tokens: cached_input_tokens,
            latency_ms: latency.as_micros() as f64 / 1000.0,
            cache: cache.map(CacheOutcome::as_str),
            error,
            stream,
            ending: ending.as_str(),
            request_body: request_body
                .as_ref()
                .map(|c| String::from_utf8_lossy(&c.buf)),
            request_body_truncated: request_body.as_ref().map(|c| c.truncated),
            response_body: response_body
                .as_ref()
                .map(|c| String::from_utf8_lossy(&c.buf)),
            response_body_truncated: response_body.as_ref().map(|c| c.truncated),
        };
        let mut bytes = Vec::with_capacity(512);
        line.write_json(&mut bytes);
        bytes.push(b'\n');
        writer.send(&bytes);
    }
}

/// One line of the audit log (see the crate docs for each field). Written by
/// [`Line::write_json`]; the `Serialize` derive is the reference it is tested against.
#[derive(Serialize)]
struct Line<'a> {
    time: String,
    request_id: Option<&'a str>,
    key: Option<&'a str>,
    user_id: Option<&'a str>,
    session: Option<&'a str>,
    method: &'a str,
    path: &'a str,
    model: Option<&'a str>,
    response_model: Option<&'a str>,
    entry: Option<&'a str>,
    upstream: Option<&'a str>,
    status: Option<u16>,
    attempts: Option<u32>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cached_tokens: Option<u64>,
    latency_ms: f64,
    cache: Option<&'static str>,
    error: Option<&'static str>,
    stream: bool,
    ending: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_body: Option<std::borrow::Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_body_truncated: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_body: Option<std::borrow::Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_body_truncated: Option<bool>,
}

impl Line<'_> {
    /// The line as JSON, byte for byte what `serde_json::to_vec` writes for it, without
    /// serde's per-field machinery (strings through `json_escape`, which writes them as
    /// serde_json does; the float through serde_json's own writer).
    fn write_json(&self, out: &mut Vec<u8>) {
        /// `"name":` after a comma, as one piece: the keys are the line's fixed text.
        macro_rules! key {
            ($name:literal) => {
                out.extend_from_slice(concat!(",\"", $name, "\":").as_bytes())
            };
        }
        fn string(out: &mut Vec<u8>, s: Option<&str>) {
            match s {
                Some(s) => portcullis_core::json_escape::write_str(out, s),
                None => out.extend_from_slice(b"null"),
            }
        }
        fn number(out: &mut Vec<u8>, n: Option<u64>) {
            match n {
                Some(n) => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
                None => out.extend_from_slice(b"null"),
            }
        }
        fn boolean(out: &mut Vec<u8>, b: bool) {
            out.extend_from_slice(if b { b"true" } else { b"false" });
        }
        out.extend_from_slice(b"{\"time\":");
        string(out, Some(&self.time));
        key!("request_id");
        string(out, self.request_id);
        key!("key");
        string(out, self.key);
        key!("user_id");
        string(out, self.user_id);
        key!("session");
        string(out, self.session);
        key!("method");
        string(out, Some(self.method));
        key!("path");
        string(out, Some(self.path));
        key!("model");
        string(out, self.model);
        key!("response_model");
        string(out, self.response_model);
        key!("entry");
        string(out, self.entry);
        key!("upstream");
        string(out, self.upstream);
        key!("status");
        number(out, self.status.map(u64::from));
        key!("attempts");
        number(out, self.attempts.map(u64::from));
        key!("input_tokens");
        number(out, self.input_tokens);
        key!("output_tokens");
        number(out, self.output_tokens);
        key!("cached_tokens");
        number(out, self.cached_tokens);
        key!("latency_ms");
        let _ = serde_json::to_writer(&mut *out, &self.latency_ms);
        key!("cache");
        string(out, self.cache);
        key!("error");
        string(out, self.error);
        key!("stream");
        boolean(out, self.stream);
        key!("ending");
        string(out, Some(self.ending));
        if let Some(b) = &self.request_body {
            key!("request_body");
            string(out, Some(b));
        }
        if let Some(t) = self.request_body_truncated {
            key!("request_body_truncated");
            boolean(out, t);
        }
        if let Some(b) = &self.response_body {
            key!("response_body");
            string(out, Some(b));
        }
        if let Some(t) = self.response_body_truncated {
            key!("response_body_truncated");
            boolean(out, t);
        }
        out.push(b'}');
    }
}

#[cfg(test)]
mod write_json_tests {
    use super::*;

    fn line(full: bool, n: u64) -> Line<'static> {
        let opt = |s: &'static str| full.then_some(s);
        Line {
            time: "2026-12-03T09:00:00.123Z".into(),
            request_id: opt("req-\"1\"\n"),
            key: opt("team-a"),
            user_id: opt("user é 🦀"),
            session: opt("s\u{1}"),
            method: "POST",
            path: "/v1/chat/completions",
            model: opt("gpt-4o"),
            response_model: opt("gpt-4o-2024"),
            entry: opt("gpt-*"),
            upstream: opt("openai"),
            status: full.then_some(429),
            attempts: full.then_some(u32::MAX),
            input_tokens: full.then_some(n),
            output_tokens: full.then_some(0),
            cached_tokens: full.then_some(u64::MAX),
            latency_ms: n as f64 / 7.0,
            cache: full.then_some("coalesced"),
            error: full.then_some("upstream_timeout"),
            stream: full,
            ending: "aborted",
            request_body: full.then(|| "{\"a\":\"\\\"\u{7f}\"}".into()),
            request_body_truncated: full.then_some(true),
            response_body: full.then(|| "data: x\r\n\r\n".into()),
            response_body_truncated: full.then_some(false),
        }
    }

    #[test]
    fn writes_what_serde_writes() {
        for full in [false, true] {
            for n in [0, 1, 12_345, 1 << 53, u64::MAX] {
                let l = line(full, n);
                let mut ours = Vec::new();
                l.write_json(&mut ours);
                let serde = serde_json::to_vec(&l).unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&ours),
                    String::from_utf8_lossy(&serde)
                );
            }
        }
    }
}
