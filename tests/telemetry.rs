//! Observability end to end: traces exported over OTLP/HTTP to a real receiver (Arize Phoenix,
//! started here from the venv `.ci/telemetry-setup.sh` makes), their parent/child links and
//! GenAI attributes; JSON access logs; no secret anywhere; `/metrics` read with an independent
//! Prometheus parser; a dead or hanging collector leaving requests alone.
//!
//! The gateway runs as the real binary (one global subscriber per process, and `init()` is
//! what is under test) against the in-process mock upstream.

#[path = "support/python.rs"]
mod python;
mod support;

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    net::TcpListener as StdListener,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use portcullis_mock::{MockResponse, MockUpstream};
use serde_json::{json, Value};
use support::{get, mock_config, post_json, post_stream, TestGateway};

// === The binary ===

/// `portcullis serve` on a free port with a config file, its stdout and stderr collected.
struct Binary {
    child: Child,
    addr: String,
    lines: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Binary {
    fn start(config: &str, env: &[(&str, &str)]) -> Binary {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("portcullis.toml");
        std::fs::write(&path, config).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&path)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Hermetic: nothing from the developer's shell steers the gateway.
        for (k, _) in std::env::vars() {
            if k.starts_with("OTEL_") || k.starts_with("PORTCULLIS_") || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        cmd.env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start the portcullis binary");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    lines.lock().unwrap().push(line);
                }
            });
        }
        let start = Instant::now();
        let addr = loop {
            let found = lines.lock().unwrap().iter().find_map(|l| {
                let i = l.find("listening on http://")?;
                let rest = &l[i + "listening on http://".len()..];
                Some(
                    rest.chars()
                        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                        .collect::<String>(),
                )
            });
            if let Some(a) = found {
                break a;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "portcullis exited ({status}) before listening:\n{}",
                    lines.lock().unwrap().join("\n")
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "portcullis did not start:\n{}",
                lines.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Binary {
            child,
            addr,
            lines,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn logs(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// SIGTERM (the guard flushes spans on the way out) and wait, at most `limit`.
    fn stop(&mut self, limit: Duration) -> ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader threads drain the pipes.
                std::thread::sleep(Duration::from_millis(100));
                return status;
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                panic!(
                    "portcullis did not exit within {limit:?} of SIGTERM:\n{}",
                    self.logs().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One chat completion through `gw` per request id, in turn, each answered 200.
async fn chats(gw: &Binary, ids: &[&str]) {
    for id in ids {
        let resp = post_json(
            &gw.url("/v1/chat/completions"),
            &support::chat("gpt-4o-mini"),
            &[("x-request-id", id)],
        )
        .await;
        assert_eq!(resp.status, 200, "{id}");
    }
}

/// The JSON access-log lines (`target = portcullis::access`) among `lines`.
fn access_lines(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "portcullis::access")
        .collect()
}

// === Phoenix ===

/// Arize Phoenix on free ports with its own working directory; killed when dropped.
struct Phoenix {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Phoenix {
    /// Start it and wait until it answers (its first start in a fresh venv takes a while).
    fn start() -> Phoenix {
        let venv = python::venv_with(&["arize-phoenix"]);
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = dir.path().join("phoenix.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(python::bin(&venv, "phoenix"))
            .arg("serve")
            .env("PHOENIX_HOST", "127.0.0.1")
            .env("PHOENIX_PORT", port.to_string())
            .env("PHOENIX_GRPC_PORT", free_port().to_string())
            .env("PHOENIX_WORKING_DIR", dir.path())
            .env("PHOENIX_TELEMETRY_ENABLED", "false")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start phoenix");
        let mut phoenix = Phoenix {
            child,
            port,
            log,
            _dir: dir,
        };
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = phoenix.child.try_wait() {
                panic!("phoenix exited ({status}):\n{}", phoenix.log_tail());
            }
            if http_get_blocking(port, "/healthz").is_some_and(|(s, _)| s == 200) {
                return phoenix;
            }
            assert!(
                start.elapsed() < Duration::from_secs(300),
                "phoenix did not become ready in 300 s:\n{}",
                phoenix.log_tail()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Every span Phoenix has stored, newest first.
    fn spans(&self) -> Vec<Value> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = "/v1/projects/default/spans?limit=1000".to_string();
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let Some((200, body)) = http_get_blocking(self.port, &path) else {
                return all;
            };
            let v: Value = serde_json::from_str(&body).expect("phoenix spans JSON");
            all.extend(v["data"].as_array().cloned().unwrap_or_default());
            match v["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return all,
            }
        }
    }
}

impl Drop for Phoenix {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tiny blocking HTTP/1.0 GET (Phoenix's readiness and query API), `None` if unreachable.
fn http_get_blocking(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nAccept: application/json\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    // Phoenix returns attributes flat (`"gen_ai.system": ...`) or nested by dots; accept both.
    if let Some(v) = span["attributes"].get(key) {
        return v;
    }
    let mut v = &span["attributes"];
    for part in key.split('.') {
        v = &v[part];
    }
    v
}

fn span_id(span: &Value) -> &str {
    span["context"]["span_id"].as_str().unwrap_or("")
}

fn trace_of(span: &Value) -> &str {
    span["context"]["trace_id"].as_str().unwrap_or("")
}

fn children<'a>(spans: &'a [Value], parent: &Value) -> Vec<&'a Value> {
    let id = span_id(parent);
    spans
        .iter()
        .filter(|s| s["parent_id"].as_str() == Some(id))
        .collect()
}

/// `usage` of the last SSE `data:` event that has one.
fn stream_usage(text: &str) -> Value {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v.get("usage")
                .filter(|u| !u.is_null())
                .cloned()
                .or_else(|| v.pointer("/message/usage").cloned())
        })
        .fold(json!({}), |mut acc, u| {
            for (k, v) in u.as_object().unwrap() {
                acc[k] = v.clone();
            }
            acc
        })
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";
const KEY_MARKER: &str = "sk-secret-XYZ-4242";
const XKEY_MARKER: &str = "xkey-secret-5151";
const CLIENT_COOKIE_MARKER: &str = "client-cookie-6161";
const UPSTREAM_COOKIE_MARKER: &str = "upstream-cookie-7171";
const PROMPT_MARKER: &str = "prompt-text-8181";

fn secret_headers(traceparent: &str, request_id: &str) -> Vec<(&'static str, String)> {
    vec![
        ("authorization", format!("Bearer {KEY_MARKER}")),
        ("x-api-key", XKEY_MARKER.to_string()),
        ("cookie", format!("session={CLIENT_COOKIE_MARKER}")),
        ("traceparent", traceparent.to_string()),
        ("x-request-id", request_id.to_string()),
        ("user-agent", "telemetry-test/1.0".to_string()),
    ]
}

fn as_refs<'a>(h: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    h.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn gateway_config(mock_url: &str, telemetry: &str) -> String {
    format!(
        r#"
[[upstreams]]
name = "mock"
base_url = "{mock_url}"
auth = "passthrough"

[[models]]
name = "gpt-4o-mini"
upstream = "mock"
model = "gpt-4o-mini-2024-07-18"

[[models]]
name = "*"
upstream = "mock"

[retry]
base_delay = "10ms"

[telemetry]
{telemetry}
"#
    )
}

fn assert_no_secret(what: &str, text: &str) {
    for marker in [
        KEY_MARKER,
        XKEY_MARKER,
        CLIENT_COOKIE_MARKER,
        UPSTREAM_COOKIE_MARKER,
        PROMPT_MARKER,
    ] {
        assert!(
            !text.contains(marker),
            "{what} contains the secret or prompt marker {marker:?}"
        );
    }
}

// === Tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_reach_phoenix_with_links_genai_attributes_and_no_secrets() {
    let phoenix = tokio::task::spawn_blocking(Phoenix::start).await.unwrap();
    let mock = MockUpstream::start().await.unwrap();
    mock.set_default(Some(
        MockResponse::ok().set_cookie(&format!("mocksid={UPSTREAM_COOKIE_MARKER}; Path=/")),
    ));
    let config = gateway_config(
        &mock.url(),
        &format!(
            "log_format = \"json\"\notlp_endpoint = \"{}\"\nservice_name = \"portcullis-e2e\"",
            phoenix.endpoint()
        ),
    );
    // Debug logs too must not leak secrets.
    let mut gw = tokio::task::spawn_blocking(move || {
        Binary::start(
            &config,
            &[("RUST_LOG", "debug"), ("OTEL_BSP_SCHEDULE_DELAY", "200")],
        )
    })
    .await
    .unwrap();

    let prompt = |model: &str, stream: bool| {
        let mut b = json!({
            "model": model,
            "messages": [{"role": "user", "content": format!("Say hi {PROMPT_MARKER}")}],
        });
        if stream {
            b["stream"] = json!(true);
            b["stream_options"] = json!({"include_usage": true});
        }
        b
    };

    // 1. Plain, continuing the client's trace.
    let tp = format!("00-{TRACE}-{PARENT}-01");
    let h = secret_headers(&tp, "req-plain");
    let plain = post_json(
        &gw.url("/v1/chat/completions"),
        &prompt("gpt-4o-mini", false),
        &as_refs(&h),
    )
    .await;
    assert_eq!(plain.status, 200, "{}", plain.text());
    let plain_usage = plain.json()["usage"].clone();
    let upstream_tp = mock.requests()[0]
        .header("traceparent")
        .expect("traceparent sent upstream")
        .to_string();

    // 2. OpenAI stream with the final usage chunk (the mock's cookie now goes upstream too).
    let h = secret_headers("", "req-stream");
    let h: Vec<_> = h.into_iter().filter(|(k, _)| *k != "traceparent").collect();
    let streamed = post_stream(
        &gw.url("/v1/chat/completions"),
        &prompt("gpt-4o-mini", true),
        &as_refs(&h),
    )
    .await;
    assert_eq!(streamed.status, 200);
    let stream_usage_v = stream_usage(&streamed.text());
    assert!(
        stream_usage_v["prompt_tokens"].is_u64(),
        "{}",
        streamed.text()
    );
    let sent_cookie = mock.last_request().unwrap();
    assert!(
        sent_cookie
            .header("cookie")
            .is_some_and(|c| c.contains(UPSTREAM_COOKIE_MARKER)),
        "the upstream's cookie must go back to it (so the secret check below means something)"
    );

    // 3. Anthropic stream: usage from message_start and message_delta.
    let h = secret_headers("", "req-anthropic");
    let h: Vec<_> = h.into_iter().filter(|(k, _)| *k != "traceparent").collect();
    let anthropic = post_stream(
        &gw.url("/v1/messages"),
        &json!({
            "model": "claude-3-5-haiku-latest",
            "max_tokens": 64,
            "stream": true,
            "messages": [{"role": "user", "content": format!("Hello {PROMPT_MARKER}")}],
        }),
        &as_refs(&h),
    )
    .await;
    assert_eq!(anthropic.status, 200);
    let anthropic_usage = stream_usage(&anthropic.text());

    // 4. A retried request: two attempts under one request span.
    mock.push(MockResponse::status(503));
    let h = secret_headers("", "req-retry");
    let h: Vec<_> = h.into_iter().filter(|(k, _)| *k != "traceparent").collect();
    let retried = post_json(
        &gw.url("/v1/chat/completions"),
        &prompt("gpt-4o-mini", false),
        &as_refs(&h),
    )
    .await;
    assert_eq!(retried.status, 200);
    assert_eq!(retried.header("x-portcullis-attempts"), Some("2"));

    let status = tokio::task::spawn_blocking(move || {
        let s = gw.stop(Duration::from_secs(20));
        (s, gw)
    })
    .await
    .unwrap();
    assert!(status.0.success(), "exit status {}", status.0);
    let gw = status.1;

    // Ingestion is asynchronous: wait for the four request spans and their children.
    let phoenix = Arc::new(phoenix);
    let p = phoenix.clone();
    let spans = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        loop {
            let spans = p.spans();
            let servers = ["req-plain", "req-stream", "req-anthropic", "req-retry"]
                .iter()
                .filter(|id| spans.iter().any(|s| attr(s, "request_id") == **id))
                .count();
            // 3 requests x (server, attempt, client) + the retried one's server and 2 x 2.
            if servers == 4 && spans.len() >= 14 {
                return spans;
            }
            if start.elapsed() > Duration::from_secs(60) {
                panic!(
                    "phoenix has {} spans after 60 s: {}\n{}",
                    spans.len(),
                    serde_json::to_string_pretty(&spans).unwrap(),
                    p.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    })
    .await
    .unwrap();

    let by_request_id = |id: &str| -> &Value {
        spans
            .iter()
            .find(|s| attr(s, "request_id") == id)
            .unwrap_or_else(|| {
                panic!(
                    "no span with request_id {id}: {}",
                    serde_json::to_string_pretty(&spans).unwrap()
                )
            })
    };
    let upstream_spans = |server: &Value| -> Vec<&Value> {
        // request -> upstream_attempt (retry layer) -> upstream client span
        children(&spans, server)
            .into_iter()
            .filter(|s| s["name"] == "upstream_attempt")
            .flat_map(|a| children(&spans, a))
            .collect()
    };

    // The plain request: a server span continuing the client's trace, GenAI attributes.
    let server = by_request_id("req-plain");
    assert_eq!(trace_of(server), TRACE);
    assert_eq!(server["parent_id"].as_str(), Some(PARENT));
    assert_eq!(server["name"], "POST /v1/chat/completions");
    // Phoenix reports OpenInference kinds: "LLM" means it read our GenAI attributes.
    assert_eq!(server["span_kind"], "LLM", "{server}");
    assert_eq!(attr(server, "http.request.method"), "POST");
    assert_eq!(attr(server, "http.response.status_code"), 200);
    assert_eq!(attr(server, "gen_ai.system"), "openai");
    assert_eq!(attr(server, "gen_ai.operation.name"), "chat");
    assert_eq!(attr(server, "gen_ai.request.model"), "gpt-4o-mini");
    assert_eq!(
        attr(server, "gen_ai.response.model"),
        "gpt-4o-mini-2024-07-18"
    );
    assert_eq!(
        attr(server, "gen_ai.usage.input_tokens"),
        &plain_usage["prompt_tokens"]
    );
    assert_eq!(
        attr(server, "gen_ai.usage.output_tokens"),
        &plain_usage["completion_tokens"]
    );
    assert_eq!(attr(server, "portcullis.upstream"), "mock");
    assert_eq!(attr(server, "portcullis.attempts"), 1);
    assert_eq!(attr(server, "portcullis.user_id"), "default");
    let clients = upstream_spans(server);
    assert_eq!(clients.len(), 1, "one client span per attempt");
    let client = clients[0];
    assert_eq!(client["name"], "POST /v1/chat/completions");
    assert_eq!(trace_of(client), TRACE);
    assert_eq!(attr(client, "http.response.status_code"), 200);
    assert_eq!(attr(client, "portcullis.upstream"), "mock");
    // The upstream request carried our client span as its parent, in the client's trace.
    assert_eq!(
        upstream_tp,
        format!("00-{TRACE}-{}-01", span_id(client)),
        "traceparent sent upstream"
    );

    // The OpenAI stream: usage from the final chunk, the span ended with the stream.
    let server = by_request_id("req-stream");
    assert_ne!(trace_of(server), TRACE, "no traceparent: a new trace");
    assert_eq!(attr(server, "portcullis.stream"), true);
    assert_eq!(
        attr(server, "gen_ai.usage.input_tokens"),
        &stream_usage_v["prompt_tokens"]
    );
    assert_eq!(
        attr(server, "gen_ai.usage.output_tokens"),
        &stream_usage_v["completion_tokens"]
    );
    assert_eq!(
        attr(server, "gen_ai.response.model"),
        "gpt-4o-mini-2024-07-18"
    );
    assert_eq!(upstream_spans(server).len(), 1);

    // The Anthropic stream.
    let server = by_request_id("req-anthropic");
    assert_eq!(server["name"], "POST /v1/messages");
    assert_eq!(attr(server, "gen_ai.system"), "anthropic");
    assert_eq!(
        attr(server, "gen_ai.request.model"),
        "claude-3-5-haiku-latest"
    );
    assert_eq!(
        attr(server, "gen_ai.response.model"),
        "claude-3-5-haiku-latest"
    );
    assert_eq!(
        attr(server, "gen_ai.usage.input_tokens"),
        &anthropic_usage["input_tokens"]
    );
    assert_eq!(
        attr(server, "gen_ai.usage.output_tokens"),
        &anthropic_usage["output_tokens"]
    );

    // The retried request: two attempts, the first a 503, and the wait as an event.
    let server = by_request_id("req-retry");
    assert_eq!(attr(server, "portcullis.attempts"), 2);
    let mut statuses: Vec<i64> = upstream_spans(server)
        .iter()
        .map(|c| attr(c, "http.response.status_code").as_i64().unwrap_or(0))
        .collect();
    statuses.sort();
    assert_eq!(statuses, vec![200, 503]);
    let events = serde_json::to_string(&server["events"]).unwrap();
    assert!(
        events.contains("retrying upstream request"),
        "the retry wait is an event on the request span: {events}"
    );

    // No secret, cookie or prompt text in any span, nor in any log line.
    assert_no_secret(
        "the exported spans",
        &serde_json::to_string(&spans).unwrap(),
    );
    let logs = gw.logs();
    assert_no_secret("the logs", &logs.join("\n"));

    // JSON logs: every stdout/stderr line is one JSON object; the access lines carry the fields.
    for l in &logs {
        assert!(
            serde_json::from_str::<Value>(l).is_ok_and(|v| v.is_object()),
            "not a JSON object: {l}"
        );
    }
    let access = access_lines(&logs);
    let line = access
        .iter()
        .find(|v| v["request_id"] == "req-plain")
        .expect("access line for req-plain");
    for field in [
        "method",
        "path",
        "model",
        "upstream",
        "status",
        "latency_ms",
        "attempts",
        "cache",
        "user_id",
        "trace_id",
        "input_tokens",
        "output_tokens",
    ] {
        assert!(line.get(field).is_some(), "{field} missing from {line}");
    }
    assert_eq!(line["trace_id"], TRACE);
    assert_eq!(line["status"], 200);
    assert_eq!(line["model"], "gpt-4o-mini");
    assert_eq!(line["upstream"], "mock");
    assert_eq!(line["user_id"], "default");
    let line = access
        .iter()
        .find(|v| v["request_id"] == "req-retry")
        .unwrap();
    assert_eq!(line["attempts"], 2);
    assert_eq!(
        line["trace_id"].as_str(),
        Some(trace_of(by_request_id("req-retry")))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_trace_context_still_flows_and_logs_carry_it() {
    let mock = MockUpstream::start().await.unwrap();
    let config = gateway_config(&mock.url(), "log_format = \"json\"");
    let mut gw = tokio::task::spawn_blocking(move || Binary::start(&config, &[]))
        .await
        .unwrap();
    let tp = format!("00-{TRACE}-{PARENT}-01");
    let resp = post_json(
        &gw.url("/v1/chat/completions"),
        &support::chat("gpt-4o-mini"),
        &[("traceparent", &tp), ("x-request-id", "req-noexport")],
    )
    .await;
    assert_eq!(resp.status, 200);
    let sent = mock.last_request().unwrap();
    let sent = sent.header("traceparent").expect("traceparent upstream");
    assert!(sent.starts_with(&format!("00-{TRACE}-")), "{sent}");
    assert!(
        !sent.contains(PARENT),
        "the upstream's parent is the gateway's span"
    );

    // An error response (unknown route model is served by "*": use a 404 from validation).
    let bad = post_json(
        &gw.url("/v1/chat/completions"),
        &json!({"messages": []}),
        &[("x-request-id", "req-bad")],
    )
    .await;
    assert_eq!(bad.status, 400);

    let found = support::eventually(Duration::from_secs(5), || {
        let a = access_lines(&gw.logs());
        a.iter().any(|v| v["request_id"] == "req-noexport")
            && a.iter().any(|v| v["request_id"] == "req-bad")
    })
    .await;
    assert!(found, "access lines: {:#?}", gw.logs());
    let access = access_lines(&gw.logs());
    let line = access
        .iter()
        .find(|v| v["request_id"] == "req-noexport")
        .unwrap();
    assert_eq!(line["trace_id"], TRACE);
    assert!(line["latency_ms"].as_f64().unwrap() >= 0.0);
    assert!(line["cache"].is_string());
    let line = access
        .iter()
        .find(|v| v["request_id"] == "req-bad")
        .unwrap();
    assert_eq!(line["error"], "invalid_request");
    assert_eq!(line["status"], 400);
    assert_eq!(line["trace_id"].as_str().map(str::len), Some(32));
    assert!(gw.stop(Duration::from_secs(10)).success());
}

/// Logs with nothing exported, JSON and pretty: each request's access line is written once
/// (straight to the access writer, not sent as an event), as the formatter would write it (the
/// pretty one in its request span), and `RUST_LOG` still decides whether it is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_lines_without_an_exporter_are_written_once_and_follow_rust_log() {
    let mock = MockUpstream::start().await.unwrap();
    for format in ["json", "pretty"] {
        let config = gateway_config(&mock.url(), &format!("log_format = \"{format}\""));
        for (rust_log, written) in [("info", true), ("info,portcullis::access=off", false)] {
            let cfg = config.clone();
            let env = [("RUST_LOG", rust_log), ("NO_COLOR", "1")];
            let mut gw = tokio::task::spawn_blocking(move || Binary::start(&cfg, &env))
                .await
                .unwrap();
            chats(&gw, &["req-a", "req-b"]).await;
            // SIGTERM flushes the writer: every line there is to see is written by then.
            assert!(gw.stop(Duration::from_secs(10)).success());
            let logs = gw.logs();
            let access: Vec<&String> = logs
                .iter()
                .filter(|l| l.contains("portcullis::access"))
                .collect();
            let what = format!("{format}, RUST_LOG={rust_log}: {logs:#?}");
            if !written {
                assert!(access.is_empty(), "{what}");
                continue;
            }
            assert_eq!(access.len(), 2, "{what}");
            let (a, b) = (access[0], access[1]);
            assert!(a.contains("req-a") && b.contains("req-b"), "{what}");
            if format == "json" {
                assert!(
                    a.starts_with(r#"{"timestamp":""#)
                        && a.contains(r#""level":"INFO","message":"request","method":"POST""#)
                        && a.ends_with(r#""target":"portcullis::access"}"#),
                    "{a}"
                );
            } else {
                assert!(
                    a.contains(" INFO request: portcullis::access: request method=\"POST\"")
                        && a.contains(" status=200 ")
                        && a.ends_with(" request_id=req-a"),
                    "{a}"
                );
            }
        }
    }
}

/// Pretty logs beside an exporter (the logs under their own filter, the exporter's spans under
/// theirs): each request's access line is written once, by the gateway's own writer, in its
/// span, and events below `RUST_LOG` stay out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pretty_logs_beside_an_exporter_write_each_access_line_once() {
    let mock = MockUpstream::start().await.unwrap();
    // Nothing listens there: the spans are dropped, the logs are what this looks at.
    let dead = free_port();
    let config = gateway_config(
        &mock.url(),
        &format!("log_format = \"pretty\"\notlp_endpoint = \"http://127.0.0.1:{dead}\""),
    );
    let mut gw = tokio::task::spawn_blocking(move || Binary::start(&config, &[("NO_COLOR", "1")]))
        .await
        .unwrap();
    chats(&gw, &["req-pretty-1", "req-pretty-2"]).await;
    let access = |logs: &[String]| -> Vec<String> {
        logs.iter()
            .filter(|l| l.contains("portcullis::access"))
            .cloned()
            .collect()
    };
    let found = support::eventually(Duration::from_secs(5), || {
        access(&gw.logs())
            .iter()
            .any(|l| l.contains("req-pretty-2"))
    })
    .await;
    assert!(found, "logs: {:#?}", gw.logs());
    let lines = access(&gw.logs());
    assert_eq!(lines.len(), 2, "{lines:#?}");
    for (line, id) in lines.iter().zip(["req-pretty-1", "req-pretty-2"]) {
        assert!(
            line.contains(" INFO request: portcullis::access: request method=\"POST\""),
            "{line}"
        );
        assert!(line.ends_with(&format!(" request_id={id}")), "{line}");
    }
    assert!(
        !gw.logs().iter().any(|l| l.contains("DEBUG")),
        "{:#?}",
        gw.logs()
    );
    assert!(gw.stop(Duration::from_secs(10)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_hanging_collector_costs_a_warning_not_a_request() {
    let mock = MockUpstream::start().await.unwrap();
    // Dead: nothing listens. Hanging: accepts connections and never answers.
    let dead = free_port();
    let hanging = StdListener::bind("127.0.0.1:0").unwrap();
    let hanging_port = hanging.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    {
        let held = held.clone();
        std::thread::spawn(move || {
            for conn in hanging.incoming().flatten() {
                held.lock().unwrap().push(conn);
            }
        });
    }
    let mut gws = Vec::new();
    for port in [dead, hanging_port] {
        let config = gateway_config(
            &mock.url(),
            &format!("otlp_endpoint = \"http://127.0.0.1:{port}\""),
        );
        let gw = tokio::task::spawn_blocking(move || {
            Binary::start(
                &config,
                &[
                    ("OTEL_BSP_SCHEDULE_DELAY", "50"),
                    ("OTEL_EXPORTER_OTLP_TIMEOUT", "500"),
                ],
            )
        })
        .await
        .unwrap();
        gws.push(gw);
    }
    let baseline = {
        let config = gateway_config(&mock.url(), "");
        tokio::task::spawn_blocking(move || Binary::start(&config, &[]))
            .await
            .unwrap()
    };

    let run = |url: String| async move {
        let mut worst = Duration::ZERO;
        for i in 0..40 {
            let start = Instant::now();
            let r = if i % 2 == 0 {
                post_json(&url, &support::chat("gpt-4o-mini"), &[])
                    .await
                    .status
            } else {
                post_stream(
                    &url,
                    &json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
                    &[],
                )
                .await
                .status
            };
            assert_eq!(r, 200);
            worst = worst.max(start.elapsed());
            // Spread the requests over several export rounds.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        worst
    };
    let base = run(baseline.url("/v1/chat/completions")).await;
    for gw in &gws {
        let worst = run(gw.url("/v1/chat/completions")).await;
        assert!(
            worst < base + Duration::from_millis(500),
            "worst request {worst:?} vs {base:?} without a collector"
        );
    }
    // The failure is said, as a warning or error line, not hidden.
    for gw in &gws {
        let warned = support::eventually(Duration::from_secs(10), || {
            gw.logs().iter().any(|l| {
                l.contains("BatchSpanProcessor") || l.contains("export") && l.contains("WARN")
            })
        })
        .await;
        assert!(
            warned,
            "no warning about the collector:\n{}",
            gw.logs().join("\n")
        );
    }
    // And it does not hold up the exit for long.
    for mut gw in gws {
        let start = Instant::now();
        let status = tokio::task::spawn_blocking(move || gw.stop(Duration::from_secs(15)))
            .await
            .unwrap();
        assert!(status.success(), "{status}");
        assert!(start.elapsed() < Duration::from_secs(10));
    }
    drop(baseline);
    drop(held);
}

// === /metrics (in process: the recorder is global, the gateway is the library's) ===

fn scrape(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("/metrics parses as Prometheus text")
}

fn sample(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(b) => b.iter().map(|c| c.count).fold(0.0, f64::max),
            prometheus_parse::Value::Summary(_) => 0.0,
        })
        .sum()
}

async fn metrics_now(gw: &TestGateway) -> prometheus_parse::Scrape {
    let r = get(&gw.url("/metrics"), &[]).await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/plain")));
    scrape(&r.text())
}

#[tokio::test]
async fn metrics_parse_and_move_with_requests() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = TestGateway::start(&mock_config(
        &mock.url(),
        "[dedup]\nenabled = true\ncache_ttl = \"60s\"\n[retry]\nbase_delay = \"1ms\"\n\
         [[models]]\nname = \"metrics-model-*\"\nupstream = \"mock\"",
    ))
    .await;
    let limited = TestGateway::start(&mock_config(
        &mock.url(),
        "[rate_limit]\nenabled = true\nrequests_per_minute = 1\nburst = 1\nkey = \"global\"",
    ))
    .await;
    let before = metrics_now(&gw).await;

    let model = "metrics-model-a";
    let url = gw.url("/v1/chat/completions");
    let body = support::chat(model);
    let first = post_json(&url, &body, &[]).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-portcullis-cache"), Some("miss"));
    let usage = first.json()["usage"].clone();
    let again = post_json(&url, &body, &[]).await;
    assert_eq!(again.header("x-portcullis-cache"), Some("hit"));
    // A streamed request: tokens from the final usage chunk.
    let s = post_stream(
        &url,
        &json!({"model": model, "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "stream please"}]}),
        &[],
    )
    .await;
    assert_eq!(s.status, 200);
    let s_usage = stream_usage(&s.text());
    // A retried one.
    mock.push(MockResponse::status(502));
    let r = post_json(&url, &support::chat("other-model-retry"), &[]).await;
    assert_eq!(r.status, 200);
    // Rate limited on the other gateway.
    let lurl = limited.url("/v1/chat/completions");
    assert_eq!(
        post_json(&lurl, &support::chat("metrics-model-rl"), &[])
            .await
            .status,
        200
    );
    assert_eq!(
        post_json(&lurl, &support::chat("metrics-model-rl"), &[])
            .await
            .status,
        429
    );

    // Counted when each response body ends: poll briefly.
    let mut after = metrics_now(&gw).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    // Labels are configured names: the `[[models]]` entry the model matched.
    let entry = "metrics-model-*";
    let ok200 = [("model", entry), ("upstream", "mock"), ("status", "200")];
    let all200 = [("upstream", "mock"), ("status", "200")];
    // The miss, the hit, the stream, the retried one and the rate-limit gateway's first.
    while sample(&after, "portcullis_requests_total", &all200)
        < sample(&before, "portcullis_requests_total", &all200) + 5.0
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        after = metrics_now(&gw).await;
    }
    let delta = |name: &str, labels: &[(&str, &str)]| {
        sample(&after, name, labels) - sample(&before, name, labels)
    };
    assert_eq!(delta("portcullis_requests_total", &all200), 5.0);
    // The cache hit is under the model too once RecordRequestLayer is stacked (see
    // `record_request_layer_labels_responses_made_above_the_router`).
    assert!(delta("portcullis_requests_total", &ok200) >= 2.0);
    assert!(
        delta(
            "portcullis_request_duration_seconds",
            &[("model", entry), ("upstream", "mock")]
        ) >= 2.0,
        "histogram count"
    );
    assert!(after
        .samples
        .iter()
        .any(|s| s.metric == "portcullis_request_duration_seconds"
            && matches!(s.value, prometheus_parse::Value::Histogram(_))));
    // Tokens: the miss and the stream; the cache hit cost the upstream nothing.
    let want_in =
        usage["prompt_tokens"].as_f64().unwrap() + s_usage["prompt_tokens"].as_f64().unwrap();
    let want_out = usage["completion_tokens"].as_f64().unwrap()
        + s_usage["completion_tokens"].as_f64().unwrap();
    assert_eq!(
        delta(
            "portcullis_tokens_total",
            &[("model", entry), ("type", "input")]
        ),
        want_in
    );
    assert_eq!(
        delta(
            "portcullis_tokens_total",
            &[("model", entry), ("type", "output")]
        ),
        want_out
    );
    assert!(delta("portcullis_cache_total", &[("outcome", "hit")]) >= 1.0);
    assert!(delta("portcullis_cache_total", &[("outcome", "miss")]) >= 2.0);
    assert!(delta("portcullis_upstream_retries_total", &[("upstream", "mock")]) >= 1.0);
    assert!(
        delta(
            "portcullis_upstream_attempts_total",
            &[("upstream", "mock")]
        ) >= 4.0
    );
    assert!(
        delta(
            "portcullis_upstream_attempt_duration_seconds",
            &[("upstream", "mock"), ("outcome", "502")]
        ) >= 1.0
    );
    assert!(delta("portcullis_rate_limited_total", &[]) >= 1.0);
    // The refusal is made above the router and still counted under its entry (`*` there).
    assert!(
        delta(
            "portcullis_requests_total",
            &[("model", "*"), ("status", "429")]
        ) >= 1.0
    );
    assert!(
        !after.samples.iter().any(|s| s
            .labels
            .get("model")
            .is_some_and(|m| m.starts_with("metrics-model-r"))),
        "a client's model string never becomes a label"
    );
    // State gauges, refreshed at scrape time.
    let names: HashMap<&str, ()> = after
        .samples
        .iter()
        .map(|s| (s.metric.as_str(), ()))
        .collect();
    assert!(names.contains_key("portcullis_circuit_breaker_state"));
    assert!(names.contains_key("portcullis_cookies"));
    assert_eq!(
        sample(
            &after,
            "portcullis_circuit_breaker_state",
            &[("upstream", "mock")]
        ),
        0.0
    );
}

#[tokio::test]
async fn record_request_layer_labels_responses_made_above_the_router() {
    use axum::body::Body;
    use http::{Request, Response};
    use portcullis::telemetry::access_log::{AccessLogLayer, RecordRequestLayer};
    use portcullis_core::RequestMeta;
    use tower::{ServiceBuilder, ServiceExt};

    // As in the gateway: the access log outside, the validation layer's RequestMeta, the
    // model tap, and a response made without the router (as a cache replay is).
    let svc = ServiceBuilder::new()
        .layer(AccessLogLayer)
        .map_request(|mut req: Request<Body>| {
            req.extensions_mut().insert(RequestMeta {
                model: Some("tap-model".into()),
                stream: false,
            });
            req.extensions_mut()
                .insert(portcullis_core::UserId("tap-user".into()));
            req
        })
        .layer(RecordRequestLayer::new(["tap-*"]))
        .service_fn(|_req: Request<Body>| async {
            Ok::<_, std::convert::Infallible>(
                Response::builder()
                    .header("content-type", "application/json")
                    .header("x-portcullis-upstream", "cached-up")
                    .extension(portcullis_core::CacheOutcome::Hit)
                    .body(Body::from(
                        r#"{"model":"tap-model-x","usage":{"prompt_tokens":7,"completion_tokens":5}}"#,
                    ))
                    .unwrap(),
            )
        });
    let resp = svc
        .oneshot(
            Request::post("/v1/chat/completions")
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await
        .unwrap();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert!(body.starts_with(b"{\"model\""), "body passes unchanged");
    let s = scrape(&portcullis::telemetry::metrics::render());
    assert_eq!(
        sample(
            &s,
            "portcullis_requests_total",
            &[
                ("model", "tap-*"),
                ("upstream", "cached-up"),
                ("status", "200")
            ]
        ),
        1.0,
        "labelled with the configured entry, not the client's string"
    );
    // A replayed answer cost the upstream no tokens.
    assert_eq!(
        sample(&s, "portcullis_tokens_total", &[("model", "tap-*")]),
        0.0
    );
}
