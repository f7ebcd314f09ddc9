//! Real coding agents through the gateway: OpenAI's Codex CLI (the Responses API),
//! Anthropic's Claude Code (the Messages API), opencode (either, by its provider), aider
//! (chat completions or Messages, by litellm's provider) and Continue's CLI (either, by its
//! provider), at the
//! versions `.ci/agents-setup.sh` pins
//! (installed from npm on first use), each run as users run it, pointed at the gateway in
//! front of the mock upstream: once to an upstream of its own API, once translated to the
//! other API (`upstreams[].api`), a tool call and its result included.
//!
//! What each agent sends is what its version sends on every request (Codex: a namespace of
//! sub-agent tools, the hosted web search, `client_metadata`; Claude Code: Anthropic's
//! `context_management`, thinking, `?beta=true`); the gateway must carry it or translate it.

#[path = "support/node.rs"]
mod node;
mod support;

use std::{
    path::PathBuf,
    process::{Command, Output},
};

use portcullis_mock::{MockResponse, MockUpstream, RecordedRequest};
use serde_json::{json, Value};
use support::{mock_config, TestGateway};

/// The agents' install directory (`.ci/agents-setup.sh` fills it on first use).
fn agents() -> PathBuf {
    node::agents_dir()
}

/// The gateway: `gpt-*` on an upstream of any API (Codex's own), `claude-*` on one that speaks
/// Anthropic's, `local-*` on an OpenAI chat-completions one (a local model), all the mock;
/// `extra` TOML after.
async fn gateway_with(mock: &MockUpstream, extra: &str) -> TestGateway {
    TestGateway::start(&format!(
        r#"{extra}

[[upstreams]]
name = "openai"
base_url = "{url}"
[[upstreams]]
name = "anthropic"
base_url = "{url}"
api = "anthropic"
[[upstreams]]
name = "local"
base_url = "{url}"
api = "openai"
[[models]]
name = "gpt-*"
upstream = "openai"
[[models]]
name = "claude-*"
upstream = "anthropic"
[[models]]
name = "local-*"
upstream = "local"
"#,
        url = mock.url()
    ))
    .await
}

async fn gateway(mock: &MockUpstream) -> TestGateway {
    gateway_with(mock, "").await
}

/// The agents (installed on first use), a mock and the gateway in front of it.
async fn started() -> (PathBuf, MockUpstream, TestGateway) {
    let dir = tokio::task::spawn_blocking(agents).await.unwrap();
    let mock = MockUpstream::start().await.unwrap();
    let gw = gateway(&mock).await;
    (dir, mock, gw)
}

/// `codex exec PROMPT` with `model`, its provider the gateway (Responses API), in a fresh home
/// and working directory.
async fn codex(dir: PathBuf, gateway: String, model: &str, prompt: &str) -> Output {
    let provider = format!(
        "model_providers.gw={{name=\"gw\", base_url=\"{gateway}/v1\", \
         env_key=\"OPENAI_API_KEY\", wire_api=\"responses\", request_max_retries=0, \
         stream_max_retries=0}}"
    );
    run_codex(
        dir,
        model,
        prompt,
        vec!["model_provider=gw".into(), provider],
    )
    .await
}

/// `codex exec PROMPT` with `model` and Codex's own OpenAI provider pointed at the gateway
/// (`openai_base_url`), as most users set it up: that provider opens a WebSocket on
/// `/v1/responses` first, the model in its first message, not in the URL.
async fn codex_builtin(dir: PathBuf, gateway: String, model: &str, prompt: &str) -> Output {
    codex_builtin_with(dir, gateway, model, prompt, &[]).await
}

/// [`codex_builtin`] with more `-c` settings.
async fn codex_builtin_with(
    dir: PathBuf,
    gateway: String,
    model: &str,
    prompt: &str,
    settings: &[&str],
) -> Output {
    let mut settings: Vec<String> = settings.iter().map(|s| (*s).to_owned()).collect();
    settings.push(format!("openai_base_url=\"{gateway}/v1\""));
    run_codex(dir, model, prompt, settings).await
}

/// `codex exec PROMPT` with `model` and these `-c` settings, in a fresh home and working
/// directory, killed after two minutes (a Codex waiting on a socket would hold the test
/// forever: the runtime waits for its blocking task).
async fn run_codex(dir: PathBuf, model: &str, prompt: &str, settings: Vec<String>) -> Output {
    let (model, prompt) = (model.to_owned(), prompt.to_owned());
    tokio::task::spawn_blocking(move || {
        let home = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        Command::new("timeout")
            .args(["-k", "5", "120"])
            .arg(dir.join("node_modules/.bin/codex"))
            .current_dir(work.path())
            .env("CODEX_HOME", home.path())
            .env("OPENAI_API_KEY", "sk-codex-test")
            .env_remove("OPENAI_BASE_URL")
            .args(["exec", "--skip-git-repo-check"])
            .args(settings.iter().flat_map(|s| ["-c", s.as_str()]))
            .args(["-c", &format!("model=\"{model}\""), &prompt])
            .output()
            .expect("run codex")
    })
    .await
    .unwrap()
}

/// `claude -p PROMPT` with `model`, its base URL the gateway, in a fresh home and working
/// directory; `echo` allowed without asking.
async fn claude(dir: PathBuf, gateway: String, model: &str, prompt: &str) -> Output {
    let (model, prompt) = (model.to_owned(), prompt.to_owned());
    tokio::task::spawn_blocking(move || {
        let home = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        Command::new(dir.join("node_modules/.bin/claude"))
            .current_dir(work.path())
            .env("HOME", home.path())
            .env("ANTHROPIC_BASE_URL", gateway)
            .env("ANTHROPIC_API_KEY", "sk-ant-claude-test")
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .env("DISABLE_AUTOUPDATER", "1")
            .env_remove("ANTHROPIC_AUTH_TOKEN")
            .args(["-p", &prompt, "--model", &model])
            .args(["--allowedTools", "Bash(echo:*)"])
            .output()
            .expect("run claude")
    })
    .await
    .unwrap()
}

/// `opencode run PROMPT` with `model` (`provider/model`), its built-in `anthropic` (Messages
/// API) and `openai` (Responses API) providers pointed at the gateway, in a fresh home and
/// working directory; the mock asked (by header) for one `bash` call, which runs unasked.
/// The provider lists the gateway's other models (a pattern's names are not in opencode's
/// catalogue) as a user adds them.
async fn opencode(dir: PathBuf, gateway: String, model: &str, prompt: &str) -> Output {
    let (model, prompt) = (model.to_owned(), prompt.to_owned());
    tokio::task::spawn_blocking(move || {
        let home = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let call = json!({"x-mock-tool-call":
            r#"bash {"command": "echo portcullis-ran", "description": "Print a word"}"#});
        let models = json!({"claude-sonnet-4-5": {"name": "Claude through the gateway"},
                            "local-qwen3-coder": {"name": "A local model"}});
        let provider = |key: &str| {
            json!({"options": {"baseURL": format!("{gateway}/v1"), "apiKey": key, "headers": call},
                   "models": models})
        };
        let config = json!({
            "$schema": "https://opencode.ai/config.json",
            "provider": {"anthropic": provider("sk-ant-opencode-test"),
                         "openai": provider("sk-opencode-test")},
            "permission": {"bash": "allow"},
            "autoupdate": false,
            "share": "disabled",
        });
        std::fs::write(work.path().join("opencode.json"), config.to_string()).unwrap();
        Command::new(dir.join("node_modules/.bin/opencode"))
            .current_dir(work.path())
            // opencode takes its project from `$PWD` (the test's own, else).
            .env("PWD", work.path())
            .env("HOME", home.path())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_DATA_HOME")
            .env_remove("XDG_CACHE_HOME")
            .env_remove("XDG_STATE_HOME")
            .env_remove("OPENAI_API_KEY")
            .env_remove("ANTHROPIC_API_KEY")
            .env("OPENCODE_DISABLE_AUTOUPDATE", "1")
            .args(["run", "--model", &model, &prompt])
            .output()
            .expect("run opencode")
    })
    .await
    .unwrap()
}

/// `aider --message PROMPT FILE` with `model` (litellm's `provider/model`), the gateway as its
/// OpenAI base URL and its Anthropic base URL, in a fresh home and working directory holding
/// `FILE`; edits answered in aider's `whole` format (the file's new text in a fence). Returns
/// aider's output and the file's text afterwards.
async fn aider(dir: PathBuf, gateway: String, model: &str, prompt: &str) -> (Output, String) {
    let (model, prompt) = (model.to_owned(), prompt.to_owned());
    tokio::task::spawn_blocking(move || {
        let home = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let file = work.path().join("notes.txt");
        std::fs::write(&file, "first draft\n").unwrap();
        let out = Command::new(dir.join("aider/bin/aider"))
            .current_dir(work.path())
            .env("HOME", home.path())
            .env("OPENAI_API_KEY", "sk-aider-test")
            .env("ANTHROPIC_API_KEY", "sk-ant-aider-test")
            .env("ANTHROPIC_API_BASE", &gateway)
            // litellm's model list from its package, not from GitHub.
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            .env_remove("OPENAI_API_BASE")
            .env_remove("OPENAI_BASE_URL")
            .args(["--openai-api-base", &format!("{gateway}/v1")])
            .args([
                "--model",
                &model,
                "--edit-format",
                "whole",
                "--message",
                &prompt,
            ])
            .args([
                "--yes-always",
                "--no-git",
                "--no-check-update",
                "--no-analytics",
            ])
            .args([
                "--no-show-model-warnings",
                "--no-show-release-notes",
                "--no-pretty",
            ])
            .arg("notes.txt")
            .output()
            .expect("run aider");
        (out, std::fs::read_to_string(file).unwrap())
    })
    .await
    .unwrap()
}

/// `cn -p PROMPT` (Continue's CLI, headless, every tool allowed) with one model of `provider`
/// (`openai`: chat completions; `anthropic`: the Messages API) pointed at the gateway, in a
/// fresh home and working directory; the mock asked (by header) for one `Bash` call that
/// writes `ran.txt`. Returns Continue's output and that file's text, if it was written.
async fn continue_cli(
    dir: PathBuf,
    gateway: String,
    provider: &str,
    model: &str,
    prompt: &str,
) -> (Output, Option<String>) {
    let (provider, model, prompt) = (provider.to_owned(), model.to_owned(), prompt.to_owned());
    tokio::task::spawn_blocking(move || {
        let home = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        // YAML is a superset of JSON: the config written as JSON needs no YAML writer.
        let config = json!({
            "name": "portcullis-test",
            "version": "0.0.1",
            "schema": "v1",
            "models": [{
                "name": "through the gateway",
                "provider": provider,
                "model": model,
                "apiBase": format!("{gateway}/v1/"),
                "apiKey": "sk-continue-test",
                "roles": ["chat", "edit", "apply"],
                "requestOptions": {"headers": {"x-mock-tool-call":
                    r#"Bash {"command": "echo portcullis-ran > ran.txt"}"#}},
            }],
        });
        let path = home.path().join("config.yaml");
        std::fs::write(&path, config.to_string()).unwrap();
        let out = Command::new("timeout")
            .args(["-k", "5", "120"])
            .arg(dir.join("node_modules/.bin/cn"))
            .current_dir(work.path())
            .env("HOME", home.path())
            .env_remove("OPENAI_API_KEY")
            .env_remove("ANTHROPIC_API_KEY")
            .arg("--config")
            .arg(&path)
            .args(["--auto", "-p", &prompt])
            .output()
            .expect("run cn");
        (
            out,
            std::fs::read_to_string(work.path().join("ran.txt")).ok(),
        )
    })
    .await
    .unwrap()
}

fn says(out: &Output, text: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(text),
        "the agent did not answer {text:?} ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The model calls, in the upstream's requests to `path`, in order.
fn bodies(mock: &MockUpstream, path: &str) -> Vec<Value> {
    mock.requests()
        .iter()
        .filter(|r| r.path.split('?').next() == Some(path))
        .filter_map(RecordedRequest::json)
        .collect()
}

/// Whether a chat request carries a `tool` message answering one of the mock's calls.
fn answers_the_mocks_call(body: &Value) -> bool {
    body["messages"].as_array().is_some_and(|messages| {
        messages.iter().any(|m| {
            m["role"] == "tool"
                && m["tool_call_id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with("call_mock_"))
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_works_through_the_gateway_and_translated_to_anthropic_and_a_local_model() {
    let (dir, mock, gw) = started().await;
    let url = format!("http://{}", gw.addr);

    // Its own API: the Responses request goes through as Codex sent it.
    let out = codex(dir.clone(), url.clone(), "gpt-5", "say hi").await;
    says(&out, "Hello from mock");
    let sent = bodies(&mock, "/v1/responses");
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0]["client_metadata"].is_object(), "{}", sent[0]);

    // A stream the upstream breaks off after its first events: the gateway ends it with
    // `response.failed` and the error event, and Codex reports the gateway's reason (with the
    // error event alone it said "stream closed before response.completed").
    mock.push(MockResponse::ok().abort_after(2));
    let out = codex(dir.clone(), url.clone(), "gpt-5", "say hi").await;
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success() && shown.contains("the upstream's stream broke off"),
        "{shown}"
    );

    // To Anthropic's API, with a tool call: the model (the mock, in Anthropic's shape) asks
    // for a shell command; Codex gets it as a Responses function call, runs it (or reports
    // why it could not) and sends the result, which reaches the upstream as a tool_result.
    mock.push(MockResponse::ok().tool_call("exec_command", json!({"cmd": "echo portcullis"})));
    let out = codex(dir.clone(), url, "claude-sonnet-4-5", "run echo portcullis").await;
    says(&out, "Hello from mock");
    let sent = bodies(&mock, "/v1/messages");
    assert_eq!(sent.len(), 2, "the call, then its result: {sent:?}");
    for body in &sent {
        // What Anthropic would refuse never reaches it.
        assert!(body.get("client_metadata").is_none(), "{body}");
        let tools: Vec<&str> = body["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert!(tools.contains(&"exec_command"), "{tools:?}");
    }
    let last = sent[1]["messages"].as_array().unwrap();
    let results: Vec<&Value> = last
        .iter()
        .filter_map(|m| m["content"].as_array())
        .flatten()
        .filter(|b| b["type"] == "tool_result")
        .collect();
    assert_eq!(results.len(), 1, "{}", sent[1]);
    assert!(
        results[0]["tool_use_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("toolu_mock_")),
        "{}",
        results[0]
    );

    // To a local model's chat completions, the same: the call comes back as a function
    // call, its output goes up as a tool message.
    mock.push(MockResponse::ok().tool_call("exec_command", json!({"cmd": "echo portcullis"})));
    let out = codex(
        dir,
        format!("http://{}", gw.addr),
        "local-qwen3-coder",
        "run echo portcullis",
    )
    .await;
    says(&out, "Hello from mock");
    let sent = bodies(&mock, "/v1/chat/completions");
    assert_eq!(sent.len(), 2, "the call, then its result: {sent:?}");
    assert!(
        answers_the_mocks_call(&sent[1]),
        "no tool result went upstream: {}",
        sent[1]
    );
    assert!(sent[1].get("client_metadata").is_none(), "{}", sent[1]);
}

/// Codex tried the socket once, then went on over HTTP: no reconnecting (a 404 costs it
/// several attempts, with backoff).
fn one_socket_attempt(out: &Output, model: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr
            .matches("failed to connect to Responses WebSocket")
            .count(),
        1,
        "{model}: {stderr}"
    );
    assert!(!stderr.contains("Reconnecting"), "{model}: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_on_its_own_openai_provider_falls_back_from_the_socket_to_http() {
    // Codex's built-in provider tries a WebSocket first. The gateway cannot route it by
    // model (the model is in the socket's first message) while some upstream is translated,
    // so it answers 426 and Codex sends the same request over HTTP at once, where it is
    // routed by its body's model and translated.
    let (dir, mock, gw) = started().await;
    let url = format!("http://{}", gw.addr);
    for (model, upstream_path) in [
        ("claude-sonnet-4-5", "/v1/messages"),
        ("gpt-5", "/v1/responses"),
    ] {
        mock.clear();
        let out = codex_builtin(dir.clone(), url.clone(), model, "say hi").await;
        says(&out, "Hello from mock");
        one_socket_attempt(&out, model);
        let sent = mock.requests();
        assert!(
            sent.iter()
                .all(|r| r.method == http::Method::POST && r.path.starts_with(upstream_path)),
            "{model}: only the HTTP requests went upstream: {:?}",
            sent.iter()
                .map(|r| (&r.method, &r.path))
                .collect::<Vec<_>>()
        );
        assert_eq!(bodies(&mock, upstream_path).len(), 1, "{model}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_on_its_own_provider_falls_back_at_once_from_an_upstream_without_sockets() {
    // Nothing translated: the socket goes to the `*` upstream, a local server with no
    // WebSocket (it answers the handshake 404). Passed on as is, the 404 cost Codex several
    // reconnects with backoff; as the gateway's 426 it goes on over HTTP at once.
    let dir = tokio::task::spawn_blocking(agents).await.unwrap();
    let mock = MockUpstream::start().await.unwrap();
    let gw = TestGateway::start(&mock_config(&mock.url(), "")).await;
    mock.push(MockResponse::status(404));
    // Were the 404 passed on, Codex's next attempt would find the mock's echo socket and wait
    // there for events, until `run_codex`'s bound.
    let out = codex_builtin(dir, format!("http://{}", gw.addr), "qwen3-coder", "say hi").await;
    says(&out, "Hello from mock");
    one_socket_attempt(&out, "qwen3-coder");
    let sent = mock.requests();
    assert_eq!(
        sent.iter()
            .map(|r| (r.method.as_str(), r.path.as_str()))
            .collect::<Vec<_>>(),
        [("GET", "/v1/responses"), ("POST", "/v1/responses")],
        "one handshake, then the request over HTTP"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_compacts_a_translated_session_through_the_gateway() {
    // Codex's own OpenAI provider compacts a long session with `POST /v1/responses/compact`
    // (OpenAI's endpoint), whatever the model. To Claude the gateway answers it: the model
    // writes the summary (a translated request), and Codex goes on from the compacted history.
    let (dir, mock, gw) = started().await;
    let url = format!("http://{}", gw.addr);
    // A call, so the turn goes on after the first answer: Codex, past its (tiny) limit,
    // compacts before it sends the call's output.
    mock.push(MockResponse::ok().tool_call("exec_command", json!({"cmd": "echo portcullis"})));
    let out = codex_builtin_with(
        dir,
        url,
        "claude-sonnet-4-5",
        "run echo portcullis",
        &["model_auto_compact_token_limit=1000"],
    )
    .await;
    says(&out, "Hello from mock");
    let sent = bodies(&mock, "/v1/messages");
    let asks: Vec<&Value> = sent
        .iter()
        .filter(|b| b["tool_choice"]["type"] == "none")
        .collect();
    assert_eq!(asks.len(), 1, "one summary asked of the model: {sent:?}");
    let last = asks[0]["messages"].as_array().unwrap().last().unwrap();
    assert!(last.to_string().contains("compacted"), "{last}");
    // After it, Codex's next request holds the summary instead of the earlier turns.
    let after = sent
        .iter()
        .skip_while(|b| b["tool_choice"]["type"] != "none")
        .nth(1)
        .unwrap_or_else(|| panic!("Codex went on after compacting: {sent:?}"));
    assert!(
        after
            .to_string()
            .contains("Summary of the earlier part of this conversation"),
        "{after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_works_through_the_gateway_and_translated_to_a_local_model() {
    let (dir, mock, gw) = started().await;
    let url = format!("http://{}", gw.addr);

    // Its own API.
    let out = claude(dir.clone(), url.clone(), "claude-sonnet-4-5", "say hi").await;
    says(&out, "Hello from mock");
    let sent = bodies(&mock, "/v1/messages");
    assert!(!sent.is_empty());
    assert!(
        sent.iter().any(|b| b.get("context_management").is_some()),
        "Claude Code's own fields go through: {sent:?}"
    );

    // To a local model's chat completions, with a tool call: the Bash call comes back to
    // Claude Code as a tool_use block, and its result reaches the upstream as a tool message.
    mock.push(MockResponse::ok().tool_call(
        "Bash",
        json!({"command": "echo portcullis", "description": "Print a word"}),
    ));
    let out = claude(dir, url, "local-qwen3-coder", "run echo portcullis").await;
    says(&out, "Hello from mock");
    let sent = bodies(&mock, "/v1/chat/completions");
    assert!(sent.len() >= 2, "the call, then its result: {sent:?}");
    assert!(
        sent.iter().any(answers_the_mocks_call),
        "no tool result went upstream: {sent:?}"
    );
    for body in &sent {
        // Anthropic's own knobs, which OpenAI's API would refuse, stay behind.
        assert!(body.get("context_management").is_none(), "{body}");
        assert!(body.get("output_config").is_none(), "{body}");
    }
}

/// Whether an Anthropic request carries a `tool_result` block answering one of the mock's
/// calls.
fn answers_the_mocks_tool_use(body: &Value) -> bool {
    body["messages"].as_array().is_some_and(|messages| {
        messages
            .iter()
            .filter_map(|m| m["content"].as_array())
            .flatten()
            .any(|b| {
                b["type"] == "tool_result"
                    && b["tool_use_id"]
                        .as_str()
                        .is_some_and(|id| id.starts_with("toolu_mock_"))
            })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opencode_works_through_the_gateway_and_translated_both_ways() {
    // opencode (the Vercel AI SDK underneath) as its users run it: its Anthropic provider on
    // the Messages API, its OpenAI provider on the Responses API; each run makes a `bash`
    // call, runs it and sends its output back up, then prints the model's answer.
    let (dir, mock, gw) = started().await;
    let url = format!("http://{}", gw.addr);
    // The command's output is shown on stderr, the model's answer on stdout.
    let ran = |out: &Output| {
        says(out, "Hello from mock");
        let shown = String::from_utf8_lossy(&out.stderr);
        assert!(
            shown.contains("portcullis-ran"),
            "the call did not run:\n{shown}"
        );
    };

    // Their own APIs.
    ran(&opencode(
        dir.clone(),
        url.clone(),
        "anthropic/claude-sonnet-4-5",
        "run echo",
    )
    .await);
    let sent = bodies(&mock, "/v1/messages");
    assert!(sent.iter().any(answers_the_mocks_tool_use), "{sent:?}");
    ran(&opencode(dir.clone(), url.clone(), "openai/gpt-5", "run echo").await);
    let sent = bodies(&mock, "/v1/responses");
    assert!(
        sent.iter().any(|b| b["input"]
            .as_array()
            .is_some_and(|items| items.iter().any(|i| i["type"] == "function_call_output"))),
        "{sent:?}"
    );
    mock.clear();

    // Responses -> Anthropic: the call's output reaches Claude as a tool_result.
    ran(&opencode(
        dir.clone(),
        url.clone(),
        "openai/claude-sonnet-4-5",
        "run echo",
    )
    .await);
    let sent: Vec<Value> = bodies(&mock, "/v1/messages")
        .into_iter()
        .filter(|b| b["model"] == "claude-sonnet-4-5")
        .collect();
    assert!(sent.len() >= 2, "the call, then its result: {sent:?}");
    assert!(sent.iter().any(answers_the_mocks_tool_use), "{sent:?}");
    // (opencode's title request goes to its small model, `gpt-*`: OpenAI's own upstream.)
    assert!(
        bodies(&mock, "/v1/responses")
            .iter()
            .all(|b| b["model"] != "claude-sonnet-4-5"),
        "all of Claude's translated"
    );

    // Messages -> a local model's chat completions, and Responses -> the same.
    for model in ["anthropic/local-qwen3-coder", "openai/local-qwen3-coder"] {
        mock.clear();
        ran(&opencode(dir.clone(), url.clone(), model, "run echo").await);
        let sent = bodies(&mock, "/v1/chat/completions");
        assert!(
            sent.len() >= 2,
            "{model}: the call, then its result: {sent:?}"
        );
        assert!(sent.iter().any(answers_the_mocks_call), "{model}: {sent:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aider_edits_a_file_through_the_gateway_and_translated_both_ways() {
    // aider (Python; litellm underneath, streaming) on chat completions and on Anthropic's
    // Messages API, each to its own API and translated to the other: the model's answer, in
    // aider's `whole` edit format, comes back through the gateway and aider writes the file.
    let (dir, mock, gw) = started().await;
    let url = format!("http://{}", gw.addr);
    let runs = [
        ("openai/gpt-4o", "/v1/chat/completions"),
        ("anthropic/claude-sonnet-4-5", "/v1/messages"),
        ("openai/claude-sonnet-4-5", "/v1/messages"),
        ("anthropic/local-qwen3-coder", "/v1/chat/completions"),
    ];
    for (model, upstream_path) in runs {
        mock.clear();
        let text = format!("edited through {model}");
        mock.push(MockResponse::ok().content(&format!("notes.txt\n```\n{text}\n```\n")));
        let (out, file) = aider(dir.clone(), url.clone(), model, "rewrite the notes").await;
        assert!(
            out.status.success() && file.trim() == text,
            "{model}: the file holds {file:?} ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let sent = bodies(&mock, upstream_path);
        assert_eq!(sent.len(), 1, "{model}: {:?}", mock.requests());
        assert_eq!(sent[0]["stream"], true, "{model}: aider streams");
        assert!(
            sent[0].to_string().contains("first draft"),
            "{model}: {}",
            sent[0]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continue_cli_runs_a_command_through_the_gateway_and_translated_both_ways() {
    // Continue's CLI (`cn`, the OpenAI and Anthropic SDKs underneath, streaming) on chat
    // completions and on the Messages API, each to its own API and translated to the other:
    // the model's `Bash` call reaches Continue, runs, and its result goes back up.
    let (dir, mock, gw) = started().await;
    let url = format!("http://{}", gw.addr);
    let runs = [
        ("openai", "gpt-4o", "/v1/chat/completions"),
        ("anthropic", "claude-sonnet-4-5", "/v1/messages"),
        ("openai", "claude-sonnet-4-5", "/v1/messages"),
        ("anthropic", "local-qwen3-coder", "/v1/chat/completions"),
    ];
    for (provider, model, upstream_path) in runs {
        mock.clear();
        let (out, ran) = continue_cli(dir.clone(), url.clone(), provider, model, "run echo").await;
        says(&out, "Hello from mock");
        assert_eq!(
            ran.as_deref(),
            Some("portcullis-ran\n"),
            "{provider}/{model}: the call did not run:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let sent = bodies(&mock, upstream_path);
        // The conversations alone: Continue's system prompt and tools run to pages.
        let turns: Vec<&Value> = sent.iter().map(|b| &b["messages"]).collect();
        assert!(
            sent.len() >= 2,
            "{provider}/{model}: the call, then its result: {turns:?}"
        );
        assert!(
            sent.iter().all(|b| b["stream"] == true),
            "{provider}/{model}: Continue streams"
        );
        let answered = match upstream_path {
            "/v1/messages" => sent.iter().any(answers_the_mocks_tool_use),
            _ => sent.iter().any(answers_the_mocks_call),
        };
        assert!(answered, "{provider}/{model}: {turns:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_chat_commands_are_answered_to_both_agents() {
    // What the user typed is the last text of the last user turn: Claude Code puts reminders
    // before it and a system message after it; Codex puts its context in earlier items.
    let dir = tokio::task::spawn_blocking(agents).await.unwrap();
    let mock = MockUpstream::start().await.unwrap();
    let gw = gateway_with(&mock, "[commands]\nenabled = true\n").await;
    let url = format!("http://{}", gw.addr);
    let out = claude(
        dir.clone(),
        url.clone(),
        "claude-sonnet-4-5",
        "!/set(model=claude-haiku-4-5)",
    )
    .await;
    says(&out, "model = claude-haiku-4-5");
    let out = codex(dir, url, "gpt-5", "!/show").await;
    says(&out, "This session has no settings");
    assert_eq!(mock.request_count(), 0, "answered by the gateway");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_of_each_api_work_with_every_layer_on() {
    // What each agent sends on every request passes every layer: validation, memory routing,
    // rate limit, dedup, loop detection, the tool-call loop, commands and the audit line.
    // Codex speaks the Responses API, Claude Code the Messages API, Continue (its OpenAI
    // provider) chat completions, streamed, with its tools.
    let dir = tokio::task::spawn_blocking(agents).await.unwrap();
    let mock = MockUpstream::start().await.unwrap();
    let audit = tempfile::NamedTempFile::new().unwrap();
    let gw = gateway_with(
        &mock,
        &format!(
            r#"
[memory_routing]
patterns = [{{ header = "user-agent", pattern = "^claude-cli/", user_id = "claude-code" }}]
[dedup]
enabled = true
[rate_limit]
enabled = true
requests_per_minute = 600
burst = 100
[loop_detection]
enabled = true
[tool_call_loop]
enabled = true
[commands]
enabled = true
[audit]
path = "{}"
"#,
            audit.path().display()
        ),
    )
    .await;
    let url = format!("http://{}", gw.addr);
    mock.push(MockResponse::ok().tool_call("exec_command", json!({"cmd": "echo portcullis"})));
    says(
        &codex(dir.clone(), url.clone(), "gpt-5", "run echo portcullis").await,
        "Hello from mock",
    );
    says(
        &claude(dir.clone(), url.clone(), "claude-sonnet-4-5", "say hi").await,
        "Hello from mock",
    );
    // Claude Code was told by its User-Agent: its memory user id went upstream.
    let last = mock.last_request().unwrap();
    assert_eq!(last.header("x-sm-user-id"), Some("claude-code"));
    let (out, ran) = continue_cli(dir, url, "openai", "gpt-4o", "run echo").await;
    says(&out, "Hello from mock");
    assert_eq!(
        ran.as_deref(),
        Some("portcullis-ran\n"),
        "Continue's call ran"
    );
    assert!(
        bodies(&mock, "/v1/chat/completions")
            .iter()
            .any(answers_the_mocks_call),
        "Continue's call's result went back up"
    );
    assert_eq!(
        mock.request_count(),
        5,
        "Codex's call and its result, Claude's turn, Continue's call and its result"
    );
}
