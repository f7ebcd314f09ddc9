//! The request corpora (`tests/corpora/` at the workspace root; see its README): every
//! accepted body passes `moderate` and `lenient`, every rejected one fails `moderate` (and
//! `strict`) naming the expected field, and a few go through the layer as real requests.

use std::{
    fs,
    path::{Path, PathBuf},
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use portcullis_core::{error::find_in_chain, RequestMeta};
use portcullis_validation::{validate, Config, InvalidRequest, Level, Route, ValidationLayer};
use serde_json::{json, Value};
use tower::{service_fn, BoxError, Layer, ServiceExt};

const CORPORA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/corpora");

/// What a rejected body must fail with (the file's `"//expect"`).
#[derive(Debug)]
struct Expect {
    field: String,
    message: String,
}

struct Case {
    path: PathBuf,
    body: Vec<u8>,
    expect: Option<Expect>,
}

fn files(route: Route, kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(CORPORA).join(route.name()).join(kind);
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

/// An accepted body is the file's bytes as they are.
fn accepted(route: Route) -> Vec<Case> {
    files(route, "accept")
        .into_iter()
        .map(|path| Case {
            body: fs::read(&path).unwrap(),
            path,
            expect: None,
        })
        .collect()
}

/// A rejected body is the file without its `"//expect"` key, or the string `"//body"` when
/// the body under test is not a JSON object.
fn rejected(route: Route) -> Vec<Case> {
    files(route, "reject")
        .into_iter()
        .map(|path| {
            let mut doc: Value = serde_json::from_slice(&fs::read(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let obj = doc.as_object_mut().unwrap();
            let expect = obj
                .remove("//expect")
                .unwrap_or_else(|| panic!("{}: no \"//expect\"", path.display()));
            let expect = Expect {
                field: expect["field"].as_str().unwrap().to_owned(),
                message: expect["message"].as_str().unwrap().to_owned(),
            };
            let body = match obj.remove("//body") {
                Some(Value::String(raw)) => raw.into_bytes(),
                Some(other) => panic!(
                    "{}: \"//body\" must be a string, got {other}",
                    path.display()
                ),
                None => serde_json::to_vec(&doc).unwrap(),
            };
            Case {
                path,
                body,
                expect: Some(expect),
            }
        })
        .collect()
}

fn name(case: &Case) -> String {
    let p = &case.path;
    let route = p.parent().and_then(Path::parent).and_then(Path::file_name);
    format!(
        "{}/{}",
        route.unwrap().to_string_lossy(),
        p.file_name().unwrap().to_string_lossy()
    )
}

#[test]
fn every_route_has_a_corpus_of_the_promised_size() {
    for route in Route::ALL {
        let (a, r) = (accepted(route).len(), rejected(route).len());
        assert!(a >= 25, "{route}: {a} accepted bodies, want >= 25");
        assert!(r >= 10, "{route}: {r} rejected bodies, want >= 10");
    }
}

#[test]
fn accepted_bodies_pass_moderate_and_lenient() {
    let mut failures = Vec::new();
    for route in Route::ALL {
        let cases = accepted(route);
        let mut strict_refused = Vec::new();
        for case in &cases {
            // Every level reads the same model and stream flag (lenient builds only those).
            let mut metas = Vec::new();
            for level in [Level::Lenient, Level::Moderate] {
                match validate(route, level, &case.body) {
                    Ok(meta) => metas.push((meta.model, meta.stream)),
                    Err(e) => failures.push(format!("{} at {level}: {e}", name(case))),
                }
            }
            if metas.windows(2).any(|w| w[0] != w[1]) {
                failures.push(format!("{}: the levels read {metas:?}", name(case)));
            }
            if let Err(e) = validate(route, Level::Strict, &case.body) {
                strict_refused.push(format!("  {}: {e}", name(case)));
            }
        }
        // Strict refuses some on purpose (new roles and types, unknown fields): shown with
        // `--nocapture`, not asserted.
        println!(
            "{route}: {} accepted, strict refuses {}\n{}",
            cases.len(),
            strict_refused.len(),
            strict_refused.join("\n")
        );
    }
    assert!(failures.is_empty(), "rejected:\n{}", failures.join("\n"));
}

#[test]
fn rejected_bodies_fail_moderate_and_strict_naming_the_field() {
    let mut failures = Vec::new();
    for route in Route::ALL {
        for case in rejected(route) {
            let expect = case.expect.as_ref().unwrap();
            for level in [Level::Moderate, Level::Strict] {
                match validate(route, level, &case.body) {
                    Ok(_) => failures.push(format!("{} at {level}: accepted", name(&case))),
                    // Strict may find an earlier problem; moderate must find this one.
                    Err(_) if level == Level::Strict => {}
                    Err(e) if e.field == expect.field && e.message.contains(&expect.message) => {}
                    Err(e) => failures.push(format!(
                        "{} at {level}: got {:?}, want field {:?} with {:?}",
                        name(&case),
                        e.to_string(),
                        expect.field,
                        expect.message
                    )),
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

// === through the layer ===

/// The layer in front of an upstream stand-in, behind an edge that answers its errors the way
/// the gateway does (a stand-in for the gateway's rescue layer): `400` naming the field.
async fn call(level: Level, path: &str, body: Vec<u8>) -> Response<String> {
    let upstream = service_fn(|req: Request<Full<Bytes>>| async move {
        let meta = req.extensions().get::<RequestMeta>().cloned().unwrap();
        let model = meta.model.as_deref().unwrap_or("-").to_owned();
        Ok::<_, BoxError>(Response::new(format!("upstream saw {model}")))
    });
    let svc = ValidationLayer::new(Config { level }).layer(upstream);
    let req = Request::post(path)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    match svc.oneshot(req).await {
        Ok(resp) => resp,
        Err(err) => {
            let invalid = find_in_chain::<InvalidRequest>(&*err).expect("an InvalidRequest");
            let body = json!({"error": {"message": invalid.to_string(), "type": "invalid_request_error", "code": "invalid_request"}});
            let mut resp = Response::new(body.to_string());
            *resp.status_mut() = StatusCode::BAD_REQUEST;
            resp
        }
    }
}

fn accepted_file(route: Route, stem: &str) -> Vec<u8> {
    let case = accepted(route)
        .into_iter()
        .find(|c| c.path.file_stem().unwrap() == stem);
    case.unwrap_or_else(|| panic!("{route}: no {stem}")).body
}

fn rejected_file(route: Route, stem: &str) -> (Vec<u8>, Expect) {
    let case = rejected(route)
        .into_iter()
        .find(|c| c.path.file_stem().unwrap() == stem);
    let case = case.unwrap_or_else(|| panic!("{route}: no {stem}"));
    (case.body, case.expect.unwrap())
}

#[tokio::test]
async fn the_issues_agent_request_reaches_the_upstream_on_defaults() {
    // The Anthropic-API agent of the issue: a `system` entry inside `messages`, beta fields,
    // thinking, tools and `?beta=true`.
    let body = accepted_file(Route::Messages, "01_claude_code_agent_beta");
    let resp = call(Level::default(), "/v1/messages?beta=true", body).await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", resp.body());
    assert_eq!(resp.body(), "upstream saw claude-sonnet-4-5-20250929");

    let body = accepted_file(Route::CountTokens, "01_claude_code_agent_beta");
    let resp = call(
        Level::default(),
        "/v1/messages/count_tokens?beta=true",
        body,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", resp.body());

    let body = accepted_file(Route::Responses, "11_codex_stateless_reasoning");
    let resp = call(Level::default(), "/v1/responses", body).await;
    assert_eq!(resp.body(), "upstream saw gpt-5-codex");

    // A prompt template names the model: no model in the request, and none in RequestMeta.
    let body = accepted_file(Route::Responses, "14_prompt_template_without_model");
    let resp = call(Level::default(), "/v1/responses", body).await;
    assert_eq!(resp.body(), "upstream saw -");
}

#[tokio::test]
async fn rejected_bodies_answer_400_naming_the_field() {
    for (route, stem) in [
        (Route::ChatCompletions, "13_part_type_missing"),
        (Route::Messages, "18_tool_result_content_number"),
        (Route::CountTokens, "09_content_object"),
        (Route::Responses, "11_part_type_missing"),
        (Route::Embeddings, "02_input_missing"),
        (Route::Completions, "09_max_tokens_string"),
    ] {
        let (body, expect) = rejected_file(route, stem);
        let resp = call(Level::Moderate, route.path(), body).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{route} {stem}");
        let error: Value = serde_json::from_str(resp.body()).unwrap();
        let message = error["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("{}: ", expect.field))
                && message.contains(&expect.message),
            "{route} {stem}: {message}"
        );
    }
    // The field path is exact, e.g. for the chat body above:
    let (body, _) = rejected_file(Route::ChatCompletions, "13_part_type_missing");
    let resp = call(Level::Moderate, "/v1/chat/completions", body).await;
    assert!(
        resp.body()
            .contains("messages[2].content[0].type: is required"),
        "{}",
        resp.body()
    );
}

#[tokio::test]
async fn strict_still_rejects_what_moderate_lets_through() {
    let body = accepted_file(Route::ChatCompletions, "30_new_role_passes");
    let resp = call(Level::Strict, "/v1/chat/completions", body).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(
        resp.body()
            .contains("messages[2].role: unknown role \\\"ipython\\\""),
        "{}",
        resp.body()
    );
}
