//! Translation end to end: the official OpenAI and Anthropic SDKs through the gateway to mock
//! upstreams that each speak one API only (`upstreams[].api`), plain and streamed, tool
//! history, refusals and provider errors mapped to the SDK's own exceptions; and model
//! `params`/`headers` (the Supermemory setup's thinking budget); and the OpenAI Agents SDK and
//! the Vercel AI SDK (the TypeScript library most LLM apps are built on) the same way.

#[path = "support/node.rs"]
mod node;
#[path = "support/scripts.rs"]
mod scripts;
mod support;

use std::path::PathBuf;

use portcullis_mock::{MockApi, MockResponse, MockUpstream};
use serde_json::json;
use support::{post_json, TestGateway};

struct Upstreams {
    anth: MockUpstream,
    local: MockUpstream,
    _overloaded: MockUpstream,
}

async fn two_apis() -> (Upstreams, TestGateway) {
    let anth = MockUpstream::start().await.unwrap();
    anth.speak_only(MockApi::Anthropic);
    let local = MockUpstream::start().await.unwrap();
    local.speak_only(MockApi::OpenAi);
    // Anthropic answering every request `529 overloaded_error`.
    let overloaded = MockUpstream::start().await.unwrap();
    overloaded.speak_only(MockApi::Anthropic);
    overloaded.set_default(Some(MockResponse::json(
        529,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    )));
    let toml = format!(
        r#"
[[upstreams]]
name = "anth"
base_url = "{}/v3/https://api.anthropic.com"
api = "anthropic"
[[upstreams]]
name = "local"
base_url = "{}"
api = "openai"
[[upstreams]]
name = "overloaded"
base_url = "{}"
api = "anthropic"
[[models]]
name = "claude-overloaded"
upstream = "overloaded"
[[models]]
name = "claude-haiku-*"
upstream = "anth"
[[models]]
name = "claude-*"
upstream = "anth"
params = {{ thinking = {{ type = "enabled", budget_tokens = 4096 }} }}
headers = {{ x-sm-source = "portcullis" }}
[[models]]
name = "local-*"
upstream = "local"
# An OpenAI-looking name for Claude, as a team aliases one (the Agents SDK's compaction
# session takes only OpenAI model names).
[[models]]
name = "gpt-5-team"
upstream = "anth"
model = "claude-haiku-4-5"
[retry]
enabled = false
"#,
        anth.url(),
        local.url(),
        overloaded.url()
    );
    let gw = TestGateway::start(&toml).await;
    (
        Upstreams {
            anth,
            local,
            _overloaded: overloaded,
        },
        gw,
    )
}

/// `api = "openai-responses"` (OpenAI itself, vLLM, recent Ollama): chat completions and the
/// Responses API go through as sent, stored responses included, and an Anthropic client
/// (Claude Code, the Anthropic SDK) reaches the same upstream's models through chat
/// completions: one upstream entry serves Codex and Claude Code alike.
#[tokio::test]
async fn an_upstream_of_both_openai_apis_takes_both_as_sent_and_messages_translated() {
    let mock = MockUpstream::start().await.unwrap();
    mock.speak_only(MockApi::OpenAi);
    let gw = TestGateway::start(&format!(
        "[[upstreams]]\nname = \"openai\"\nbase_url = \"{}\"\napi = \"openai-responses\"\n\
         [[models]]\nname = \"gpt-*\"\nupstream = \"openai\"\n",
        mock.url()
    ))
    .await;
    let responses = json!({"model": "gpt-5", "input": "hi", "store": true,
                           "reasoning": {"effort": "low", "summary": "auto"}});
    let r = post_json(&gw.url("/v1/responses"), &responses, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    assert!(
        !id.starts_with("resp_pc"),
        "the upstream's own answer: {id}"
    );
    let chat = post_json(
        &gw.url("/v1/chat/completions"),
        &support::chat("gpt-5"),
        &[],
    )
    .await;
    assert_eq!(chat.status, 200, "{}", chat.text());
    // (A body-less request names its upstream: no `*` model here.)
    let got = support::get(
        &gw.url(&format!("/v1/responses/{id}")),
        &[("x-portcullis-upstream", "openai")],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let msgs = post_json(
        &gw.url("/v1/messages"),
        &support::messages("gpt-5"),
        &[("anthropic-version", "2023-06-01")],
    )
    .await;
    assert_eq!(msgs.status, 200, "{}", msgs.text());
    assert_eq!(msgs.json()["type"], "message", "{}", msgs.text());
    let sent: Vec<(String, Option<serde_json::Value>)> = mock
        .requests()
        .iter()
        .map(|r| (r.path.clone(), r.json()))
        .collect();
    let paths: Vec<&str> = sent.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/v1/responses",
            "/v1/chat/completions",
            &format!("/v1/responses/{id}"),
            "/v1/chat/completions"
        ],
        "the Responses request and its retrieval as sent, the Messages one as chat"
    );
    assert_eq!(
        sent[0].1.as_ref(),
        Some(&responses),
        "byte for byte the client's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_reach_an_upstream_of_the_other_api() {
    let python = tokio::task::spawn_blocking(scripts::venv_python)
        .await
        .unwrap();
    let (
        Upstreams {
            anth,
            local,
            _overloaded: _keep,
        },
        gw,
    ) = two_apis().await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/check_translation.py");
    scripts::run_checks(python, script, format!("http://{}", gw.addr), 21).await;
    // Each upstream saw only its own API: the local model no token counts (the gateway
    // estimates them), Anthropic one, Responses' `input_tokens` translated.
    let anth_paths: Vec<String> = anth.requests().into_iter().map(|r| r.path).collect();
    assert!(
        anth_paths
            .iter()
            .all(|p| p.ends_with("/v1/messages") || p.ends_with("/v1/messages/count_tokens")),
        "{anth_paths:?}"
    );
    assert_eq!(
        anth_paths
            .iter()
            .filter(|p| p.ends_with("/count_tokens"))
            .count(),
        1,
        "{anth_paths:?}"
    );
    assert!(local
        .requests()
        .iter()
        .all(|r| r.path.ends_with("/v1/chat/completions")));
    assert!(anth.request_count() >= 5 && local.request_count() >= 3);
    // A compaction item the gateway made went back up as the summary it holds.
    for upstream in [&anth, &local] {
        assert!(
            upstream.requests().iter().any(|r| r
                .json()
                .is_some_and(|b| b.to_string().contains("Summary of the earlier part"))),
            "no compaction summary went up"
        );
    }
    // The custom tool went up as a function of one string; its call and output came back
    // as Anthropic's tool_use and tool_result.
    let bodies: Vec<serde_json::Value> = anth.requests().iter().filter_map(|r| r.json()).collect();
    let patch_tool = bodies
        .iter()
        .filter_map(|b| b["tools"].as_array())
        .flatten()
        .find(|t| t["name"] == "apply_patch")
        .expect("apply_patch reached Anthropic");
    assert_eq!(patch_tool["input_schema"]["required"], json!(["input"]));
    let history = bodies
        .iter()
        .find(|b| b.to_string().contains("Done!"))
        .expect("the custom tool's output reached Anthropic");
    let blocks: Vec<&serde_json::Value> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["content"].as_array())
        .flatten()
        .collect();
    assert!(
        blocks.iter().any(|b| b["type"] == "tool_use"
            && b["input"]["input"]
                .as_str()
                .is_some_and(|i| i.contains("*** Begin Patch"))),
        "{history}"
    );
    assert!(
        blocks.iter().any(|b| b["type"] == "tool_result"),
        "{history}"
    );
    // Legacy function calling went up as a tool, one call a turn, and its history as a
    // tool_use and the tool_result naming it.
    let legacy = bodies
        .iter()
        .find(|b| b.to_string().contains("19C and cloudy"))
        .expect("the legacy function result reached Anthropic");
    assert_eq!(legacy["tools"][0]["name"], "get_weather", "{legacy}");
    assert_eq!(
        legacy["tool_choice"]["disable_parallel_tool_use"], true,
        "{legacy}"
    );
    let m = legacy["messages"].as_array().unwrap();
    let use_id = &m[1]["content"][0]["id"];
    assert_eq!(m[1]["content"][0]["type"], "tool_use", "{legacy}");
    assert_eq!(m[2]["content"][0]["tool_use_id"], *use_id, "{legacy}");
}

/// The OpenAI Agents SDK (its Responses and chat-completions models) to upstreams of the
/// other API: text, streamed, a tool call, `output_type`, `previous_response_id`, its
/// compaction session (`responses.compact`) (`tests/sdk/check_agents_sdk.py`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_agents_sdk_reaches_an_upstream_of_the_other_api() {
    let python = tokio::task::spawn_blocking(scripts::venv_python)
        .await
        .unwrap();
    let (_ups, gw) = two_apis().await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/check_agents_sdk.py");
    scripts::run_checks(python, script, format!("http://{}", gw.addr), 19).await;
}

/// The Vercel AI SDK (its OpenAI provider on the Responses API and on chat completions, its
/// Anthropic provider) to upstreams of the other API: text, streams, a two-step tool loop, a
/// PDF and an image, and structured output (`tests/sdk/check_ai_sdk.mjs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vercel_ai_sdk_reaches_an_upstream_of_the_other_api() {
    let dir = tokio::task::spawn_blocking(node::agents_dir).await.unwrap();
    let (ups, gw) = two_apis().await;
    // ESM finds the packages from the script's own folder: run a copy placed beside them.
    let script = dir.join("check_ai_sdk.mjs");
    std::fs::copy(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/check_ai_sdk.mjs"),
        &script,
    )
    .unwrap();
    scripts::run_checks("node", script, format!("http://{}", gw.addr), 28).await;
    // Each upstream was asked in its own API only, the tool results sent back up included.
    let anth = ups.anth.requests();
    assert!(anth.iter().all(|r| r.path.ends_with("/v1/messages")));
    assert!(anth.iter().any(|r| r
        .json()
        .is_some_and(|b| b.to_string().contains("tool_result"))));
    let sent = |reqs: &[portcullis_mock::RecordedRequest], what: &str| {
        reqs.iter()
            .any(|r| r.json().is_some_and(|b| b.to_string().contains(what)))
    };
    assert!(
        sent(&anth, r#""type":"document""#),
        "the PDF reached Anthropic"
    );
    // The second turn's reference went up as the earlier answer's text, never as a reference.
    assert!(!sent(&anth, "item_reference"));
    let local = ups.local.requests();
    assert!(
        sent(&local, r#""type":"file""#),
        "the PDF reached the chat upstream"
    );
    assert!(local
        .iter()
        .all(|r| r.path.ends_with("/v1/chat/completions")));
    assert!(local.iter().any(|r| r
        .json()
        .is_some_and(|b| b.to_string().contains("\"role\":\"tool\""))));
}

#[tokio::test]
async fn model_params_and_headers_reach_the_translated_request() {
    let (
        Upstreams {
            anth,
            _overloaded: _keep,
            ..
        },
        gw,
    ) = two_apis().await;
    // PyCharm's AI assistant: an OpenAI chat client, Claude behind an Anthropic-only upstream
    // (Supermemory's router), a thinking budget from the model's config.
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        &json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}),
        &[("user-agent", "OpenAIClientImpl/Java unknown")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["object"], "chat.completion");
    let seen = anth.last_request().unwrap();
    assert_eq!(seen.path, "/v3/https://api.anthropic.com/v1/messages");
    let body = seen.json().unwrap();
    assert_eq!(body["thinking"]["budget_tokens"], 4096);
    assert!(
        body["max_tokens"].as_u64().unwrap() > 4096,
        "room for the budget: {body}"
    );
    assert_eq!(seen.header("x-sm-source"), Some("portcullis"));
    assert_eq!(seen.header("anthropic-version"), Some("2023-06-01"));
    // A provider error reaches the client in its own shape.
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        &json!({"model": "claude-overloaded", "messages": [{"role": "user", "content": "hi"}]}),
        &[],
    )
    .await;
    assert!(r.status.is_server_error(), "{}", r.status);
    let msg = r.json()["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(msg.contains("Overloaded"), "{}", r.text());
}

/// Two replicas on one Redis (`state.backend = "redis"`): a Responses answer one replica
/// translated is found by the other for the next turn (`previous_response_id`,
/// `item_reference`). With Redis gone, the replica that answered still finds its own; the
/// other refuses the reference with a 400 that says why, and nothing hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_responses_are_shared_through_redis() {
    let mut redis = portcullis_mock::RedisServer::start();
    let local = MockUpstream::start().await.unwrap();
    local.speak_only(MockApi::OpenAi);
    let toml = format!(
        r#"
[state]
backend = "redis"
redis_url = "{}"
[[upstreams]]
name = "local"
base_url = "{}"
api = "openai"
[[models]]
name = "*"
upstream = "local"
[retry]
enabled = false
"#,
        redis.url(),
        local.url()
    );
    let (a, b) = (
        TestGateway::start(&toml).await,
        TestGateway::start(&toml).await,
    );
    let url = |g: &TestGateway| format!("http://{}/v1/responses", g.addr);
    let key = [("authorization", "Bearer sk-caller")];
    let first = post_json(&url(&a), &json!({"model": "llama", "input": "hi"}), &key).await;
    assert_eq!(first.status, 200);
    let first = first.json();
    let msg_id = first["output"][0]["id"].clone();

    // The other replica: by previous_response_id, then by reference.
    let r = post_json(
        &url(&b),
        &json!({"model": "llama", "input": "again", "previous_response_id": first["id"]}),
        &key,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let sent = local.requests().last().unwrap().json().unwrap();
    assert_eq!(sent["messages"][0]["content"], "hi", "{sent}");
    assert_eq!(sent["messages"][1]["role"], "assistant", "{sent}");
    let r = post_json(
        &url(&b),
        &json!({"model": "llama", "input": [{"type": "item_reference", "id": msg_id}]}),
        &key,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // Another caller, on either replica: unknown.
    let other = post_json(
        &url(&b),
        &json!({"model": "llama", "input": "x", "previous_response_id": first["id"]}),
        &[("authorization", "Bearer sk-other")],
    )
    .await;
    assert_eq!(other.status, 400);

    // Redis goes away.
    redis.stop();
    let fresh = post_json(&url(&a), &json!({"model": "llama", "input": "hi"}), &key).await;
    assert_eq!(fresh.status, 200);
    let fresh_id = fresh.json()["id"].clone();
    let started = std::time::Instant::now();
    let same = post_json(
        &url(&a),
        &json!({"model": "llama", "input": "x", "previous_response_id": fresh_id}),
        &key,
    )
    .await;
    assert_eq!(same.status, 200, "the answering replica keeps its own");
    let elsewhere = post_json(
        &url(&b),
        &json!({"model": "llama", "input": "x", "previous_response_id": fresh_id}),
        &key,
    )
    .await;
    assert_eq!(elsewhere.status, 400);
    let e = elsewhere.json();
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no stored response")),
        "{e}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}
