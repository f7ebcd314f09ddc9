//! [`Commands`]: the service that answers commands and applies session settings.

use std::{
    fmt,
    future::Future,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures_util::{future::Either, FutureExt as _, TryFutureExt as _};
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use portcullis_core::{
    body::collect_limited,
    future::{call_if_ready, BoxResponseFuture},
    json_skim, RequestMeta,
};
use portcullis_loop_detection::LoopDetectionOff;
use serde_json::Value;
use tower::{BoxError, Service, ServiceExt};

use crate::{
    api::{last_user_text, Reply},
    config::MAX_COMMAND_BYTES,
    exec,
    layer::Shared,
    session::{session_key, Settings},
    Api, CommandsBody, CommandsLayer, Config, COMMANDS_METRIC, X_PORTCULLIS_COMMAND,
};

/// Answers in-chat commands without calling the inner service, and applies each session's
/// settings to its other requests (see the [crate docs](crate)).
///
/// Clones share the session store (an `Arc`).
#[derive(Clone)]
pub struct Commands<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Commands<S> {
    /// Wrap `inner` with its own session store (see [`CommandsLayer::new`]); to share one
    /// between services, build them from one layer.
    pub fn new(inner: S, config: Config) -> Self {
        Self::from_shared(inner, CommandsLayer::new(config).shared)
    }

    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    portcullis_core::define_inner_service_accessors!();
}

impl<S: fmt::Debug> fmt::Debug for Commands<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Commands")
            .field("inner", &self.inner)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Commands<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    ReqB: Body<Data = Bytes> + From<Bytes> + Send + 'static,
    ReqB::Error: Into<BoxError>,
    ResB: Send + 'static,
{
    type Response = Response<CommandsBody<ResB>>;
    type Error = BoxError;
    type Future = BoxResponseFuture<CommandsBody<ResB>>;

    /// Always ready: a command is answered without the inner service, so it is readied (in
    /// `call`) only for a request that goes on, as tower's `Steer` does.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        run(&self.shared, &mut self.inner, req)
    }
}

/// The request sent on through the service itself when it is ready now (as the gateway's
/// stack always is): the call is made here, so no clone of the stack below is made for the
/// future to carry (a clone of every layer below, each with its reference counts, per
/// request). Otherwise through a clone, readied in the future.
fn forward_now<S, ReqB, ResB>(
    inner: &mut S,
    req: Request<ReqB>,
) -> BoxResponseFuture<CommandsBody<ResB>>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    ReqB: Send + 'static,
    ResB: Send + 'static,
{
    match call_if_ready(inner, req) {
        Ok(Ok(called)) => BoxResponseFuture::new(called.map(passed_on)),
        Ok(Err(e)) => BoxResponseFuture::new(std::future::ready(Err(e.into()))),
        Err(req) => BoxResponseFuture::new(forward(inner.clone(), req)),
    }
}

/// The request sent on. A combinator, not an async block: a block would keep the service and
/// the request twice in its state (captured, then in the call it awaits).
fn forward<S, ReqB, ResB>(
    inner: S,
    req: Request<ReqB>,
) -> impl Future<Output = Result<Response<CommandsBody<ResB>>, BoxError>>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
{
    inner.oneshot(req).map(passed_on)
}

/// The inner service's answer, as this layer's.
fn passed_on<ResB, E: Into<BoxError>>(
    result: Result<Response<ResB>, E>,
) -> Result<Response<CommandsBody<ResB>>, BoxError> {
    match result {
        Ok(resp) => Ok(resp.map(CommandsBody::inner)),
        Err(e) => Err(e.into()),
    }
}

/// What a request comes to once its body is read.
enum Decided<ReqB, ResB> {
    /// A command, answered here.
    Answer(Response<CommandsBody<ResB>>),
    /// Sent on (with its session's settings applied, if any).
    Forward(Request<ReqB>),
}

// Chained, not one async block: what a block captures stays in its state to the end, so the
// request's parts would sit in it beside the call that carries them on; the state is boxed
// and copied for every request. The steps after the body is read are `decide`, a plain
// function.
//
// The body is read at once when it is in memory already (the validation layer before this
// one read it): then the request is decided and sent on here, through the service itself
// (`forward_now`). A body still arriving is read in the future, which takes a clone of the
// service to send it on.
fn run<S, ReqB, ResB>(
    shared: &Arc<Shared>,
    inner: &mut S,
    req: Request<ReqB>,
) -> BoxResponseFuture<CommandsBody<ResB>>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    ReqB: Body<Data = Bytes> + From<Bytes> + Send + 'static,
    ReqB::Error: Into<BoxError>,
    ResB: Send + 'static,
{
    let Some(api) = Api::from_path(req.uri().path()) else {
        return forward_now(inner, req);
    };
    // Until some session holds settings, none can: no key to make (a command makes it).
    let settings = if shared.sessions.any() {
        shared
            .sessions
            .get(session_key(req.headers(), req.extensions()))
    } else {
        None
    };
    let (parts, body) = req.into_parts();
    let mut read = Box::pin(collect_limited(body, shared.max_body_bytes));
    let mut cx = Context::from_waker(std::task::Waker::noop());
    if let Poll::Ready(read) = read.as_mut().poll(&mut cx) {
        return match read {
            Ok(bytes) => match decide(shared, api, settings, parts, bytes) {
                Decided::Answer(resp) => BoxResponseFuture::new(std::future::ready(Ok(resp))),
                Decided::Forward(req) => forward_now(inner, req),
            },
            Err(e) => BoxResponseFuture::new(std::future::ready(Err(e.into()))),
        };
    }
    let (shared, inner) = (shared.clone(), inner.clone());
    BoxResponseFuture::new(read.err_into().and_then(move |bytes| {
        match decide(&shared, api, settings, parts, bytes) {
            Decided::Answer(resp) => Either::Left(std::future::ready(Ok(resp))),
            Decided::Forward(req) => Either::Right(forward(inner, req)),
        }
    }))
}

/// A command's answer, or the request to send on (see [`run`]).
fn decide<ReqB: From<Bytes>, ResB>(
    shared: &Shared,
    api: Api,
    settings: Option<Arc<Settings>>,
    mut parts: http::request::Parts,
    bytes: Bytes,
) -> Decided<ReqB, ResB> {
    let on = |parts, body: Bytes| Decided::Forward(Request::from_parts(parts, ReqB::from(body)));
    let prefix = shared.config.prefix.as_str();
    // Most requests carry no command and their session no settings: they go on unparsed.
    if settings.is_none() && !shared.look.may_contain(&bytes) {
        return on(parts, bytes);
    }
    // A tree of a body of millions of values (token ids, or an attack on memory) would take
    // 30 times its size: such a body is no chat with a command, and goes on as it came.
    if json_skim::more_values_than(&bytes, json_skim::MAX_VALUES) {
        tracing::debug!(
            max_values = json_skim::MAX_VALUES,
            "request body has too many values to read for commands; sent on"
        );
        return on(parts, bytes);
    }
    let json = match serde_json::from_slice::<Value>(&bytes) {
        Ok(json) if json.is_object() => json,
        // Not ours to judge (the validation layer's job): sent on as it came.
        _ => return on(parts, bytes),
    };
    let stream = json.get("stream") == Some(&Value::Bool(true));
    if let Some(text) = last_user_text(api, &json) {
        let text = text.trim_start();
        if let Some(command) = text.strip_prefix(prefix) {
            let model = settings
                .as_ref()
                .and_then(|s| s.model.clone())
                .or_else(|| json.get("model").and_then(Value::as_str).map(Arc::from))
                .unwrap_or_else(|| Arc::from("portcullis"));
            let reply = Reply {
                api,
                model: &model,
                stream,
                include_usage: json
                    .pointer("/stream_options/include_usage")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            };
            let key = session_key(&parts.headers, &parts.extensions);
            return Decided::Answer(answer(shared, key, api, command, &reply));
        }
    }
    let Some(settings) = settings else {
        return on(parts, bytes);
    };
    if settings.loop_detection_off {
        parts.extensions.insert(LoopDetectionOff);
    }
    if let Some(model) = &settings.model {
        // The layers after this one (the router above all) route by the meta, not the body.
        let stream = parts
            .extensions
            .get::<RequestMeta>()
            .map_or(stream, |m| m.stream);
        parts.extensions.insert(RequestMeta {
            model: Some(model.clone()),
            stream,
        });
    }
    let body = match apply(json, &settings) {
        Some(new) => {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(new.len()));
            new
        }
        None => bytes,
    };
    on(parts, body)
}

/// Whether a body may hold the command prefix as JSON text: its bytes, or (for a prefix with
/// `/`) the `\/` escape some encoders write. A prefix with non-ASCII characters (an encoder
/// may have escaped them) or with `"` or `\` is always looked for by parsing.
#[derive(Debug, Clone)]
pub(crate) struct PrefixLook {
    /// `None`: always parse.
    plain: Option<memchr::memmem::Finder<'static>>,
    escaped: Option<memchr::memmem::Finder<'static>>,
}

impl PrefixLook {
    pub(crate) fn new(prefix: &str) -> Self {
        let always = !prefix.is_ascii() || prefix.contains(['"', '\\']);
        Self {
            plain: (!always).then(|| memchr::memmem::Finder::new(prefix).into_owned()),
            escaped: prefix
                .contains('/')
                .then(|| memchr::memmem::Finder::new(&prefix.replace('/', "\\/")).into_owned()),
        }
    }

    pub(crate) fn may_contain(&self, body: &[u8]) -> bool {
        let Some(plain) = &self.plain else {
            return true;
        };
        let Some(escaped) = &self.escaped else {
            return plain.find(body).is_some();
        };
        let both = |from: &[u8]| plain.find(from).is_some() || escaped.find(from).is_some();
        match plain.needle().first() {
            // Both spellings start alike (the `!` of `!/`, seldom in a prompt): one pass over
            // that byte, each place checked for either, instead of a search for each.
            Some(&first) if first != b'/' => {
                // A place (the byte search restarted, two compares) costs about what the two
                // vectorised searches spend on ~300 bytes; past one place per 512 bytes (a
                // body thick with the byte), the rest gets the two searches, so no body costs
                // twice what they would.
                let many = 64 + body.len() / 512;
                for (n, at) in memchr::memchr_iter(first, body).enumerate() {
                    let rest = body.get(at..).unwrap_or_default();
                    if n == many {
                        return both(rest);
                    }
                    if rest.starts_with(plain.needle()) || rest.starts_with(escaped.needle()) {
                        return true;
                    }
                }
                false
            }
            _ => both(body),
        }
    }
}

/// The body with the session's settings applied: `model` replaced, each param added where
/// the client did not set it. `None`: nothing changed.
fn apply(mut json: Value, settings: &Settings) -> Option<Bytes> {
    let obj = json.as_object_mut()?;
    let mut changed = false;
    if let Some(m) = &settings.model {
        if obj.get("model").and_then(Value::as_str) != Some(&**m) {
            obj.insert("model".to_owned(), Value::String(m.to_string()));
            changed = true;
        }
    }
    for (k, v) in &settings.params {
        if !obj.contains_key(k) {
            obj.insert(k.clone(), v.clone());
            changed = true;
        }
    }
    if !changed {
        return None;
    }
    serde_json::to_vec(&json).ok().map(Bytes::from)
}

fn answer<B>(
    shared: &Shared,
    key: crate::SessionKey,
    api: Api,
    command: &str,
    reply: &Reply<'_>,
) -> Response<CommandsBody<B>> {
    let config = &shared.config;
    let (kind, text) = if command.len() + config.prefix.len() > MAX_COMMAND_BYTES {
        (
            crate::CommandKind::Invalid,
            format!(
                "That command is too long (at most {MAX_COMMAND_BYTES} bytes). Nothing was changed.\n\n{}",
                exec::help(&config.prefix, config.session_ttl)
            ),
        )
    } else {
        exec::run(
            &shared.sessions,
            key,
            command,
            &config.prefix,
            config.max_params,
            config.session_ttl,
        )
    };
    tracing::info!(api = api.as_str(), command = kind.as_str(), session = ?key,
        "in-chat command answered by the gateway");
    metrics::counter!(COMMANDS_METRIC, "command" => kind.as_str()).increment(1);
    let (content_type, body) = reply.render(&text);
    let mut resp = Response::new(CommandsBody::answer(body));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        X_PORTCULLIS_COMMAND,
        HeaderValue::from_static(kind.as_str()),
    );
    resp.extensions_mut().insert(kind);
    resp
}

#[cfg(test)]
mod tests {
    use super::PrefixLook;

    /// The quick look lets through every body that may hold the prefix as JSON text, and
    /// only skips the parse of bodies that cannot.
    #[test]
    fn the_prefix_look_finds_plain_and_escaped_prefixes() {
        let look = PrefixLook::new("!/");
        assert!(look.may_contain(br#"{"messages":[{"content":"!/set(model=x)"}]}"#));
        assert!(look.may_contain(br#"{"messages":[{"content":"!\/set(model=x)"}]}"#));
        assert!(!look.may_contain(br#"{"messages":[{"content":"hello ! /"}]}"#));
        // Past a few dozen `!` (more than one in 512 bytes), the rest is searched for either form.
        let mut busy = "!".repeat(200).into_bytes();
        busy.extend_from_slice(br#"{"content":"!\/x"}"#);
        assert!(look.may_contain(&busy));
        assert!(!look.may_contain(&busy[..200]));
        busy.truncate(200);
        busy.extend_from_slice(b"!/x");
        assert!(look.may_contain(&busy));
        let look = PrefixLook::new("#cmd");
        assert!(look.may_contain(b"say #cmd"));
        assert!(!look.may_contain(b"say #cm d"));
        // An encoder may escape non-ASCII characters, and a quote or backslash is escaped
        // in JSON text: such prefixes are always parsed for.
        assert!(PrefixLook::new("¡/").may_contain(b"nothing here"));
        assert!(PrefixLook::new("\"/").may_contain(b"nothing here"));
    }
}
