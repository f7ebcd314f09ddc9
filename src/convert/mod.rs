//! `portcullis convert --from litellm PATH`: a LiteLLM proxy `config.yaml` turned into the
//! equivalent portcullis TOML, with every setting that has no equivalent listed by key path.
//!
//! What maps to what:
//!
//! | LiteLLM | portcullis |
//! | --- | --- |
//! | `model_list[].model_name` (repeated: deployments) | `[[models]] name` (one entry per deployment) |
//! | `litellm_params.model` `provider/name` | the upstream (by provider and `api_base`) and `model` |
//! | `litellm_params.api_base`, `api_key` | `[[upstreams]] base_url`, `api_key` (`os.environ/X` kept) |
//! | `litellm_params.extra_headers` | `models[].headers` |
//! | `litellm_params.rpm` | `models[].rate_limit` (summed over a model's deployments) |
//! | `litellm_params.weight` | `models[].weight` |
//! | body parameters (`thinking`, `temperature`, `extra_body`, ...) | `models[].params` |
//! | `num_retries` | `retry.max_attempts = n + 1` |
//! | `fallbacks` | `models[].fallbacks` |
//! | `allowed_fails`, `cooldown_time` | `circuit_breaker.failure_threshold = n + 1`, `open_timeout` |
//! | `cache` + `cache_params` (Redis) | `[state] backend = "redis"` + `[dedup]` |
//! | `general_settings.master_key` | `server.api_keys` |
//!
//! Azure deployments go to Azure OpenAI's v1 API (`{api_base}/openai/v1/...`, the deployment
//! name as `model`), which needs no `api_version`.

mod litellm;
mod toml_out;

pub use litellm::from_litellm;

/// The result of a conversion.
#[derive(Debug, Clone, Default)]
pub struct Converted {
    /// The portcullis configuration, TOML.
    pub toml: String,
    /// One line per setting without an equivalent: `key.path: why`.
    pub unsupported: Vec<String>,
}
