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

/// Which error event a client understands, by its request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamShape {
    /// `data: {"error":{...}}`, then the stream closes without `[DONE]`.
    OpenAi,
    /// `event: error` with `{"type":"error","error":{...}}`.
    Anthropic,
    /// `event: error` with `{"type":"error","code":..,"message":..}`.
    Responses,
}

impl StreamShape {
    /// The shape of the answers to `path`.
    pub fn of(path: &str) -> Self {
        if path.contains("/v1/messages") {
            StreamShape::Anthropic
        } else if path.contains("/v1/responses") {
            StreamShape::Responses
        } else {
            StreamShape::OpenAi
        }
    }

    fn event(self, code: &str, message: &str) -> Bytes {
        let api = match self {
            StreamShape::OpenAi => Api::ChatCompletions,
            StreamShape::Anthropic => Api::Messages,
            StreamShape::Responses => Api::Responses,
        };
        portcullis_core::sse::error_event(api, code, "api_error", message)
    }
}

pin_project! {
    /// See the module docs.
    pub struct StreamEnd {
        #[pin]
        inner: Body,
        shape: StreamShape,
        done: bool,
    }
}

impl StreamEnd {
    /// Guard `inner`, an event stream answered to a client of `shape`.
    pub fn new(inner: Body, shape: StreamShape) -> Self {
        Self {
            inner,
            shape,
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
                Poll::Ready(Some(Ok(Frame::data(this.shape.event(code, &message)))))
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
