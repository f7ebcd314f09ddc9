//! A stream never ends silently: when an upstream's event stream fails after its first byte
//! (a reset, `idle_timeout`, a truncated body), the client gets one error event in its own
//! API's shape and then the end of the stream (interface.md "Streams").

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use axum::body::Body;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;
use portcullis_core::api::Api;

use super::client::UpstreamIdle;

/// Which error event a client of `path` understands: Anthropic's under `/v1/messages`, the
/// Responses API's under `/v1/responses`, else OpenAI's chat shape (completions and the rest
/// of OpenAI's streams use it too).
pub fn stream_api(path: &str) -> Api {
    if path.contains("/v1/messages") {
        Api::Messages
    } else if path.contains("/v1/responses") {
        Api::Responses
    } else {
        Api::ChatCompletions
    }
}

pin_project! {
    /// See the module docs.
    pub struct StreamEnd {
        #[pin]
        inner: Body,
        api: Api,
        done: bool,
    }
}

impl StreamEnd {
    /// Guard `inner`, an event stream answered to a client of `api` ([`stream_api`]).
    pub fn new(inner: Body, api: Api) -> Self {
        Self {
            inner,
            api,
            done: false,
        }
    }
}

impl HttpBody for StreamEnd {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => {
                *this.done = true;
                let idle = portcullis_core::error::find_in_chain::<UpstreamIdle>(&e).is_some();
                let code = if idle {
                    "upstream_timeout"
                } else {
                    "upstream_error"
                };
                tracing::warn!(error = %e, "upstream stream failed after its first byte");
                let message = format!("the upstream's stream broke off: {e}");
                let event = this.api.error_event(code, "api_error", &message);
                Poll::Ready(Some(Ok(Frame::data(event))))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
