//! [`ToolCallLoopDetection`]: the service that counts a session's tool calls.

use std::{
    fmt,
    future::Future,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures_util::{future::Either, FutureExt as _, TryFutureExt as _};
use http::{header, HeaderValue, Request, Response};
use http_body::Body;
use portcullis_core::{
    body::{collect_limited, collect_up_to, Collected},
    identity::SessionSource,
};
use tower::{BoxError, Service};

use crate::{
    calls::json_calls,
    future::ResponseFuture,
    layer::Shared,
    note,
    session::{Note, Verdict, LAYER},
    Api, Config, ToolCallLoop, ToolCallLoopBody, ToolCallLoopLayer, X_PORTCULLIS_TOOL_CALL_LOOP,
};

/// Counts identical consecutive tool calls per session in the inner service's answers (see
/// the [crate docs](crate)).
///
/// Clones share the session store (an `Arc`).
#[derive(Clone)]
pub struct ToolCallLoopDetection<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> ToolCallLoopDetection<S> {
    /// Wrap `inner` with its own session store (see [`ToolCallLoopLayer::new`]); to share
    /// one between services, build them from one layer.
    pub fn new(inner: S, config: Config) -> Self {
        Self::from_shared(inner, ToolCallLoopLayer::new(config).shared)
    }

    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    portcullis_core::define_inner_service_accessors!();
}

impl<S: fmt::Debug> fmt::Debug for ToolCallLoopDetection<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolCallLoopDetection")
            .field("inner", &self.inner)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for ToolCallLoopDetection<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    ReqB: Body<Data = Bytes> + From<Bytes> + Send + 'static,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<ToolCallLoopBody<ResB>>;
    type Error = BoxError;
    type Future = ResponseFuture<ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        ResponseFuture::new(run(self.shared.clone(), &mut self.inner, req))
    }
}

/// The request sent on through `inner`, the service `poll_ready` readied: called here, at
/// once, so no clone of the stack below is made for the future to carry; only a request
/// that must wait first (a note to add to its body) takes the readied service with it and
/// leaves a clone in its place.
fn run<S, ReqB, ResB>(
    shared: Arc<Shared>,
    inner: &mut S,
    req: Request<ReqB>,
) -> impl Future<Output = Result<Response<ToolCallLoopBody<ResB>>, BoxError>> + use<S, ReqB, ResB>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    ReqB: Body<Data = Bytes> + From<Bytes> + Send + 'static,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes>,
    ResB::Error: Into<BoxError>,
{
    let Some(api) = Api::from_path(req.uri().path()) else {
        return Either::Left(inner.call(req).map(|result| match result {
            Ok(resp) => Ok(resp.map(ToolCallLoopBody::passthrough)),
            Err(e) => Err(e.into()),
        }));
    };
    // What the session key is made of, hashed only when there is session state to read or
    // write: until a first answer with tool calls, there is none.
    let source = SessionSource::of(req.headers(), req.extensions());
    // Hashed once, when first needed (a pending note, then a judgement, read the same key).
    let mut key = None;
    let (owed_note, owed_header) = if shared.sessions.any() {
        shared
            .sessions
            .take_pending(*key.get_or_insert_with(|| source.key(LAYER)))
    } else {
        (None, None)
    };
    let sent = match owed_note {
        // Boxed: the note is the rare path, and its future would otherwise sit in every
        // request's.
        Some(n) => {
            let limit = shared.max_body_bytes;
            let clone = inner.clone();
            let mut inner = std::mem::replace(inner, clone);
            Either::Left(Box::pin(async move {
                let req = with_note(req, api, &n, limit).await?;
                inner.call(req).await.map_err(Into::into)
            }))
        }
        None => Either::Right(inner.call(req).err_into::<BoxError>()),
    };
    // Chained, not one block: a block keeps what it captures (the request) to its end, beside
    // the call that carries it; the state is boxed and copied for every request.
    Either::Right(sent.and_then(move |resp| async move {
        let mut session = || *key.get_or_insert_with(|| source.key(LAYER));
        let mut resp = match crate::kind(&resp) {
            crate::Kind::Pass => resp.map(ToolCallLoopBody::passthrough),
            crate::Kind::Sse => {
                let (mut parts, body) = resp.into_parts();
                // A blocked stream ends with an error event: its length changes.
                parts.headers.remove(header::CONTENT_LENGTH);
                let body = ToolCallLoopBody::watched(body, api, session(), shared.clone());
                Response::from_parts(parts, body)
            }
            crate::Kind::Json => {
                let (mut parts, body) = resp.into_parts();
                match collect_up_to(Box::pin(body), shared.max_json_bytes).await {
                    Ok(Collected::Complete(bytes)) => {
                        // An answer without calls ends a streak: nothing to end before any.
                        let calls = json_calls(api, &bytes)
                            .filter(|c| !c.is_empty() || shared.sessions.any());
                        if let Some(calls) = calls {
                            match crate::judge(&shared, api, session(), &calls, false) {
                                Verdict::Block { tool, repeats } => {
                                    return Err(portcullis_core::error::Refused::boxed(
                                        ToolCallLoop {
                                            tool: tool.to_string(),
                                            repeats,
                                        },
                                    ));
                                }
                                Verdict::LetThrough { header, .. } => {
                                    parts.headers.insert(
                                        X_PORTCULLIS_TOOL_CALL_LOOP,
                                        HeaderValue::from_static(header),
                                    );
                                }
                                Verdict::Allow => {}
                            }
                        }
                        Response::from_parts(parts, ToolCallLoopBody::buffered(bytes, None))
                    }
                    // Too large to judge: passed on unread.
                    Ok(Collected::Partial { prefix, rest }) => {
                        Response::from_parts(parts, ToolCallLoopBody::buffered(prefix, Some(rest)))
                    }
                    Err(e) => Response::from_parts(parts, ToolCallLoopBody::failed(e.into())),
                }
            }
        };
        if let Some(h) = owed_header {
            resp.headers_mut()
                .entry(X_PORTCULLIS_TOOL_CALL_LOOP)
                .or_insert(HeaderValue::from_static(h));
        }
        Ok(resp)
    }))
}

/// The request with the `chance_then_block` note appended (unchanged if its body is not the
/// JSON expected).
async fn with_note<B>(
    req: Request<B>,
    api: Api,
    n: &Note,
    limit: usize,
) -> Result<Request<B>, BoxError>
where
    B: Body<Data = Bytes> + From<Bytes>,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = req.into_parts();
    let bytes = collect_limited(body, limit).await?;
    let body = match note::append(api, &bytes, &note::text(n)) {
        Some(new) => {
            tracing::info!(api = api.as_str(), tool = %n.tool, repeats = n.repeats,
                "tool call loop: a note was added to the request");
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(new.len()));
            new
        }
        None => bytes,
    };
    Ok(Request::from_parts(parts, B::from(body)))
}
