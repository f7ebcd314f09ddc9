//! Shared end-to-end test support: a gateway on a real socket in front of the mock upstream,
//! and a small HTTP client that can read streams chunk by chunk.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use portcullis::{config::Config, stack, state::AppState};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

/// A gateway serving on 127.0.0.1:<random>.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<bool>>>,
}

impl TestGateway {
    /// Build from TOML (merged over the embedded defaults) and serve as `portcullis serve`
    /// does: each connection on one of `server.threads` serving threads.
    pub async fn start(toml: &str) -> TestGateway {
        let loaded = Config::from_toml(toml).unwrap_or_else(|e| panic!("config: {e}"));
        Self::start_config(loaded.config).await
    }

    pub async fn start_config(config: Config) -> TestGateway {
        let threads = config.server.threads;
        Self::serve_config(config, Some(threads)).await
    }

    /// As a library user's `portcullis::server::serve_live` does: on the test's own runtime.
    pub async fn start_on_caller(toml: &str) -> TestGateway {
        let loaded = Config::from_toml(toml).unwrap_or_else(|e| panic!("config: {e}"));
        Self::serve_config(loaded.config, None).await
    }

    async fn serve_config(config: Config, threads: Option<usize>) -> TestGateway {
        let grace = config.server.shutdown_grace;
        let gateway = stack::build(config).await.expect("build gateway");
        let state = gateway.state.clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = rx.await;
        };
        let live = portcullis::server::Live::new(gateway);
        let handle = match threads {
            None => tokio::spawn(portcullis::server::serve_live(
                listener, live, shutdown, grace,
            )),
            Some(n) => tokio::spawn(portcullis::server::serve_threads(
                listener, live, shutdown, grace, n,
            )),
        };
        TestGateway {
            addr,
            state,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Signal shutdown; returns whether in-flight requests drained within the grace period.
    pub async fn shutdown(mut self) -> bool {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.handle.take() {
            Some(h) => h.await.expect("server task").expect("server io"),
            None => true,
        }
    }

    /// Send the shutdown signal without waiting.
    pub fn signal_shutdown(&mut self) -> JoinHandle<std::io::Result<bool>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.handle.take().expect("already shut down")
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

/// TOML for a gateway with one upstream `mock` at `mock_url` serving every model.
pub fn mock_config(mock_url: &str, extra: &str) -> String {
    format!(
        r#"
[[upstreams]]
name = "mock"
base_url = "{mock_url}"
auth = "passthrough"

[[models]]
name = "*"
upstream = "mock"

{extra}
"#
    )
}

#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub async fn send(
    method: Method,
    url: &str,
    body: impl Into<Bytes>,
    headers: &[(&str, &str)],
) -> Resp {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = client()
        .request(b.body(Full::new(body.into())).unwrap())
        .await
        .expect("request");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Resp {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn post_json(url: &str, body: &serde_json::Value, headers: &[(&str, &str)]) -> Resp {
    let mut h = vec![("content-type", "application/json")];
    h.extend_from_slice(headers);
    send(Method::POST, url, body.to_string(), &h).await
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> Resp {
    send(Method::GET, url, Bytes::new(), headers).await
}

/// A streamed response: status, headers and each data chunk with the time it arrived.
pub struct Streamed {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub chunks: Vec<(Instant, Bytes)>,
}

impl Streamed {
    pub fn text(&self) -> String {
        self.chunks
            .iter()
            .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
            .collect()
    }
}

pub async fn post_stream(
    url: &str,
    body: &serde_json::Value,
    headers: &[(&str, &str)],
) -> Streamed {
    let mut b = Request::builder()
        .method(Method::POST)
        .uri(url)
        .header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = client()
        .request(b.body(Full::new(Bytes::from(body.to_string()))).unwrap())
        .await
        .expect("request");
    let (parts, mut body) = resp.into_parts();
    let mut chunks = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("frame");
        if let Ok(d) = frame.into_data() {
            chunks.push((Instant::now(), d));
        }
    }
    Streamed {
        status: parts.status,
        headers: parts.headers,
        chunks,
    }
}

pub fn chat(model: &str) -> serde_json::Value {
    serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": "Hello"}]
    })
}

pub fn messages(model: &str) -> serde_json::Value {
    serde_json::json!({
        "model": model,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "Hello"}]
    })
}

/// Poll `f` until it returns true or `timeout` passes.
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}
