//! What tracing costs: requests/s through the real binary, in one run, with no OTLP endpoint,
//! with an endpoint that accepts every export, and with an endpoint where nothing listens.
//!
//! Run with: `cargo bench -p portcullis --bench tracing_overhead` (env `BENCH_SECS` sets the
//! measured seconds per case, default 5; `BENCH_CONCURRENCY` the parallel clients, default 16;
//! `BENCH_BIN` another build of the gateway to run instead of this one).
//!
//! The upstream is the in-process mock, the collector an in-process OTLP/HTTP sink that
//! answers 200 and counts the bytes it receives (so the "endpoint" case provably exports).
//! Logs are at `warn` in every case: this measures spans, not log lines.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use portcullis_mock::MockUpstream;

struct Gateway {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_gateway(mock_url: &str, otlp_endpoint: &str) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("portcullis.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[[upstreams]]
name = "mock"
base_url = "{mock_url}"
auth = "passthrough"

[[models]]
name = "*"
upstream = "mock"

[telemetry]
otlp_endpoint = "{otlp_endpoint}"
"#
        ),
    )
    .unwrap();
    // BENCH_BIN: another build of the gateway (an A/B of a change), else the one built here.
    let bin =
        std::env::var_os("BENCH_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_portcullis").into());
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, _) in std::env::vars() {
        if k.starts_with("OTEL_") || k.starts_with("PORTCULLIS_") {
            cmd.env_remove(k);
        }
    }
    // Only the start line (info, from portcullis::cli) is read; the down collector's export
    // errors are silenced so the output stays a table.
    cmd.env(
        "RUST_LOG",
        "warn,portcullis::cli=info,opentelemetry_sdk=off,opentelemetry-otlp=off",
    );
    let mut child = cmd.spawn().expect("start portcullis");
    let stdout = child.stdout.take().expect("piped stdout");
    let found = Arc::new(Mutex::new(None::<String>));
    {
        let found = found.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(i) = line.find("listening on http://") {
                    let addr: String = line[i + 20..]
                        .chars()
                        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                        .collect();
                    *found.lock().unwrap() = Some(addr);
                }
            }
        });
    }
    // Owned by a Gateway from here on, so it is reaped whatever happens.
    let mut gw = Gateway {
        child,
        addr: String::new(),
        _dir: dir,
    };
    let start = Instant::now();
    loop {
        if let Some(addr) = found.lock().unwrap().clone() {
            gw.addr = addr;
            return gw;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "portcullis did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An OTLP/HTTP receiver that accepts everything.
async fn start_sink(received: Arc<AtomicU64>) -> SocketAddr {
    use axum::{body::Bytes as AxBytes, routing::post, Router};
    let app = Router::new().route(
        "/v1/traces",
        post(move |body: AxBytes| {
            let received = received.clone();
            async move {
                received.fetch_add(body.len() as u64, Ordering::Relaxed);
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

struct Measured {
    rps: f64,
    p50: Duration,
    p99: Duration,
}

async fn load(url: &str, concurrency: usize, secs: u64) -> Measured {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let body = Bytes::from(
        serde_json::json!({
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "Hello there"}]
        })
        .to_string(),
    );
    let run = |dur: Duration| {
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let client = client.clone();
            let body = body.clone();
            let url = url.to_string();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let end = Instant::now() + dur;
                while Instant::now() < end {
                    let t = Instant::now();
                    let req = Request::post(&url)
                        .header("content-type", "application/json")
                        .body(Full::new(body.clone()))
                        .unwrap();
                    let resp = client.request(req).await.expect("request");
                    assert_eq!(resp.status(), 200);
                    resp.into_body().collect().await.expect("body");
                    lat.push(t.elapsed());
                }
                lat
            }));
        }
        tasks
    };
    // Warm up: connections, the gateway's pools, the exporter's first batch.
    for t in run(Duration::from_secs(1)) {
        t.await.unwrap();
    }
    let start = Instant::now();
    let mut all = Vec::new();
    for t in run(Duration::from_secs(secs)) {
        all.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Measured {
        rps: all.len() as f64 / elapsed,
        p50: pct(0.5),
        p99: pct(0.99),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing useful: in that case
    // run a very short smoke version so the target stays compiled and working.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if smoke { 1 } else { 5 });
    let concurrency: usize = std::env::var("BENCH_CONCURRENCY")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mock = MockUpstream::start().await.unwrap();
        mock.set_recording(false);
        let received = Arc::new(AtomicU64::new(0));
        let sink = start_sink(received.clone()).await;
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let cases = [
            ("no endpoint", String::new()),
            ("endpoint (collector up)", format!("http://{sink}")),
            ("endpoint (collector down)", format!("http://127.0.0.1:{dead}")),
        ];
        println!(
            "tracing_overhead: {concurrency} clients, {secs} s per case, non-streaming chat via the mock upstream"
        );
        println!(
            "{:<28} {:>12} {:>10} {:>10}",
            "case", "requests/s", "p50", "p99"
        );
        let mut base = None;
        for (name, endpoint) in cases {
            let before = received.load(Ordering::Relaxed);
            let url = mock.url();
            let gw = tokio::task::spawn_blocking(move || start_gateway(&url, &endpoint))
                .await
                .unwrap();
            let r = load(
                &format!("http://{}/v1/chat/completions", gw.addr),
                concurrency,
                secs,
            )
            .await;
            drop(gw); // SIGTERM: flushes what is left
            let exported = received.load(Ordering::Relaxed) - before;
            let base_rps = *base.get_or_insert(r.rps);
            println!(
                "{:<28} {:>12.0} {:>10.2?} {:>10.2?}   ({:+.1}% vs no endpoint; {} KiB exported)",
                name,
                r.rps,
                r.p50,
                r.p99,
                (r.rps / base_rps - 1.0) * 100.0,
                exported / 1024
            );
        }
    });
}
