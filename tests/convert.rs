//! `portcullis convert --from litellm`: LiteLLM proxy configs in the shapes the troubleshooting
//! guides have users write, converted, then loaded and checked as portcullis configs.

use std::process::Command;

use portcullis::{config::Config, convert::from_litellm};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// Convert, then load the TOML with the referenced variables set (as `check` would see them).
// figment::Jail's closure returns figment's own (large) error type.
#[allow(clippy::result_large_err)]
fn convert_and_load(yaml: &str, env: &[&str]) -> (Config, String, Vec<String>) {
    let c = from_litellm(yaml).unwrap_or_else(|e| panic!("convert: {e}"));
    let mut config = None;
    figment::Jail::expect_with(|jail| {
        for v in env {
            jail.set_env(v, format!("value-of-{v}"));
        }
        let loaded = Config::from_toml(&c.toml)
            .unwrap_or_else(|e| panic!("converted config does not load:\n{e}\n---\n{}", c.toml));
        config = Some(loaded.config);
        Ok(())
    });
    (config.unwrap(), c.toml, c.unsupported)
}

const SUPERMEMORY: &str = r#"
model_list:
  - model_name: claude-sonnet-4
    litellm_params:
      model: anthropic/claude-sonnet-4-20250514
      api_base: https://api.supermemory.ai/v3/https://api.anthropic.com
      api_key: os.environ/ANTHROPIC_API_KEY
      extra_headers:
        x-supermemory-api-key: os.environ/SUPERMEMORY_API_KEY
        x-sm-user-id: pycharm-ai
      thinking:
        type: enabled
        budget_tokens: 4096
      drop_params: true
litellm_settings:
  drop_params: true
  num_retries: 2
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
"#;

#[test]
fn supermemory_router() {
    let (cfg, toml, unsupported) = convert_and_load(
        SUPERMEMORY,
        &[
            "ANTHROPIC_API_KEY",
            "SUPERMEMORY_API_KEY",
            "LITELLM_MASTER_KEY",
        ],
    );
    assert_eq!(cfg.upstreams.len(), 1, "{toml}");
    let u = &cfg.upstreams[0];
    assert_eq!(
        u.base_url,
        "https://api.supermemory.ai/v3/https://api.anthropic.com"
    );
    assert_eq!(u.auth_mode().as_str(), "x-api-key");
    assert_eq!(u.api.to_string(), "anthropic");
    assert_eq!(
        u.api_key.as_ref().unwrap().env_name(),
        Some("ANTHROPIC_API_KEY")
    );
    assert!(toml.contains("os.environ/ANTHROPIC_API_KEY"), "{toml}");
    let m = &cfg.models[0];
    assert_eq!(m.name, "claude-sonnet-4");
    assert_eq!(m.model.as_deref(), Some("claude-sonnet-4-20250514"));
    assert_eq!(m.upstream, u.name);
    assert_eq!(
        m.headers["x-supermemory-api-key"].env_name(),
        Some("SUPERMEMORY_API_KEY")
    );
    assert_eq!(m.headers["x-sm-user-id"].expose(), "pycharm-ai");
    assert_eq!(m.params["thinking"]["budget_tokens"], 4096);
    assert_eq!(cfg.retry.max_attempts, 3, "num_retries 2 -> 3 attempts");
    assert_eq!(cfg.server.api_keys.len(), 1);
    assert_eq!(
        cfg.server.api_keys[0].env_name(),
        Some("LITELLM_MASTER_KEY")
    );
    for path in [
        "model_list[0].litellm_params.drop_params: no equivalent",
        "litellm_settings.drop_params: no equivalent",
    ] {
        assert!(
            unsupported.iter().any(|l| l == path),
            "{path}: {unsupported:?}"
        );
    }
}

const LOCAL_MULTI: &str = r#"
model_list:
  - model_name: llama3
    litellm_params:
      model: ollama/llama3.1:8b
      api_base: http://localhost:11434
  - model_name: qwen
    litellm_params:
      model: hosted_vllm/Qwen/Qwen2.5-7B-Instruct
      api_base: http://127.0.0.1:8000/v1
      rpm: 60
  - model_name: qwen
    litellm_params:
      model: openai/qwen2.5-7b-instruct
      api_base: http://127.0.0.1:8080/v1
      api_key: sk-no-key-required
      rpm: 30
      weight: 2
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_key: os.environ/OPENAI_API_KEY
      temperature: 0.2
      extra_body:
        service_tier: flex
    model_info:
      id: gpt4o-main
  - model_name: claude
    litellm_params:
      model: claude-3-5-sonnet-20241022
      api_key: os.environ/ANTHROPIC_API_KEY
      max_tokens: 1024
  - model_name: azure-gpt
    litellm_params:
      model: azure/my-gpt4o-deployment
      api_base: https://my-resource.openai.azure.com
      api_key: os.environ/AZURE_API_KEY
      api_version: "2024-10-21"
  - model_name: gemini
    litellm_params:
      model: vertex_ai/gemini-1.5-pro
router_settings:
  routing_strategy: least-busy
  timeout: 120
"#;

#[test]
fn multi_provider_local_setup() {
    let (cfg, toml, unsupported) = convert_and_load(
        LOCAL_MULTI,
        &["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AZURE_API_KEY"],
    );
    let up = |name: &str| {
        let m = cfg
            .models
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no model {name}:\n{toml}"));
        cfg.upstreams.iter().find(|u| u.name == m.upstream).unwrap()
    };
    assert_eq!(up("llama3").base_url, "http://localhost:11434");
    assert_eq!(up("llama3").auth_mode().as_str(), "none");
    assert_eq!(up("gpt-4o").base_url, "https://api.openai.com");
    assert_eq!(up("gpt-4o").auth_mode().as_str(), "bearer");
    // OpenAI itself takes the Responses API as sent; a local server only chat completions.
    assert_eq!(up("gpt-4o").api.to_string(), "openai-responses");
    assert_eq!(up("llama3").api.to_string(), "openai");
    assert_eq!(up("claude").base_url, "https://api.anthropic.com");
    assert_eq!(up("claude").auth_mode().as_str(), "x-api-key");
    assert_eq!(
        up("azure-gpt").base_url,
        "https://my-resource.openai.azure.com/openai"
    );
    assert_eq!(
        up("azure-gpt").headers["api-key"].env_name(),
        Some("AZURE_API_KEY")
    );
    assert!(cfg.upstreams.iter().all(|u| u.timeout.as_secs() == 120));

    // Two deployments of qwen: the /v1 suffix dropped (portcullis appends /v1/...), weights,
    // and their rpm added into the model's limit.
    let qwen: Vec<_> = cfg.models.iter().filter(|m| m.name == "qwen").collect();
    assert_eq!(qwen.len(), 2, "{toml}");
    let bases: Vec<_> = qwen
        .iter()
        .map(|m| {
            cfg.upstreams
                .iter()
                .find(|u| u.name == m.upstream)
                .unwrap()
                .base_url
                .clone()
        })
        .collect();
    assert_eq!(bases, ["http://127.0.0.1:8000", "http://127.0.0.1:8080"]);
    assert_eq!(qwen[0].model.as_deref(), Some("Qwen/Qwen2.5-7B-Instruct"));
    assert_eq!((qwen[0].weight, qwen[1].weight), (1, 2));
    assert_eq!(qwen[0].rate_limit.unwrap().requests_per_minute, 90);
    assert_eq!(qwen[0].rate_limit, qwen[1].rate_limit);
    assert!(cfg.rate_limit.enabled);

    let gpt = cfg.models.iter().find(|m| m.name == "gpt-4o").unwrap();
    assert_eq!(gpt.params["temperature"], 0.2);
    assert_eq!(gpt.params["service_tier"], "flex");
    assert!(gpt.model.is_none(), "same name upstream: no rewrite");
    let claude = cfg.models.iter().find(|m| m.name == "claude").unwrap();
    assert_eq!(claude.params["max_tokens"], 1024);
    assert!(cfg.models.iter().all(|m| m.name != "gemini"));

    for prefix in [
        "model_list[3].model_info: no equivalent",
        "model_list[5].litellm_params.api_version: not needed",
        "model_list[6].litellm_params.model: provider \"vertex_ai\" has no equivalent",
        "router_settings.routing_strategy: no equivalent",
    ] {
        assert!(
            unsupported.iter().any(|l| l.starts_with(prefix)),
            "{prefix}: {unsupported:#?}"
        );
    }
}

const FALLBACK_CHAIN: &str = r#"
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_key: os.environ/OPENAI_API_KEY
  - model_name: gpt-4o
    litellm_params:
      model: azure/gpt-4o-eu
      api_base: https://eu.openai.azure.com/
      api_key: os.environ/AZURE_EU_KEY
  - model_name: claude-sonnet
    litellm_params:
      model: anthropic/claude-sonnet-4-20250514
      api_key: os.environ/ANTHROPIC_API_KEY
  - model_name: local
    litellm_params:
      model: ollama_chat/llama3.1
router_settings:
  num_retries: 3
  allowed_fails: 2
  cooldown_time: 45
  fallbacks:
    - gpt-4o: ["claude-sonnet", "local"]
    - claude-sonnet: ["local", "missing-model"]
  redis_host: redis.internal
  redis_port: 6380
  redis_password: s3cret
litellm_settings:
  cache: true
  cache_params:
    type: redis
    host: redis.internal
    port: 6380
    password: s3cret
    ttl: 300
  context_window_fallbacks:
    - gpt-4o: ["claude-sonnet"]
"#;

#[test]
fn fallback_chain_with_breaker_and_redis_cache() {
    let (cfg, toml, unsupported) = convert_and_load(
        FALLBACK_CHAIN,
        &["OPENAI_API_KEY", "AZURE_EU_KEY", "ANTHROPIC_API_KEY"],
    );
    let gpt: Vec<_> = cfg.models.iter().filter(|m| m.name == "gpt-4o").collect();
    assert_eq!(gpt.len(), 2, "two deployments: {toml}");
    for m in &gpt {
        assert_eq!(m.fallbacks, ["claude-sonnet", "local"]);
    }
    let claude = cfg
        .models
        .iter()
        .find(|m| m.name == "claude-sonnet")
        .unwrap();
    assert_eq!(claude.fallbacks, ["local"], "unknown fallbacks dropped");
    assert_eq!(cfg.retry.max_attempts, 4);
    assert_eq!(cfg.circuit_breaker.failure_threshold, 3);
    assert_eq!(cfg.circuit_breaker.open_timeout.as_secs(), 45);
    assert!(matches!(
        cfg.state.backend,
        portcullis::config::StateBackend::Redis
    ));
    assert_eq!(
        cfg.state.redis_url.expose(),
        "redis://:s3cret@redis.internal:6380"
    );
    assert!(cfg.dedup.enabled);
    assert_eq!(cfg.dedup.cache_ttl.as_secs(), 300);
    for prefix in [
        "litellm_settings.context_window_fallbacks: no equivalent",
        "router_settings.fallbacks[1].claude-sonnet: fallback model(s) [\"missing-model\"]",
    ] {
        assert!(
            unsupported.iter().any(|l| l.starts_with(prefix)),
            "{prefix}: {unsupported:#?}"
        );
    }
}

#[test]
fn redis_from_environment_references_becomes_one_url_reference() {
    let yaml = r#"
model_list:
  - model_name: m
    litellm_params: { model: openai/gpt-4o-mini }
litellm_settings:
  cache: true
  cache_params:
    type: redis
    host: os.environ/REDIS_HOST
    port: os.environ/REDIS_PORT
    password: os.environ/REDIS_PASSWORD
"#;
    let (cfg, _, unsupported) = convert_and_load(yaml, &["REDIS_URL"]);
    assert_eq!(cfg.state.redis_url.env_name(), Some("REDIS_URL"));
    assert!(
        unsupported
            .iter()
            .any(|l| l.starts_with("litellm_settings.cache_params: ") && l.contains("REDIS_URL")),
        "{unsupported:?}"
    );
}

#[test]
fn the_command_prints_toml_on_stdout_and_the_rest_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("config.yaml");
    std::fs::write(&yaml, SUPERMEMORY).unwrap();
    let out = Command::new(BIN)
        .args(["convert", "--from", "litellm"])
        .arg(&yaml)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stdout.contains("[[upstreams]]") && stdout.contains("[[models]]"));
    assert!(!stdout.contains("no equivalent"));
    assert!(stderr.contains("model_list[0].litellm_params.drop_params: no equivalent"));

    // The output passes `portcullis check`.
    let toml = dir.path().join("portcullis.toml");
    std::fs::write(&toml, &stdout).unwrap();
    let check = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&toml)
        .env("ANTHROPIC_API_KEY", "x")
        .env("SUPERMEMORY_API_KEY", "y")
        .env("LITELLM_MASTER_KEY", "z")
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}\n---\n{stdout}",
        String::from_utf8_lossy(&check.stderr)
    );
}
