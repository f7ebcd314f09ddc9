//! Hot reload end to end over real sockets: `POST /admin/reload` against the reloader that
//! `portcullis serve` runs (in process, over `server::serve_live`), and `SIGHUP` on the real
//! binary. The config lives in a file that each test rewrites.

mod support;

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use portcullis::{
    config::{Config, Overrides},
    reload::Reloader,
};
use portcullis_mock::{MockResponse, MockUpstream};
use support::*;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tokio_tungstenite::tungstenite::Message;

/// A gateway serving the config in its own file, reloadable with `POST /admin/reload`.
struct Reloading {
    addr: std::net::SocketAddr,
    path: PathBuf,
    _dir: tempfile::TempDir,
    // The admin endpoint holds the reloader weakly, as `serve` does.
    _reloader: Arc<Reloader>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: JoinHandle<std::io::Result<bool>>,
}

impl Reloading {
    async fn start(toml: &str) -> Reloading {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("portcullis.toml");
        std::fs::write(&path, toml).unwrap();
        let loaded = Config::load(Some(&path), &Overrides::default())
            .unwrap_or_else(|e| panic!("config: {e}"));
        let reloader = Reloader::start(loaded.config, loaded.source, Overrides::default())
            .await
            .expect("build gateway");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(portcullis::server::serve_live(
            listener,
            reloader.live(),
            async move {
                let _ = rx.await;
            },
            Duration::from_secs(5),
        ));
        Reloading {
            addr,
            path,
            _dir: dir,
            _reloader: reloader,
            shutdown: Some(tx),
            handle,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn write(&self, toml: &str) {
        std::fs::write(&self.path, toml).unwrap();
    }

    async fn reload(&self) -> Resp {
        self.reload_with(&[]).await
    }

    async fn reload_with(&self, headers: &[(&str, &str)]) -> Resp {
        send(
            Method::POST,
            &self.url("/admin/reload"),
            Bytes::new(),
            headers,
        )
        .await
    }

    /// Write `toml` and reload; the reload must succeed.
    async fn apply(&self, toml: &str) -> serde_json::Value {
        self.write(toml);
        let r = self.reload().await;
        assert_eq!(r.status, StatusCode::OK, "reload refused: {}", r.text());
        r.json()
    }

    async fn chat(&self, model: &str, headers: &[(&str, &str)]) -> Resp {
        post_json(&self.url("/v1/chat/completions"), &chat(model), headers).await
    }
}

impl Drop for Reloading {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.handle.abort();
    }
}

/// One upstream `main` at `url` and the `[[models]]` named, plus `extra` TOML.
fn config(url: &str, models: &[&str], extra: &str) -> String {
    let mut s =
        format!("[[upstreams]]\nname = \"main\"\nbase_url = \"{url}\"\nauth = \"passthrough\"\n\n");
    for m in models {
        s.push_str(&format!(
            "[[models]]\nname = \"{m}\"\nupstream = \"main\"\n\n"
        ));
    }
    s.push_str(extra);
    s
}

#[tokio::test]
async fn a_new_model_and_a_moved_upstream_take_effect_after_post_admin_reload() {
    let (a, b) = (
        MockUpstream::start().await.unwrap(),
        MockUpstream::start().await.unwrap(),
    );
    let gw = Reloading::start(&config(&a.url(), &["gpt-a"], "")).await;
    assert_eq!(gw.chat("gpt-a", &[]).await.status, 200);
    assert_eq!(gw.chat("gpt-new", &[]).await.status, 404);
    assert_eq!(a.request_count(), 1);

    let summary = gw.apply(&config(&b.url(), &["gpt-a", "gpt-new"], "")).await;
    assert_eq!(summary["status"], "reloaded");
    assert_eq!(summary["models"], serde_json::json!(["gpt-a", "gpt-new"]));
    assert_eq!(summary["upstreams"], serde_json::json!(["main"]));
    assert_eq!(summary["restart_required"], serde_json::json!([]));

    let r = gw.chat("gpt-new", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(gw.chat("gpt-a", &[]).await.status, 200);
    assert_eq!(
        b.request_count(),
        2,
        "both models now go to the moved upstream"
    );
    assert_eq!(a.request_count(), 1);
    let health = get(&gw.url("/health/upstreams"), &[]).await.json();
    assert_eq!(health["upstreams"][0]["base_url"], b.url());
}

#[tokio::test]
async fn an_invalid_file_is_refused_with_every_problem_and_the_old_config_keeps_serving() {
    let a = MockUpstream::start().await.unwrap();
    let good = config(&a.url(), &["gpt-a"], "");
    let gw = Reloading::start(&good).await;

    // Problems in several sections, one of them a secret in the wrong shape.
    gw.write(
        r#"
[server]
admin_key = ["sk-live-do-not-echo"]
[[upstreams]]
name = "main"
base_url = "not a url"
[[models]]
name = "gpt-b"
upstream = "nowhere"
[retry]
max_attempts = 0
"#,
    );
    let r = gw.reload().await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    assert_eq!(r.header("x-portcullis-error"), Some("invalid_config"));
    assert!(!r.text().contains("sk-live-do-not-echo"), "{}", r.text());
    let body = r.json();
    assert_eq!(body["error"]["code"], "invalid_config");
    let paths: Vec<String> = body["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap().to_string())
        .collect();
    for want in [
        "server.admin_key",
        "upstreams[0].base_url",
        "models[0].upstream",
        "retry.max_attempts",
    ] {
        assert!(
            paths.iter().any(|p| p == want),
            "{want} missing from {paths:?}"
        );
    }
    assert!(body["problems"][0]["message"].is_string());

    // A syntax error: refused too, without quoting the line (it may hold a secret).
    gw.write("[server]\nadmin_key = \"sk-live-broken-line\n");
    let r = gw.reload().await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(!r.text().contains("sk-live-broken-line"), "{}", r.text());
    assert!(!r.json()["problems"].as_array().unwrap().is_empty());

    // A missing file.
    std::fs::remove_file(&gw.path).unwrap();
    assert_eq!(gw.reload().await.status, 422);

    // The running config serves on, unchanged.
    assert_eq!(gw.chat("gpt-a", &[]).await.status, 200);
    assert_eq!(gw.chat("gpt-b", &[]).await.status, 404);
    assert_eq!(a.request_count(), 1);

    // And the next valid file is taken.
    gw.apply(&config(&a.url(), &["gpt-a", "gpt-b"], "")).await;
    assert_eq!(gw.chat("gpt-b", &[]).await.status, 200);
}

#[tokio::test]
async fn post_admin_reload_is_guarded_like_the_other_admin_endpoints() {
    let a = MockUpstream::start().await.unwrap();
    let toml = config(&a.url(), &["*"], "[server]\nadmin_key = \"adm-1\"\n");
    let gw = Reloading::start(&toml).await;
    for (headers, status) in [
        (&[][..], 401),
        (&[("authorization", "Bearer wrong")][..], 401),
        (&[("authorization", "Bearer adm-1")][..], 200),
    ] {
        let usage = send(Method::GET, &gw.url("/admin/usage"), Bytes::new(), headers).await;
        assert_eq!(usage.status, status);
        let r = gw.reload_with(headers).await;
        assert_eq!(r.status, status, "{}", r.text());
    }
    // The new key guards from the reload on.
    gw.write(&config(
        &a.url(),
        &["*"],
        "[server]\nadmin_key = \"adm-2\"\n",
    ));
    assert_eq!(
        gw.reload_with(&[("authorization", "Bearer adm-1")])
            .await
            .status,
        200
    );
    assert_eq!(
        gw.reload_with(&[("authorization", "Bearer adm-1")])
            .await
            .status,
        401
    );
    assert_eq!(
        gw.reload_with(&[("authorization", "Bearer adm-2")])
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn an_open_breaker_stays_open_after_reload() {
    let a = MockUpstream::start().await.unwrap();
    let extra = "[retry]\nenabled = false\n[circuit_breaker]\nfailure_threshold = 2\n\
                 minimum_requests = 1\nopen_timeout = \"10m\"\n";
    let gw = Reloading::start(&config(&a.url(), &["gpt-a"], extra)).await;
    a.push_n(2, MockResponse::status(503));
    for _ in 0..2 {
        assert_eq!(gw.chat("gpt-a", &[]).await.status, 503);
    }
    let r = gw.chat("gpt-a", &[]).await;
    assert_eq!(r.header("x-portcullis-error"), Some("circuit_open"));

    gw.apply(&config(&a.url(), &["gpt-a", "gpt-b"], extra))
        .await;
    for model in ["gpt-a", "gpt-b"] {
        let r = gw.chat(model, &[]).await;
        assert_eq!(r.status, 503);
        assert_eq!(r.header("x-portcullis-error"), Some("circuit_open"));
    }
    assert_eq!(a.request_count(), 2, "the open breaker let nothing through");
    let health = get(&gw.url("/health/upstreams"), &[]).await.json();
    assert_eq!(health["upstreams"][0]["circuit"], "open");
}

#[tokio::test]
async fn rate_limit_buckets_keep_their_counts_after_reload() {
    let a = MockUpstream::start().await.unwrap();
    // The main limit, keyed globally.
    let extra =
        "[rate_limit]\nenabled = true\nrequests_per_minute = 1\nburst = 2\nkey = \"global\"\n";
    let gw = Reloading::start(&config(&a.url(), &["gpt-a"], extra)).await;
    for want in [200, 200, 429] {
        assert_eq!(gw.chat("gpt-a", &[]).await.status, want);
    }
    gw.apply(&config(&a.url(), &["gpt-a", "gpt-b"], extra))
        .await;
    assert_eq!(gw.chat("gpt-b", &[]).await.status, 429);

    // A model's own limit and a gateway key's own limit.
    let with = |models: &str| {
        format!(
            r#"
[[upstreams]]
name = "main"
base_url = "{}"
auth = "passthrough"
{models}
[rate_limit]
enabled = true
requests_per_minute = 6000
burst = 1000
[[keys]]
name = "limited"
key = "k-limited"
rate_limit = {{ requests_per_minute = 1, burst = 1 }}
[[keys]]
name = "free"
key = "k-free"
"#,
            a.url()
        )
    };
    let models = "[[models]]\nname = \"gpt-a\"\nupstream = \"main\"\n\
                  [[models]]\nname = \"gpt-slow\"\nupstream = \"main\"\n\
                  rate_limit = { requests_per_minute = 1, burst = 1 }\n";
    let gw = Reloading::start(&with(models)).await;
    let limited = [("authorization", "Bearer k-limited")];
    let free = [("authorization", "Bearer k-free")];
    assert_eq!(gw.chat("gpt-a", &limited).await.status, 200);
    assert_eq!(gw.chat("gpt-a", &limited).await.status, 429);
    assert_eq!(gw.chat("gpt-slow", &free).await.status, 200);
    assert_eq!(gw.chat("gpt-slow", &free).await.status, 429);
    gw.apply(&with(&format!(
        "{models}[[models]]\nname = \"gpt-b\"\nupstream = \"main\"\n"
    )))
    .await;
    assert_eq!(gw.chat("gpt-b", &limited).await.status, 429, "key bucket");
    assert_eq!(gw.chat("gpt-slow", &free).await.status, 429, "model bucket");
    assert_eq!(gw.chat("gpt-b", &free).await.status, 200);
}

#[tokio::test]
async fn a_cookie_jar_and_the_usage_counters_carry_over() {
    let a = MockUpstream::start().await.unwrap();
    let gw = Reloading::start(&config(&a.url(), &["gpt-a"], "")).await;
    a.push(MockResponse::ok().set_cookie("session=abc; Path=/"));
    assert_eq!(gw.chat("gpt-a", &[]).await.status, 200);

    gw.apply(&config(&a.url(), &["gpt-a", "gpt-b"], "")).await;
    let health = get(&gw.url("/health/upstreams"), &[]).await.json();
    assert_eq!(health["upstreams"][0]["cookies"], 1);
    assert_eq!(gw.chat("gpt-b", &[]).await.status, 200);
    let sent = a.last_request().unwrap();
    assert!(
        sent.header("cookie")
            .is_some_and(|c| c.contains("session=abc")),
        "the jar's cookie went out after the reload: {:?}",
        sent.header("cookie")
    );
    let usage = get(&gw.url("/admin/usage"), &[]).await.json();
    assert_eq!(usage["totals"]["requests"], 2, "{usage}");
}

#[tokio::test]
async fn cookie_autosave_follows_the_reloaded_upstreams() {
    let (a, b) = (
        MockUpstream::start().await.unwrap(),
        MockUpstream::start().await.unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cookies.json");
    let cookies = format!(
        "[cookies]\npersist_path = \"{}\"\nsave_interval = \"20ms\"\n",
        file.display()
    );
    let gw = Reloading::start(&config(&a.url(), &["gpt-a"], &cookies)).await;
    a.push(MockResponse::ok().set_cookie("first=one; Path=/"));
    assert_eq!(gw.chat("gpt-a", &[]).await.status, 200);
    let saved = |what: &'static str| {
        let file = file.clone();
        move || std::fs::read_to_string(&file).is_ok_and(|t| t.contains(what))
    };
    assert!(eventually(Duration::from_secs(10), saved("one")).await);

    // A second upstream arrives with the reload; its jar is saved too, the first one kept.
    gw.apply(&format!(
        "{}[[upstreams]]\nname = \"second\"\nbase_url = \"{}\"\nauth = \"passthrough\"\n\
         [[models]]\nname = \"gpt-b\"\nupstream = \"second\"\n",
        config(&a.url(), &["gpt-a"], &cookies),
        b.url()
    ))
    .await;
    b.push(MockResponse::ok().set_cookie("second=two; Path=/"));
    assert_eq!(gw.chat("gpt-b", &[]).await.status, 200);
    assert!(
        eventually(Duration::from_secs(10), saved("two")).await,
        "the new upstream's jar is saved"
    );
    assert!(saved("one")(), "the first upstream's jar carried over");
}

#[tokio::test]
async fn a_stream_and_a_websocket_opened_before_a_reload_finish_on_the_old_stack() {
    let (a, b) = (
        MockUpstream::start().await.unwrap(),
        MockUpstream::start().await.unwrap(),
    );
    let gw = Reloading::start(&config(&a.url(), &["gpt-a"], "")).await;
    let words: Vec<String> = (0..12).map(|i| format!("w{i}")).collect();
    a.push(
        MockResponse::ok()
            .content(&words.join(" "))
            .chunk_delay(Duration::from_millis(40)),
    );
    let mut body = serde_json::json!({"model": "gpt-a", "stream": true,
        "messages": [{"role": "user", "content": "Hello"}]});
    let resp = client()
        .request(
            Request::post(gw.url("/v1/chat/completions"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.into_body();
    let mut text = String::new();
    while !text.contains("w0") {
        let frame = stream.frame().await.expect("a first event").unwrap();
        if let Ok(d) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&d));
        }
    }
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/v1/realtime?model=gpt-a", gw.addr))
            .await
            .unwrap();
    ws.send(Message::text("before")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("before"));

    gw.apply(&config(&b.url(), &["gpt-a", "gpt-b"], "")).await;

    // The stream goes on from the old upstream, whole and in order.
    let mut after_reload = 0;
    while let Some(frame) = stream.frame().await {
        if let Ok(d) = frame.expect("the stream is not cut").into_data() {
            after_reload += 1;
            text.push_str(&String::from_utf8_lossy(&d));
        }
    }
    assert!(
        after_reload > 0,
        "the stream was still running at the reload"
    );
    let mut at = 0;
    for w in &words {
        at += text[at..]
            .find(&format!("\"{w}"))
            .unwrap_or_else(|| panic!("{w} in {text}"));
    }
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    // The socket too.
    ws.send(Message::text("after")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("after"));
    ws.close(None).await.unwrap();
    assert!(b.requests().iter().all(|r| !r.is_websocket()));

    // New requests go to the new stack.
    body["stream"] = false.into();
    let r = post_json(&gw.url("/v1/chat/completions"), &body, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(b.request_count(), 1);
    assert_eq!(
        a.request_count(),
        2,
        "the stream and the socket's handshake"
    );
}

/// Reload 20 times, alternating the upstream's address and the model list, while clients
/// keep sending (plain and streamed, over kept-alive connections): no request may fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_load_fail_no_request() {
    let (a, b) = (
        MockUpstream::start().await.unwrap(),
        MockUpstream::start().await.unwrap(),
    );
    let versions = [
        config(&a.url(), &["gpt-a"], ""),
        config(&b.url(), &["gpt-a", "gpt-b"], ""),
    ];
    let gw = Arc::new(Reloading::start(&versions[0]).await);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(tokio::sync::Notify::new());
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let clients: Vec<_> = (0..4)
        .map(|task| {
            let (gw, stop, done, progress, failures) = (
                gw.clone(),
                stop.clone(),
                done.clone(),
                progress.clone(),
                failures.clone(),
            );
            tokio::spawn(async move {
                // One client per task: its connections are kept alive across reloads.
                let http = client();
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let streamed = (task + i) % 2 == 0;
                    i += 1;
                    let body = serde_json::json!({"model": "gpt-a", "stream": streamed,
                        "messages": [{"role": "user", "content": "Hello"}]});
                    let req = Request::post(gw.url("/v1/chat/completions"))
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(body.to_string())))
                        .unwrap();
                    let outcome = match http.request(req).await {
                        Ok(resp) => {
                            let status = resp.status();
                            match resp.into_body().collect().await {
                                Ok(b) => {
                                    let text = String::from_utf8_lossy(&b.to_bytes()).into_owned();
                                    let whole = if streamed {
                                        text.contains("data: [DONE]")
                                    } else {
                                        text.contains("Hello from mock")
                                    };
                                    (status == 200 && whole)
                                        .then_some(())
                                        .ok_or(format!("{status}: {text}"))
                                }
                                Err(e) => Err(format!("{status}: body failed: {e}")),
                            }
                        }
                        Err(e) => Err(format!("request failed: {e}")),
                    };
                    if let Err(e) = outcome {
                        failures.lock().unwrap().push(e);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                    progress.notify_waiters();
                }
            })
        })
        .collect();

    let mut took = Vec::new();
    for n in 1..=20 {
        // Some requests between two reloads.
        let target = done.load(Ordering::Relaxed) + 8;
        while done.load(Ordering::Relaxed) < target {
            let wait = progress.notified();
            if done.load(Ordering::Relaxed) >= target {
                break;
            }
            tokio::time::timeout(Duration::from_secs(10), wait)
                .await
                .expect("the clients make progress");
        }
        gw.write(&versions[n % 2]);
        let start = Instant::now();
        let r = gw.reload().await;
        took.push(start.elapsed());
        assert_eq!(r.status, 200, "reload {n}: {}", r.text());
        assert_eq!(r.json()["reloads"], n);
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let failures = failures.lock().unwrap();
    let total = done.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} of {total} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(a.request_count() > 0 && b.request_count() > 0);
    took.sort();
    eprintln!(
        "20 reloads under load: {total} requests, none failed; reload took median {:?}, max {:?}",
        took[took.len() / 2],
        took[took.len() - 1]
    );
}

#[tokio::test]
async fn a_removed_upstreams_health_check_stops_while_the_old_stack_still_serves() {
    let (a, b) = (
        MockUpstream::start().await.unwrap(),
        MockUpstream::start().await.unwrap(),
    );
    let upstream = |name: &str, url: &str| {
        format!(
            "[[upstreams]]\nname = \"{name}\"\nbase_url = \"{url}\"\nauth = \"passthrough\"\n\
             health_check = {{ path = \"/v1/models\", interval = \"40ms\" }}\n"
        )
    };
    let model = "[[models]]\nname = \"*\"\nupstream = \"kept\"\n";
    let both = format!(
        "{}{}{model}",
        upstream("kept", &a.url()),
        upstream("gone", &b.url())
    );
    let gw = Reloading::start(&both).await;
    assert!(eventually(Duration::from_secs(10), || b.request_count() >= 2).await);
    // A slow stream keeps the old stack alive through the reload.
    a.push(
        MockResponse::ok()
            .content("one two three four five six seven eight nine ten")
            .chunk_delay(Duration::from_millis(100)),
    );
    let body = serde_json::json!({"model": "m", "stream": true,
        "messages": [{"role": "user", "content": "Hello"}]});
    let resp = client()
        .request(
            Request::post(gw.url("/v1/chat/completions"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
                .unwrap(),
        )
        .await
        .unwrap();
    let mut stream = resp.into_body();
    stream.frame().await.unwrap().unwrap();

    gw.apply(&format!("{}{model}", upstream("kept", &a.url())))
        .await;
    let checked = b.request_count();
    let from = a.request_count();
    // Several of the kept upstream's checks later, the removed one has had none (one may have
    // been under way at the swap).
    assert!(eventually(Duration::from_secs(10), || a.request_count() >= from + 5).await);
    assert!(
        b.request_count() <= checked + 1,
        "{} checks after the removal",
        b.request_count() - checked
    );
    assert!(
        stream.frame().await.is_some(),
        "the old stack was still serving the stream"
    );
}

// === SIGHUP on the real binary ===

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// The binary's log lines, as they come.
struct Child {
    child: std::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Child {
    /// Wait for a log line containing `what`.
    async fn line(&mut self, what: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(l)) if l.contains(what) => return l,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => panic!("no log line with {what:?}"),
            }
        }
    }

    fn hup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_real_binary_and_reopens_the_audit_log() {
    let a = MockUpstream::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let audit = dir.path().join("audit.jsonl");
    let with_audit = |toml: String| format!("{toml}[audit]\npath = \"{}\"\n", audit.display());
    std::fs::write(&path, with_audit(config(&a.url(), &["gpt-a"], ""))).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir.path())
        .env_remove("PORTCULLIS_CONFIG")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut child = Child { child, lines };
    child.line("listening on").await;
    let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    assert_eq!(post_json(&url, &chat("gpt-a"), &[]).await.status, 200);
    assert_eq!(post_json(&url, &chat("gpt-new"), &[]).await.status, 404);

    // logrotate moves the audit log away, and the config gains a model.
    let rotated = dir.path().join("audit.jsonl.1");
    assert!(eventually(Duration::from_secs(10), || audit.exists()).await);
    std::fs::rename(&audit, &rotated).unwrap();
    std::fs::write(
        &path,
        with_audit(config(&a.url(), &["gpt-a", "gpt-new"], "")),
    )
    .unwrap();
    child.hup();
    child.line("configuration reloaded").await;
    assert_eq!(post_json(&url, &chat("gpt-new"), &[]).await.status, 200);
    // The line of that request went to a new file at the configured path.
    assert!(
        eventually(Duration::from_secs(10), || std::fs::read_to_string(&audit)
            .is_ok_and(|t| t.contains("gpt-new")))
        .await,
        "the audit log was reopened"
    );

    // An invalid file: refused, logged with its problems, the running config serves on.
    std::fs::write(&path, "[retry]\nmax_attempts = 0\n").unwrap();
    child.hup();
    let problem = child.line("retry.max_attempts").await;
    assert!(problem.contains("must be >= 1"), "{problem}");
    child.line("configuration reload refused").await;
    assert_eq!(post_json(&url, &chat("gpt-new"), &[]).await.status, 200);
    assert_eq!(a.request_count(), 3);
}

/// Each connection keeps its own instance of the proxy stack between its requests: a reload
/// must reach a keep-alive connection's next request all the same.
#[tokio::test]
async fn a_keep_alive_connection_takes_the_reloaded_stack_at_its_next_request() {
    let (a, b) = (
        MockUpstream::start().await.unwrap(),
        MockUpstream::start().await.unwrap(),
    );
    let gw = Reloading::start(&config(&a.url(), &["gpt-a"], "")).await;
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let chat_request = || {
        Request::post(gw.url("/v1/chat/completions"))
            .header("host", gw.addr.to_string())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(chat("gpt-a").to_string())))
            .unwrap()
    };
    let mut status_of = async |req: Request<Full<Bytes>>| {
        sender.ready().await.unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status();
        resp.into_body().collect().await.unwrap();
        status
    };
    for _ in 0..2 {
        assert_eq!(status_of(chat_request()).await, 200);
    }
    assert_eq!(a.request_count(), 2);

    gw.write(&config(&b.url(), &["gpt-a"], ""));
    let reload = Request::post(gw.url("/admin/reload"))
        .header("host", gw.addr.to_string())
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(status_of(reload).await, 200);
    assert_eq!(status_of(chat_request()).await, 200);
    assert_eq!(b.request_count(), 1, "the same connection, the new stack");
    assert_eq!(a.request_count(), 2);
    assert!(!conn.is_finished(), "one connection throughout");
}
