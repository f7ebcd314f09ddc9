//! Configuration: sources and their order, validation with key paths, secrets.
// figment::Jail fixes the closure's error type (figment::Error), which clippy finds large.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use figment::Jail;
use portcullis::config::{AuthMode, Config, ConfigErrors, Overrides};

fn load() -> Result<portcullis::config::Loaded, ConfigErrors> {
    Config::load(None, &Overrides::default())
}

fn paths(e: &ConfigErrors) -> Vec<String> {
    e.0.iter().map(|p| p.path.clone()).collect()
}

#[test]
fn embedded_defaults_match_the_interface() {
    Jail::expect_with(|_| {
        let l = load().expect("defaults load");
        let c = l.config;
        assert_eq!(c.server.listen, "127.0.0.1:8764");
        assert_eq!(c.server.max_body_bytes, 10 * 1024 * 1024);
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(30));
        assert_eq!(c.server.threads, 0, "one serving thread per core");
        let names: Vec<_> = c.upstreams.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["openai", "anthropic"]);
        assert!(c
            .upstreams
            .iter()
            .all(|u| u.auth_mode() == AuthMode::Passthrough));
        assert_eq!(c.upstreams[0].base_url, "https://api.openai.com");
        assert_eq!(c.upstreams[1].base_url, "https://api.anthropic.com");
        let models: Vec<_> = c
            .models
            .iter()
            .map(|m| (m.name.as_str(), m.upstream.as_str()))
            .collect();
        assert_eq!(models, [("claude-*", "anthropic"), ("*", "openai")]);
        assert_eq!(c.retry.max_attempts, 3);
        assert_eq!(c.retry.retry_on, [429, 500, 502, 503, 504, 529]);
        assert_eq!(c.circuit_breaker.failure_threshold, 5);
        assert!(!c.dedup.enabled && !c.rate_limit.enabled);
        assert!(c.memory_routing.enabled);
        assert_eq!(c.memory_routing.upstream_header, "x-sm-user-id");
        Ok(())
    });
}

#[test]
fn file_then_env_then_flags() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "portcullis.toml",
            r#"
[server]
listen = "127.0.0.1:9000"
[retry]
max_attempts = 4
base_delay = "250ms"
"#,
        )?;
        // ./portcullis.toml is picked up when present.
        let c = load().expect("load").config;
        assert_eq!(c.server.listen, "127.0.0.1:9000");
        assert_eq!(c.retry.max_attempts, 4);
        assert_eq!(c.retry.base_delay, Duration::from_millis(250));

        jail.set_env("PORTCULLIS_RETRY__MAX_ATTEMPTS", "5");
        jail.set_env("PORTCULLIS_SERVER__LISTEN", "0.0.0.0:8080");
        jail.set_env("PORTCULLIS_DEDUP__CACHE_TTL", "5m");
        let c = load().expect("load").config;
        assert_eq!(c.retry.max_attempts, 5);
        assert_eq!(c.server.listen, "0.0.0.0:8080");
        assert_eq!(c.dedup.cache_ttl, Duration::from_secs(300));

        let c = Config::load(
            None,
            &Overrides {
                listen: Some("127.0.0.1:7000".into()),
            },
        )
        .expect("load")
        .config;
        assert_eq!(c.server.listen, "127.0.0.1:7000");
        Ok(())
    });
}

#[test]
fn config_env_var_and_yaml() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "gw.yaml",
            r#"
server:
  listen: "127.0.0.1:9100"
upstreams:
  - name: local
    base_url: http://127.0.0.1:11434
    auth: none
models:
  - name: "*"
    upstream: local
validation:
  level: strict
"#,
        )?;
        jail.set_env("PORTCULLIS_CONFIG", "gw.yaml");
        let l = load().expect("yaml loads");
        assert_eq!(l.config.server.listen, "127.0.0.1:9100");
        assert_eq!(l.config.upstreams.len(), 1);
        assert_eq!(l.config.upstreams[0].auth_mode(), AuthMode::None);
        Ok(())
    });
}

#[test]
fn every_problem_is_reported_with_its_key_path() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "bad.toml",
            r#"
[server]
listen = "nowhere"
colour = "blue"

[[upstreams]]
name = "ok"
base_url = "https://api.openai.com"

[[upstreams]]
name = "broken"
base_url = "ftp//nope"
timeout = "soon"

[[models]]
name = "*"
upstream = "missing"
fallbacks = ["ghost"]

[retry]
max_attempts = 0

[memory_routing]
patterns = [ { header = "user-agent", pattern = "([unclosed", user_id = "x" } ]

[mystery]
x = 1
"#,
        )?;
        let e =
            Config::load(Some("bad.toml".as_ref()), &Overrides::default()).expect_err("must fail");
        let p = paths(&e);
        for want in [
            "server.colour",
            "upstreams[1].timeout",
            "models[0].upstream",
            "models[0].fallbacks[0]",
            "retry.max_attempts",
            "memory_routing.patterns[0].pattern",
            "mystery",
        ] {
            assert!(p.iter().any(|x| x == want), "missing {want} in {p:?}\n{e}");
        }
        let text = e.to_string();
        assert!(text.contains("retry.max_attempts: must be >= 1"), "{text}");
        assert!(text.contains("unknown key"), "{text}");
        Ok(())
    });
}

#[test]
fn bad_values_after_parsing_are_all_reported() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "bad.toml",
            r#"
[server]
listen = "nowhere"
threads = 5000
cors_origins = ["https://app.example.com", "https://app.example.com/chat", "app.example.com"]
[[upstreams]]
name = "a"
base_url = "ftp://x"
[[upstreams]]
name = "a"
base_url = "not a url"
auth = "bearer"
[[models]]
name = "*"
upstream = "a"
"#,
        )?;
        let e = Config::load(Some("bad.toml".as_ref()), &Overrides::default()).unwrap_err();
        let p = paths(&e);
        for want in [
            "server.listen",
            "server.threads",
            "server.cors_origins[1]",
            "server.cors_origins[2]",
            "upstreams[0].base_url",
            "upstreams[1].name",
            "upstreams[1].base_url",
            "upstreams[1].api_key",
        ] {
            assert!(p.iter().any(|x| x == want), "missing {want} in {p:?}");
        }
        assert!(!p.iter().any(|x| x == "server.cors_origins[0]"), "{p:?}");
        Ok(())
    });
}

#[test]
fn secrets_resolve_and_missing_ones_are_named() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "s.toml",
            r#"
[[upstreams]]
name = "openai"
base_url = "https://api.openai.com"
api_key = "env:PC_TEST_OPENAI_KEY"
headers = { "x-org" = "os.environ/PC_TEST_ORG" }
[[models]]
name = "*"
upstream = "openai"
"#,
        )?;
        let e = Config::load(Some("s.toml".as_ref()), &Overrides::default()).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("environment variable PC_TEST_OPENAI_KEY is not set (referenced by upstreams[0].api_key)"),
            "{text}"
        );
        assert!(text.contains("PC_TEST_ORG"), "{text}");

        jail.set_env("PC_TEST_OPENAI_KEY", "sk-live-123");
        jail.set_env("PC_TEST_ORG", "org-9");
        let c = Config::load(Some("s.toml".as_ref()), &Overrides::default())
            .unwrap()
            .config;
        let key = c.upstreams[0].api_key.as_ref().unwrap();
        assert_eq!(key.expose(), "sk-live-123");
        // Never printed.
        assert!(!format!("{c:?}").contains("sk-live-123"));
        assert!(!serde_json::to_string(&c).unwrap().contains("sk-live-123"));
        assert_eq!(c.upstreams[0].headers["x-org"].expose(), "org-9");
        Ok(())
    });
}

#[test]
fn missing_file_and_bad_extension_are_clear() {
    Jail::expect_with(|jail| {
        let e = Config::load(Some("nope.toml".as_ref()), &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        jail.create_file("c.ini", "x=1")?;
        let e = Config::load(Some("c.ini".as_ref()), &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("extension"), "{e}");
        jail.create_file("broken.toml", "[server\nlisten=")?;
        let e = Config::load(Some("broken.toml".as_ref()), &Overrides::default()).unwrap_err();
        assert!(!e.0.is_empty());
        Ok(())
    });
}

#[test]
fn env_unknown_key_is_an_error_naming_it() {
    Jail::expect_with(|jail| {
        // A flat variable is not configuration and is left alone.
        jail.set_env("PORTCULLIS_SOMETHING_ELSE", "1");
        assert!(load().is_ok());
        jail.set_env("PORTCULLIS_RETRY__MAX_ATEMPTS", "5");
        let e = load().unwrap_err();
        assert!(paths(&e).contains(&"retry.max_atempts".to_string()), "{e}");
        Ok(())
    });
}

#[test]
fn env_unknown_section_is_an_error_naming_it() {
    Jail::expect_with(|jail| {
        jail.set_env("PORTCULLIS_NOSECTION__KEY", "1");
        assert!(paths(&load().unwrap_err()).contains(&"nosection".to_string()));
        Ok(())
    });
}

#[test]
fn problems_never_quote_a_secret() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "typed.toml",
            r#"
[[upstreams]]
name = "u"
base_url = "https://x.example"
api_keys = "sk-live-typed-0123"
[[models]]
name = "*"
upstream = "u"
"#,
        )?;
        let e = Config::load(Some("typed.toml".as_ref()), &Overrides::default()).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("upstreams[0].api_keys"), "{text}");
        assert!(!text.contains("sk-live-typed-0123"), "{text}");

        jail.create_file(
            "syntax.toml",
            "[[upstreams]]\nname = \"u\"\nbase_url = \"https://x.example\"\napi_key = \"sk-live-syntax-4567\n",
        )?;
        let e = Config::load(Some("syntax.toml".as_ref()), &Overrides::default()).unwrap_err();
        let text = e.to_string();
        assert!(!text.contains("sk-live-syntax-4567"), "{text}");
        Ok(())
    });
}

#[test]
fn a_secret_with_a_line_break_is_refused_by_check() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("PORTCULLIS_TEST_NL_KEY", "sk-abc\n");
        jail.create_file(
            "nl.toml",
            "[[upstreams]]\nname = \"u\"\nbase_url = \"https://x.example\"\napi_key = \"env:PORTCULLIS_TEST_NL_KEY\"\n[[models]]\nname = \"*\"\nupstream = \"u\"\n",
        )?;
        let e = Config::load(Some("nl.toml".as_ref()), &Overrides::default()).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("upstreams[0].api_key"), "{text}");
        assert!(text.contains("line break"), "{text}");
        assert!(!text.contains("sk-abc"), "{text}");
        Ok(())
    });
}
