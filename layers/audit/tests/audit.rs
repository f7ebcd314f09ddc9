//! The audit layer against scripted upstreams: the lines, the queue, reopening, usage.

use std::{
    convert::Infallible,
    path::{Path, PathBuf},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use portcullis_audit::{AuditLayer, AuditRecordLayer, AuditRequestBody, Config, KeyName, OTHER};
use portcullis_core::{CacheOutcome, ErrorCode, RequestMeta, RouteInfo, UserId};
use serde_json::Value;
use tower::{service_fn, Layer, ServiceBuilder, ServiceExt};

type Frames = Vec<Result<http_body::Frame<Bytes>, Infallible>>;
type Streamed = StreamBody<
    futures_util::stream::Iter<std::vec::IntoIter<Result<http_body::Frame<Bytes>, Infallible>>>,
>;

const CHAT_JSON: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"secret answer"}}],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":8}}}"#;

const CHAT_STREAM: [&str; 4] = [
    "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n",
    "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
    "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-2024-08-06\",\"choices\":[],\"usage\":{\"prompt_tokens\":40,",
    "\"completion_tokens\":7,\"total_tokens\":47}}\n\ndata: [DONE]\n\n",
];

fn route(model: &str, entry: Option<&str>, upstream: &str, attempts: u32) -> RouteInfo {
    RouteInfo {
        model: model.into(),
        entry: entry.map(Into::into),
        upstream: upstream.into(),
        attempts,
        user_id: None,
    }
}

fn json_response(body: &'static str, route: Option<RouteInfo>) -> Response<Full<Bytes>> {
    let mut resp = Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    if let Some(r) = route {
        resp.extensions_mut().insert(r);
    }
    resp.extensions_mut().insert(CacheOutcome::Miss);
    resp
}

fn config(dir: &Path) -> (Config, PathBuf) {
    let path = dir.join("audit.jsonl");
    let config = Config {
        path: path.to_string_lossy().into_owned(),
        ..Config::default()
    };
    (config, path)
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn chat_request(key: Option<&str>) -> Request<Full<Bytes>> {
    let mut req = Request::post("/v1/chat/completions?key=query-secret")
        .header("authorization", "Bearer sk-very-secret")
        .header("cookie", "session=cookie-secret")
        .header("x-request-id", "req-1")
        .header("x-session-id", "sess-9")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"gpt-4o-mini","messages":[]}"#,
        )))
        .unwrap();
    if let Some(k) = key {
        req.extensions_mut().insert(KeyName::new(k));
    }
    req.extensions_mut().insert(UserId::new("alice"));
    req
}

#[tokio::test]
async fn a_plain_answer_is_one_line_with_every_field_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let (config, path) = config(dir.path());
    let layer = AuditLayer::from_config(&config).unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(
        |_req: Request<AuditRequestBody<Full<Bytes>>>| async {
            Ok::<_, Infallible>(json_response(
                CHAT_JSON,
                Some(route("gpt-4o-mini", Some("gpt-4o-mini"), "openai", 2)),
            ))
        },
    ));
    let resp = svc.oneshot(chat_request(Some("team-a"))).await.unwrap();
    handle.flush().await;
    assert!(lines(&path).is_empty(), "no line before the body ends");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, CHAT_JSON.as_bytes(), "the body passes unchanged");
    handle.flush().await;
    let all = lines(&path);
    assert_eq!(all.len(), 1);
    let l = &all[0];
    assert!(l["time"].as_str().unwrap().ends_with('Z'), "{l}");
    humantime::parse_rfc3339(l["time"].as_str().unwrap()).unwrap();
    for (field, want) in [
        ("request_id", "req-1"),
        ("key", "team-a"),
        ("user_id", "alice"),
        ("session", "sess-9"),
        ("method", "POST"),
        ("path", "/v1/chat/completions"),
        ("model", "gpt-4o-mini"),
        ("response_model", "gpt-4o-mini-2024-07-18"),
        ("entry", "gpt-4o-mini"),
        ("upstream", "openai"),
        ("cache", "miss"),
        ("ending", "complete"),
    ] {
        assert_eq!(l[field], want, "{field}: {l}");
    }
    assert_eq!(l["status"], 200);
    assert_eq!(l["attempts"], 2);
    assert_eq!(
        (l["input_tokens"].as_u64(), l["output_tokens"].as_u64()),
        (Some(12), Some(3))
    );
    assert_eq!(l["cached_tokens"], 8);
    assert!(l["latency_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(l["error"], Value::Null);
    assert_eq!(l["stream"], false);
    assert!(l.get("request_body").is_none() && l.get("response_body").is_none());
    let text = std::fs::read_to_string(&path).unwrap();
    for secret in [
        "sk-very-secret",
        "cookie-secret",
        "query-secret",
        "secret answer",
    ] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
}

fn streamed(pieces: &[&'static str]) -> Response<Streamed> {
    let frames: Frames = pieces
        .iter()
        .map(|p| Ok(http_body::Frame::data(Bytes::from_static(p.as_bytes()))))
        .collect();
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(StreamBody::new(futures_util::stream::iter(frames)))
        .unwrap()
}

#[tokio::test]
async fn a_streamed_answer_has_its_tokens_read_from_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let (config, path) = config(dir.path());
    let layer = AuditLayer::from_config(&config).unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(
        |_req: Request<AuditRequestBody<Full<Bytes>>>| async {
            let mut resp = streamed(&CHAT_STREAM);
            resp.extensions_mut()
                .insert(route("gpt-4o", Some("gpt-4o"), "openai", 1));
            Ok::<_, Infallible>(resp)
        },
    ));
    let resp = svc.oneshot(chat_request(None)).await.unwrap();
    let mut body = resp.into_body();
    let mut seen = Vec::new();
    while let Some(frame) = body.frame().await {
        // Each frame reaches the client as it comes: nothing is held back.
        seen.push(frame.unwrap().into_data().unwrap());
    }
    assert_eq!(seen.len(), CHAT_STREAM.len());
    drop(body);
    handle.flush().await;
    let all = lines(&path);
    assert_eq!(all.len(), 1, "one line for the whole stream");
    let l = &all[0];
    assert_eq!(l["stream"], true);
    assert_eq!(l["key"], Value::Null);
    assert_eq!(l["response_model"], "gpt-4o-2024-08-06");
    assert_eq!(
        (l["input_tokens"].as_u64(), l["output_tokens"].as_u64()),
        (Some(40), Some(7))
    );
    assert_eq!(l["ending"], "complete");
}

#[tokio::test]
async fn a_body_dropped_early_is_logged_as_aborted_and_an_error_code_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (config, path) = config(dir.path());
    let layer = AuditLayer::from_config(&config).unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(
        |req: Request<AuditRequestBody<Full<Bytes>>>| async move {
            if req.uri().path() == "/v1/messages" {
                let mut resp = Response::builder()
                    .status(429)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(b"{\"type\":\"error\"}")))
                    .unwrap();
                resp.extensions_mut().insert(ErrorCode("rate_limited"));
                return Ok::<_, Infallible>(resp.map(http_body_util::Either::Left));
            }
            Ok(streamed(&CHAT_STREAM).map(http_body_util::Either::Right))
        },
    ));
    let resp = svc.clone().oneshot(chat_request(None)).await.unwrap();
    let mut body = resp.into_body();
    body.frame().await.unwrap().unwrap();
    drop(body); // the client went away mid-stream
    let refused = Request::post("/v1/messages")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = svc.oneshot(refused).await.unwrap();
    resp.into_body().collect().await.unwrap();
    handle.flush().await;
    let all = lines(&path);
    assert_eq!(all.len(), 2);
    assert_eq!(all[0]["ending"], "aborted");
    assert_eq!(
        all[0]["input_tokens"],
        Value::Null,
        "the usage chunk never came"
    );
    assert_eq!(
        (all[1]["status"].as_u64(), all[1]["error"].as_str()),
        (Some(429), Some("rate_limited"))
    );
    let usage = handle.usage().get(None, OTHER).unwrap();
    assert_eq!((usage.requests, usage.errors), (2, 1));
}

#[tokio::test]
async fn bodies_are_written_only_with_include_bodies_and_bounded() {
    for include_bodies in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (mut config, path) = config(dir.path());
        config.include_bodies = include_bodies;
        config.max_body_bytes = 16;
        let layer = AuditLayer::from_config(&config).unwrap();
        let handle = layer.handle();
        let svc = layer.layer(service_fn(
            |req: Request<AuditRequestBody<Full<Bytes>>>| async move {
                // The upstream reads the request body (through the layer's copy).
                let sent = req.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(sent, "short");
                Ok::<_, Infallible>(json_response(CHAT_JSON, None))
            },
        ));
        let req = Request::post("/v1/chat/completions")
            .body(Full::new(Bytes::from_static(b"short")))
            .unwrap();
        svc.oneshot(req)
            .await
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap();
        handle.flush().await;
        let l = &lines(&path)[0];
        if include_bodies {
            assert_eq!(l["request_body"], "short");
            assert_eq!(l["request_body_truncated"], false);
            assert_eq!(l["response_body"], &CHAT_JSON[..16]);
            assert_eq!(l["response_body_truncated"], true);
        } else {
            for f in ["request_body", "response_body", "request_body_truncated"] {
                assert!(l.get(f).is_none(), "{f}: {l}");
            }
        }
    }
}

#[tokio::test]
async fn the_file_is_reopened_after_logrotate_moves_it() {
    let dir = tempfile::tempdir().unwrap();
    let (config, path) = config(dir.path());
    let layer = AuditLayer::from_config(&config).unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(
        |_req: Request<AuditRequestBody<Full<Bytes>>>| async {
            Ok::<_, Infallible>(json_response(CHAT_JSON, None))
        },
    ));
    let one =
        |svc: &tower::util::BoxCloneService<_, _, _>| svc.clone().oneshot(chat_request(Some("k")));
    let svc = tower::util::BoxCloneService::new(svc);
    one(&svc)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    handle.flush().await;
    let rotated = dir.path().join("audit.jsonl.1");
    std::fs::rename(&path, &rotated).unwrap();
    // Before the reopen, lines follow the moved file (the open descriptor).
    one(&svc)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    handle.flush().await;
    assert!(!path.exists());
    handle.reopen();
    one(&svc)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    one(&svc)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    handle.flush().await;
    assert_eq!(lines(&rotated).len(), 2);
    assert_eq!(
        lines(&path).len(),
        2,
        "new lines go to a new file at the path"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn a_full_queue_drops_lines_instead_of_blocking_and_counts_them() {
    use std::os::unix::fs::OpenOptionsExt;

    let dir = tempfile::tempdir().unwrap();
    let (mut config, path) = config(dir.path());
    config.queue = 4;
    // A FIFO nobody reads: once the pipe and the writer's buffer are full, the writer blocks
    // in `write`, like on a stalled disk.
    let status = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_o_nonblock())
        .open(&path)
        .unwrap();
    let layer = AuditLayer::from_config(&config).unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(
        |_req: Request<AuditRequestBody<Full<Bytes>>>| async {
            Ok::<_, Infallible>(json_response(CHAT_JSON, None))
        },
    ));
    let n = 3000u64;
    let started = std::time::Instant::now();
    for _ in 0..n {
        let resp = svc.clone().oneshot(chat_request(Some("k"))).await.unwrap();
        resp.into_body().collect().await.unwrap();
    }
    // Every request completed although the writer is stuck.
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    // A line is ~600 bytes: the pipe (64 KiB) and the writer's buffer (64 KiB) hold a few
    // hundred; the queue 4; everything else was dropped.
    let dropped = handle.dropped();
    assert!(dropped >= n - 600, "dropped {dropped} of {n}");
    assert!(dropped < n);
    assert_eq!(
        handle.usage().get(Some("k"), OTHER).unwrap().requests,
        n,
        "usage counts them all"
    );
    drop(reader);
}

/// `O_NONBLOCK` (the same on Linux and the BSDs we build on), without a libc dependency.
#[cfg(unix)]
fn libc_o_nonblock() -> i32 {
    if cfg!(any(target_os = "macos", target_os = "freebsd")) {
        0x0004
    } else {
        0o4000
    }
}

#[tokio::test]
async fn usage_is_aggregated_per_key_and_model_and_bounded() {
    let layer = AuditLayer::from_config(&Config {
        max_usage_entries: 4,
        ..Config::default()
    })
    .unwrap()
    .with_model_entries(["gpt-4o-mini", "claude-*"]);
    let usage = layer.usage().clone();
    let svc = layer.layer(service_fn(
        |req: Request<AuditRequestBody<Full<Bytes>>>| async move {
            let ext = req.extensions();
            let model = ext
                .get::<RequestMeta>()
                .and_then(|m| m.model.clone())
                .unwrap_or_default();
            let mut resp = json_response(CHAT_JSON, None);
            match req.uri().path() {
                "/routed" => {
                    resp.extensions_mut()
                        .insert(route(&model, Some("gpt-4o-mini"), "openai", 1));
                }
                "/hit" => {
                    resp.extensions_mut().insert(CacheOutcome::Hit);
                }
                "/error" => *resp.status_mut() = http::StatusCode::BAD_GATEWAY,
                _ => {}
            }
            Ok::<_, Infallible>(resp)
        },
    ));
    let send = |path: &'static str, key: Option<&'static str>, model: &'static str| {
        let svc = svc.clone();
        async move {
            let mut req = Request::post(path).body(Full::new(Bytes::new())).unwrap();
            if let Some(k) = key {
                req.extensions_mut().insert(KeyName::new(k));
            }
            req.extensions_mut().insert(RequestMeta {
                model: Some(model.into()),
                stream: false,
            });
            svc.oneshot(req)
                .await
                .unwrap()
                .into_body()
                .collect()
                .await
                .unwrap();
        }
    };
    send("/routed", Some("a"), "gpt-4o-mini").await;
    send("/routed", Some("a"), "gpt-4o-mini").await;
    send("/hit", Some("a"), "gpt-4o-mini").await; // no RouteInfo: the entry comes from the names
    send("/error", Some("b"), "claude-sonnet-4").await;
    send("/plain", None, "unknown-model").await;
    // The table is full (3 pairs + the overflow slot): new pairs go to other/other.
    send("/plain", Some("c"), "gpt-4o-mini").await;
    send("/plain", Some("d"), "gpt-4o-mini").await;

    let a = usage.get(Some("a"), "gpt-4o-mini").unwrap();
    assert_eq!((a.requests, a.errors), (3, 0));
    assert_eq!(a.input_tokens, 24, "a cache hit spends no tokens");
    assert_eq!((a.output_tokens, a.cached_tokens), (6, 16));
    let b = usage.get(Some("b"), "claude-*").unwrap();
    assert_eq!(
        (b.requests, b.errors, b.input_tokens),
        (1, 1, 0),
        "an error answer has no usage"
    );
    assert_eq!(usage.get(None, OTHER).unwrap().requests, 1);
    assert_eq!(usage.get(Some(OTHER), OTHER).unwrap().requests, 2);
    assert!(usage.get(Some("c"), "gpt-4o-mini").is_none());
    assert_eq!(usage.len(), 4);

    let j = usage.to_json();
    assert_eq!(j["totals"]["requests"], 7);
    assert_eq!(j["totals"]["errors"], 1);
    let rows = j["usage"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(
        (rows[0]["key"].clone(), rows[0]["model"].clone()),
        (Value::Null, Value::from(OTHER))
    );
}

#[tokio::test]
async fn the_record_layer_brings_back_what_inner_layers_learn() {
    let dir = tempfile::tempdir().unwrap();
    let (config, path) = config(dir.path());
    let layer = AuditLayer::from_config(&config).unwrap();
    let handle = layer.handle();
    let usage = layer.usage().clone();
    // Stands for the gateway's key auth, validation and memory routing.
    let learn =
        tower::util::MapRequestLayer::new(|mut req: Request<AuditRequestBody<Full<Bytes>>>| {
            req.extensions_mut().insert(KeyName::new("team-b"));
            req.extensions_mut().insert(UserId::new("bob"));
            req.extensions_mut().insert(RequestMeta {
                model: Some("gpt-4o-mini".into()),
                stream: false,
            });
            req
        });
    let svc = ServiceBuilder::new()
        .layer(layer)
        .layer(learn)
        .layer(AuditRecordLayer)
        .service(service_fn(
            |_req: Request<AuditRequestBody<Full<Bytes>>>| async {
                // Refused before any router: no RouteInfo.
                let mut resp = Response::builder()
                    .status(403)
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                resp.extensions_mut().insert(ErrorCode("model_not_allowed"));
                Ok::<_, Infallible>(resp)
            },
        ));
    let req = Request::post("/v1/chat/completions")
        .body(Full::new(Bytes::new()))
        .unwrap();
    svc.oneshot(req)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    handle.flush().await;
    let l = &lines(&path)[0];
    assert_eq!(
        (l["key"].as_str(), l["user_id"].as_str()),
        (Some("team-b"), Some("bob"))
    );
    assert_eq!(l["model"], "gpt-4o-mini");
    assert_eq!(l["status"], 403);
    assert_eq!(usage.get(Some("team-b"), OTHER).unwrap().errors, 1);
}

#[tokio::test]
async fn without_a_path_no_file_is_written_but_usage_is_counted() {
    let layer = AuditLayer::from_config(&Config {
        include_bodies: true,
        ..Config::default()
    })
    .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(
        |_req: Request<AuditRequestBody<Full<Bytes>>>| async {
            Ok::<_, Infallible>(json_response(CHAT_JSON, None))
        },
    ));
    svc.oneshot(chat_request(Some("k")))
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    handle.flush().await; // returns at once
    assert_eq!(handle.dropped(), 0);
    assert_eq!(
        handle.usage().get(Some("k"), OTHER).unwrap().input_tokens,
        12
    );
}

#[test]
fn an_unwritable_path_is_an_error_naming_it() {
    let e = AuditLayer::from_config(&Config {
        path: "/nonexistent-dir/audit.jsonl".into(),
        ..Config::default()
    })
    .unwrap_err();
    assert!(
        e.to_string().contains("/nonexistent-dir/audit.jsonl"),
        "{e}"
    );
    let e = AuditLayer::from_config(&Config {
        queue: 0,
        ..Config::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("queue"), "{e}");
}

#[tokio::test]
async fn a_request_dropped_before_its_answer_still_gets_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let (config, path) = config(dir.path());
    let layer = AuditLayer::from_config(&config).unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(
        |_req: Request<AuditRequestBody<Full<Bytes>>>| async {
            std::future::pending::<()>().await;
            Ok::<_, Infallible>(json_response(CHAT_JSON, None))
        },
    ));
    let fut = tower::Service::call(&mut svc, chat_request(Some("k")));
    let mut fut = tokio_test::task::spawn(fut);
    tokio_test::assert_pending!(fut.poll());
    drop(fut);
    handle.flush().await;
    let l = &lines(&path)[0];
    assert_eq!(
        (l["ending"].as_str(), l["status"].clone()),
        (Some("aborted"), Value::Null)
    );
    assert_eq!(l["key"], "k");
    assert_eq!(handle.usage().get(Some("k"), OTHER).unwrap().errors, 1);
}
