//! Configuration of the translation layer.

use portcullis_core::ConfigProblem;
use serde::{Deserialize, Serialize};

use crate::Api;

/// Which API the upstream behind the layer speaks.
///
/// `{}` is valid (`api = "any"`: no translation); unknown keys are rejected. The gateway's
/// `upstreams[].api` is an [`Api`] and builds this per upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `any` | `openai` | `anthropic`.
    pub api: Api,
}

impl Config {
    /// Every problem with this config (none is possible today; kept for the common
    /// `from_config` shape).
    pub fn validate(&self) -> Vec<ConfigProblem> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lowercase_and_rejects_unknown() {
        let c: Config = serde_json::from_str(r#"{"api":"anthropic"}"#).unwrap();
        assert_eq!(c.api, Api::Anthropic);
        let c: Config = serde_json::from_str(r#"{"api":"openai"}"#).unwrap();
        assert_eq!(c.api, Api::OpenAi);
        let c: Config = serde_json::from_str(r#"{"api":"openai-responses"}"#).unwrap();
        assert_eq!(
            (c.api, c.api.to_string().as_str()),
            (Api::OpenAiResponses, "openai-responses")
        );
        let c: Config = serde_json::from_str("{}").unwrap();
        assert_eq!(c.api, Api::Any);
        assert!(serde_json::from_str::<Config>(r#"{"api":"OpenAI"}"#).is_err());
        assert!(serde_json::from_str::<Config>(r#"{"api":"any","x":1}"#).is_err());
    }
}
