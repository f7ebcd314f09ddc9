//! Run with: cargo run --release --example passthrough_proxy -- LISTEN_ADDR UPSTREAM_URL
//!
//! The reference for one proxy hop in the load benchmark (benches/load.sh): a minimal hyper
//! pass-through proxy with a pooled client, no parsing, no layers. portcullis is measured
//! against it, so its numbers say what the layers cost beyond forwarding itself.

use std::net::SocketAddr;

use http::{Request, Uri};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::net::TcpListener;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn forward(
    client: Client<HttpConnector, Incoming>,
    upstream: Uri,
    mut req: Request<Incoming>,
) -> Result<http::Response<Incoming>, BoxError> {
    let mut parts = upstream.into_parts();
    parts.path_and_query = req.uri().path_and_query().cloned();
    *req.uri_mut() = Uri::from_parts(parts)?;
    req.headers_mut().remove(http::header::HOST);
    // An HTTP/2 client's request goes upstream over the pool's HTTP/1.1 connections.
    *req.version_mut() = http::Version::HTTP_11;
    Ok(client.request(req).await?)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args.next().unwrap_or("127.0.0.1:9102".into()).parse()?;
    let upstream: Uri = args
        .next()
        .unwrap_or("http://127.0.0.1:9101".into())
        .parse()?;
    // No subscriber at all would send h2's spans to `log` (tracing's `log` feature is on in
    // this workspace): ~8k instructions per HTTP/2 request that a proxy built on its own
    // does not pay. A subscriber that wants nothing turns them off where they are made.
    tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::default())?;
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build_http();
    let listener = TcpListener::bind(listen).await?;
    println!("passthrough proxy listening on http://{listen} -> {upstream}");
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| forward(client.clone(), upstream.clone(), req));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
