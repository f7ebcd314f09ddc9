//! `GET /v1/models` end to end: pattern entries expanded from the upstreams' own model lists,
//! cached per upstream and caller, the pattern itself when an upstream cannot say.

mod support;

use portcullis_mock::{MockResponse, MockUpstream};
use support::*;

/// `claude-*` -> a, `*` -> b, and one exact name on b.
async fn two_upstreams(extra: &str) -> (MockUpstream, MockUpstream, TestGateway) {
    let a = MockUpstream::start().await.unwrap();
    let b = MockUpstream::start().await.unwrap();
    let toml = format!(
        r#"
[[upstreams]]
name = "a"
base_url = "{}"
auth = "passthrough"

[[upstreams]]
name = "b"
base_url = "{}"
auth = "passthrough"

[[models]]
name = "claude-*"
upstream = "a"

[[models]]
name = "*"
upstream = "b"

[[models]]
name = "house-model"
upstream = "b"

{extra}
"#,
        a.url(),
        b.url()
    );
    let gw = TestGateway::start(&toml).await;
    (a, b, gw)
}

/// `(id, owned_by)` of each listed model, in order.
async fn listed(gw: &TestGateway, headers: &[(&str, &str)]) -> Vec<(String, String)> {
    let r = get(&gw.url("/v1/models"), headers).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "list");
    // Anthropic's list shape too: its paging fields, and its fields on every entry.
    let data = v["data"].as_array().unwrap();
    assert_eq!(v["has_more"], false, "{v}");
    assert_eq!(v["first_id"], data[0]["id"], "{v}");
    assert_eq!(v["last_id"], data[data.len() - 1]["id"], "{v}");
    data.iter()
        .map(|m| {
            assert_eq!(m["object"], "model");
            assert_eq!(m["type"], "model", "{m}");
            assert!(m["display_name"].is_string(), "{m}");
            assert!(
                m["created_at"].as_str().is_some_and(|t| t.ends_with('Z')),
                "{m}"
            );
            (
                m["id"].as_str().unwrap().to_string(),
                m["owned_by"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(i, o)| (i.to_string(), o.to_string()))
        .collect()
}

#[tokio::test]
async fn pattern_entries_list_their_upstreams_models_once_a_minute() {
    let (a, b, gw) = two_upstreams("").await;
    let expected = pairs(&[
        // claude-* -> a: what a reports that starts with claude-.
        ("claude-3-5-haiku-latest", "a"),
        ("claude-sonnet-4-5", "a"),
        // * -> b: what b reports, except what claude-* routes elsewhere.
        ("gpt-4o-mini", "b"),
        ("gpt-4o", "b"),
        ("text-embedding-3-small", "b"),
        // Exact names stay as they are.
        ("house-model", "b"),
    ]);
    assert_eq!(listed(&gw, &[]).await, expected);
    let asked = a.last_request().unwrap();
    assert_eq!(asked.method, http::Method::GET);
    assert_eq!(asked.path, "/v1/models");

    // Within the minute: from the cache, the upstreams are not asked again.
    assert_eq!(listed(&gw, &[]).await, expected);
    assert_eq!((a.request_count(), b.request_count()), (1, 1));
}

#[tokio::test]
async fn an_upstream_that_cannot_say_is_listed_as_its_pattern() {
    // a fails every attempt (retries included); b answers something that is not a list.
    let (a, b, gw) = two_upstreams("").await;
    a.set_default(Some(MockResponse::status(500)));
    b.set_default(Some(MockResponse::body(
        200,
        "text/plain",
        "no models here",
    )));
    assert_eq!(
        listed(&gw, &[]).await,
        pairs(&[("claude-*", "a"), ("*", "b"), ("house-model", "b")])
    );
    assert!(a.request_count() >= 1 && b.request_count() == 1);
}

#[tokio::test]
async fn callers_with_different_keys_are_cached_separately() {
    let (a, b, gw) = two_upstreams("").await;
    let one = [("authorization", "Bearer sk-one")];
    let two = [("authorization", "Bearer sk-two")];
    let first = listed(&gw, &one).await;
    assert_eq!(listed(&gw, &one).await, first);
    assert_eq!(b.request_count(), 1);
    assert_eq!(listed(&gw, &two).await, first);
    assert_eq!(b.request_count(), 2);
    assert_eq!(a.request_count(), 2);
    // Passthrough: each caller's own key is what the upstream saw.
    let keys: Vec<String> = b
        .requests()
        .iter()
        .map(|r| r.header("authorization").unwrap_or("").to_string())
        .collect();
    assert_eq!(keys, ["Bearer sk-one", "Bearer sk-two"]);
    // Nothing else of the caller's goes with the question.
    listed(
        &gw,
        &[("authorization", "Bearer sk-one"), ("x-secret", "s")],
    )
    .await;
    assert_eq!(b.request_count(), 2);
}

#[tokio::test]
async fn the_list_stays_guarded_and_unasked_without_a_key() {
    let (a, _b, gw) = two_upstreams("[server]\napi_keys = [\"gw-key\"]").await;
    assert_eq!(get(&gw.url("/v1/models"), &[]).await.status, 401);
    assert_eq!(a.request_count(), 0);
    let list = listed(&gw, &[("x-api-key", "gw-key")]).await;
    assert!(
        list.iter().any(|(id, _)| id == "claude-sonnet-4-5"),
        "{list:?}"
    );
}
