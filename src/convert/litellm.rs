//! LiteLLM proxy `config.yaml` -> portcullis TOML (see the [module docs](super)).

use serde_json::{json, Map, Value};

use super::{toml_out::Table, Converted};

/// `litellm_params` keys that are request body parameters: they become `models[].params`.
const BODY_PARAMS: &[&str] = &[
    "temperature",
    "top_p",
    "top_k",
    "max_tokens",
    "max_completion_tokens",
    "thinking",
    "reasoning_effort",
    "seed",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "n",
    "response_format",
    "tool_choice",
    "parallel_tool_calls",
    "logit_bias",
    "user",
    "metadata",
    "service_tier",
];

/// Providers that speak OpenAI's API at a known address.
const OPENAI_COMPATIBLE: &[(&str, &str)] = &[
    ("openai", "https://api.openai.com"),
    ("text-completion-openai", "https://api.openai.com"),
    ("ollama", "http://localhost:11434"),
    ("ollama_chat", "http://localhost:11434"),
    ("hosted_vllm", "http://localhost:8000"),
    ("vllm", "http://localhost:8000"),
    ("llamafile", "http://localhost:8080"),
    ("lm_studio", "http://localhost:1234"),
    ("groq", "https://api.groq.com/openai"),
    ("deepseek", "https://api.deepseek.com"),
    ("mistral", "https://api.mistral.ai"),
    ("openrouter", "https://openrouter.ai/api"),
    ("together_ai", "https://api.together.xyz"),
    ("fireworks_ai", "https://api.fireworks.ai/inference"),
    ("xai", "https://api.x.ai"),
    ("perplexity", "https://api.perplexity.ai"),
];

/// One `[[upstreams]]` entry being built, keyed by what makes two deployments share it.
#[derive(Debug)]
struct Up {
    name: String,
    base_url: String,
    api_key: Option<Value>,
    auth: &'static str,
    api: &'static str,
    headers: Map<String, Value>,
    timeout: Option<String>,
}

#[derive(Default)]
struct Out {
    unsupported: Vec<String>,
    upstreams: Vec<Up>,
    models: Vec<(usize, Table, String)>, // (model_list index, table, name)
}

impl Out {
    fn no_equivalent(&mut self, path: impl AsRef<str>) {
        self.unsupported
            .push(format!("{}: no equivalent", path.as_ref()));
    }
    fn note(&mut self, path: impl AsRef<str>, why: impl AsRef<str>) {
        self.unsupported
            .push(format!("{}: {}", path.as_ref(), why.as_ref()));
    }
}

/// Convert a LiteLLM proxy config (YAML text).
pub fn from_litellm(yaml: &str) -> Result<Converted, String> {
    let root: Value = serde_yaml::from_str(yaml).map_err(|e| format!("not valid YAML: {e}"))?;
    let root = match root {
        Value::Object(o) => o,
        Value::Null => Map::new(),
        _ => return Err("the file is not a YAML mapping".into()),
    };
    let mut out = Out::default();
    let mut sections: Vec<Table> = Vec::new();

    for (k, _) in root.iter() {
        if !matches!(
            k.as_str(),
            "model_list" | "router_settings" | "litellm_settings" | "general_settings"
        ) {
            out.no_equivalent(k);
        }
    }

    // === model_list ===
    let list = root
        .get("model_list")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, item) in list.iter().enumerate() {
        convert_model(i, item, &mut out);
    }

    // === settings: router_settings wins over litellm_settings where both say it ===
    let empty = Map::new();
    let ls = root
        .get("litellm_settings")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let rs = root
        .get("router_settings")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let gs = root
        .get("general_settings")
        .and_then(Value::as_object)
        .unwrap_or(&empty);

    let mut server = Table::section("server");
    let mut retry = Table::section("retry");
    let mut breaker = Table::section("circuit_breaker");
    let mut state = Table::section("state");
    let mut dedup = Table::section("dedup");
    let mut fallbacks: Vec<(String, Vec<String>, String)> = Vec::new();
    let mut timeout: Option<String> = None;

    for (section, map) in [("litellm_settings", ls), ("router_settings", rs)] {
        for (k, v) in map {
            let at = format!("{section}.{k}");
            match k.as_str() {
                "num_retries" => match v.as_u64() {
                    Some(n) => retry.set("max_attempts", n + 1),
                    None => out.note(&at, "not a number; ignored"),
                },
                "fallbacks" => collect_fallbacks(&at, v, &mut fallbacks, &mut out),
                "allowed_fails" => match v.as_u64() {
                    // LiteLLM cools a deployment down once it fails more than allowed_fails.
                    Some(n) => breaker.set("failure_threshold", n + 1),
                    None => out.note(&at, "not a number; ignored"),
                },
                "cooldown_time" => match secs(v) {
                    Some(s) => breaker.set("open_timeout", s),
                    None => out.note(&at, "not a number of seconds; ignored"),
                },
                "timeout" | "request_timeout" => match secs(v) {
                    Some(s) => timeout = Some(s),
                    None => out.note(&at, "not a number of seconds; ignored"),
                },
                "cache" => {
                    if v.as_bool() == Some(true) {
                        let params = map
                            .get("cache_params")
                            .and_then(Value::as_object)
                            .cloned()
                            .unwrap_or_default();
                        convert_cache(section, &params, &mut state, &mut dedup, &mut out);
                    }
                }
                "cache_params" => {} // read with `cache`
                "redis_host" | "redis_port" | "redis_password" if section == "router_settings" => {
                    if k == "redis_host" {
                        let mut p = Map::new();
                        for (from, to) in [
                            ("redis_host", "host"),
                            ("redis_port", "port"),
                            ("redis_password", "password"),
                        ] {
                            if let Some(v) = map.get(from) {
                                p.insert(to.into(), v.clone());
                            }
                        }
                        redis_url(section, &p, &mut state, &mut out);
                    }
                }
                "routing_strategy" => {
                    if v.as_str() != Some("simple-shuffle") {
                        out.note(
                            &at,
                            "no equivalent; deployments are spread by weight (smooth weighted \
                             round robin, like simple-shuffle)",
                        );
                    }
                }
                _ => out.no_equivalent(&at),
            }
        }
    }
    for (k, v) in gs {
        let at = format!("general_settings.{k}");
        match k.as_str() {
            "master_key" => server.set("api_keys", json!([v])),
            _ => out.no_equivalent(&at),
        }
    }

    // Fallbacks belong to every deployment of the model that names them.
    for (model, to, at) in &fallbacks {
        let mut found = false;
        for (_, t, name) in out.models.iter_mut() {
            if name == model {
                t.set("fallbacks", json!(to));
                found = true;
            }
        }
        let known = |n: &String| out.models.iter().any(|(_, _, m)| m == n);
        let unknown: Vec<&String> = to.iter().filter(|n| !known(n)).collect();
        if !found || !unknown.is_empty() {
            let msg = if !found {
                format!("model {model:?} is not in model_list; ignored")
            } else {
                format!("fallback model(s) {unknown:?} not in model_list")
            };
            out.note(at, msg);
        }
    }
    // Drop fallbacks that name no model (check would refuse them).
    let names: Vec<String> = out.models.iter().map(|(_, _, n)| n.clone()).collect();
    for (_, t, _) in out.models.iter_mut() {
        t.retain_fallbacks(&names);
    }

    if let Some(t) = &timeout {
        for u in &mut out.upstreams {
            u.timeout.get_or_insert_with(|| t.clone());
        }
    }

    // Per-model limits only apply with the rate-limit layer on; LiteLLM has no per-caller
    // limit by default, so the layer's own limit is set out of the way.
    let any_rpm = out.models.iter().any(|(_, t, _)| t.has("rate_limit"));
    let mut rate = Table::section("rate_limit").comment(
        "LiteLLM limits deployments (rpm), not callers: the per-caller limit is set out of the\n\
         way so only the models' rate_limit (from rpm) applies.",
    );
    if any_rpm {
        rate.set("enabled", true);
        rate.set("requests_per_minute", 1_000_000);
        rate.set("burst", 1_000_000);
        rate.set("key", "global");
    }

    let mut toml = String::from(
        "# Converted from a LiteLLM proxy config by `portcullis convert --from litellm`.\n\
         # Settings without an equivalent were listed on stderr.\n\n",
    );
    sections.extend([server, rate, retry, breaker, state, dedup]);
    for s in sections.iter().filter(|s| !s.is_empty()) {
        s.render(&mut toml);
    }
    for u in &out.upstreams {
        let mut t = Table::entry("upstreams");
        t.set("name", u.name.as_str());
        t.set("base_url", u.base_url.as_str());
        if let Some(k) = &u.api_key {
            t.set("api_key", k.clone());
        }
        t.set("auth", u.auth);
        t.set("api", u.api);
        if !u.headers.is_empty() {
            t.set("headers", Value::Object(u.headers.clone()));
        }
        if let Some(s) = &u.timeout {
            t.set("timeout", s.as_str());
        }
        t.render(&mut toml);
    }
    for (_, t, _) in &out.models {
        t.render(&mut toml);
    }
    Ok(Converted {
        toml,
        unsupported: out.unsupported,
    })
}

impl Table {
    fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Keep only fallbacks that name a converted model other than this one.
    fn retain_fallbacks(&mut self, names: &[String]) {
        let me = self.get("name").cloned();
        let Some(Value::Array(f)) = self.get("fallbacks").cloned() else {
            return;
        };
        let kept: Vec<Value> = f
            .into_iter()
            .filter(|v| Some(v) != me.as_ref())
            .filter(|v| v.as_str().is_some_and(|s| names.iter().any(|n| n == s)))
            .collect();
        if kept.is_empty() {
            self.remove("fallbacks");
        } else {
            self.set("fallbacks", Value::Array(kept));
        }
    }
}

/// Seconds (a number or a numeric string) as a duration string.
fn secs(v: &Value) -> Option<String> {
    let n = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    if n < 0.0 {
        return None;
    }
    Some(if n.fract() == 0.0 {
        format!("{}s", n as u64)
    } else {
        format!("{}ms", (n * 1000.0).round() as u64)
    })
}

/// A string value, numbers written out (YAML `port: 6379`).
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn collect_fallbacks(
    at: &str,
    v: &Value,
    into: &mut Vec<(String, Vec<String>, String)>,
    out: &mut Out,
) {
    let Some(list) = v.as_array() else {
        out.note(at, "expected a list of {model: [fallbacks]}; ignored");
        return;
    };
    for (j, item) in list.iter().enumerate() {
        let Some(map) = item.as_object() else {
            out.note(
                format!("{at}[{j}]"),
                "expected {model: [fallbacks]}; ignored",
            );
            continue;
        };
        for (model, to) in map {
            let to: Vec<String> = match to {
                Value::Array(a) => a.iter().filter_map(text).collect(),
                Value::String(s) => vec![s.clone()],
                _ => Vec::new(),
            };
            into.push((model.clone(), to, format!("{at}[{j}].{model}")));
        }
    }
}

fn convert_cache(
    section: &str,
    params: &Map<String, Value>,
    state: &mut Table,
    dedup: &mut Table,
    out: &mut Out,
) {
    let at = format!("{section}.cache_params");
    let kind = params
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("local");
    match kind {
        "redis" => redis_url(&at, params, state, out),
        "local" | "in-memory" | "in_memory" => {}
        other => {
            out.note(
                format!("{at}.type"),
                format!("no equivalent for a {other:?} cache; the in-memory cache is used"),
            );
        }
    }
    dedup.set("enabled", true);
    // LiteLLM's default TTL is 600 s.
    let ttl = params
        .get("ttl")
        .and_then(secs)
        .unwrap_or_else(|| "600s".into());
    dedup.set("cache_ttl", ttl);
    for k in params.keys() {
        if !matches!(
            k.as_str(),
            "type" | "host" | "port" | "password" | "ttl" | "url" | "redis_url"
        ) {
            out.no_equivalent(format!("{at}.{k}"));
        }
    }
}

/// `[state] backend = "redis"` from `host`/`port`/`password` (or `url`). Secret references
/// cannot be glued into one URL: then the URL itself is a reference, and stderr says what to
/// put in it.
fn redis_url(at: &str, p: &Map<String, Value>, state: &mut Table, out: &mut Out) {
    state.set("backend", "redis");
    if let Some(url) = p.get("url").or_else(|| p.get("redis_url")).and_then(text) {
        state.set("redis_url", url);
        return;
    }
    let host = p
        .get("host")
        .and_then(text)
        .unwrap_or_else(|| "127.0.0.1".into());
    let port = p
        .get("port")
        .and_then(text)
        .unwrap_or_else(|| "6379".into());
    let password = p.get("password").and_then(text).filter(|s| !s.is_empty());
    let is_ref = |s: &str| s.starts_with("os.environ/");
    if is_ref(&host) || is_ref(&port) || password.as_deref().is_some_and(is_ref) {
        state.set("redis_url", "os.environ/REDIS_URL");
        out.note(
            at,
            format!(
                "host/port/password are environment references; set REDIS_URL to \
                 redis://:<password>@<host>:<port> (host {host}, port {port}{})",
                password
                    .as_deref()
                    .map(|p| format!(", password {p}"))
                    .unwrap_or_default()
            ),
        );
        return;
    }
    let auth = password
        .map(|pw| {
            format!(
                ":{}@",
                url::form_urlencoded::byte_serialize(pw.as_bytes()).collect::<String>()
            )
        })
        .unwrap_or_default();
    state.set("redis_url", format!("redis://{auth}{host}:{port}"));
}

/// The provider of a `litellm_params.model` and the model name after the prefix.
fn provider_of(model: &str, custom: Option<&str>) -> (String, String) {
    if let Some(c) = custom {
        let name = model
            .strip_prefix(&format!("{c}/"))
            .unwrap_or(model)
            .to_string();
        return (c.to_string(), name);
    }
    match model.split_once('/') {
        Some((p, rest)) if is_provider(p) => (p.to_string(), rest.to_string()),
        // No prefix: LiteLLM infers the provider from the name.
        _ if model.starts_with("claude") => ("anthropic".into(), model.to_string()),
        _ => ("openai".into(), model.to_string()),
    }
}

fn is_provider(p: &str) -> bool {
    matches!(
        p,
        "anthropic" | "azure" | "azure_ai" | "gemini" | "vertex_ai" | "bedrock"
    ) || OPENAI_COMPATIBLE.iter().any(|(n, _)| *n == p)
        || p.chars()
            .all(|c| c.is_ascii_lowercase() || c == '_' || c == '-')
            && !p.is_empty()
            && p.len() < 24
}

fn convert_model(i: usize, item: &Value, out: &mut Out) {
    let at = format!("model_list[{i}]");
    let Some(item) = item.as_object() else {
        out.note(&at, "not a mapping; skipped");
        return;
    };
    let Some(name) = item.get("model_name").and_then(text) else {
        out.note(format!("{at}.model_name"), "missing; entry skipped");
        return;
    };
    for k in item.keys() {
        if !matches!(k.as_str(), "model_name" | "litellm_params") {
            out.no_equivalent(format!("{at}.{k}"));
        }
    }
    let empty = Map::new();
    let lp = item
        .get("litellm_params")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let lat = format!("{at}.litellm_params");
    let Some(model) = lp.get("model").and_then(text) else {
        out.note(format!("{lat}.model"), "missing; entry skipped");
        return;
    };
    let custom = lp.get("custom_llm_provider").and_then(Value::as_str);
    let (provider, upstream_model) = provider_of(&model, custom);
    let api_base = lp
        .get("api_base")
        .or_else(|| lp.get("base_url"))
        .and_then(text)
        .map(|b| b.trim_end_matches('/').to_string());
    let api_key = lp.get("api_key").cloned().filter(|v| !v.is_null());

    // Where it goes and how it authenticates.
    let mut up_headers = Map::new();
    let (base, auth, api): (String, &'static str, &'static str) = match provider.as_str() {
        "anthropic" => (
            api_base
                .clone()
                .unwrap_or_else(|| "https://api.anthropic.com".into()),
            if api_key.is_some() {
                "x-api-key"
            } else {
                "passthrough"
            },
            "anthropic",
        ),
        "azure" => {
            let Some(b) = api_base.clone() else {
                out.note(
                    format!("{lat}.api_base"),
                    "azure needs api_base; entry skipped",
                );
                return;
            };
            // Azure OpenAI's v1 API: {resource}/openai/v1/chat/completions, the deployment
            // as `model`, the key in `api-key`.
            let b = b
                .trim_end_matches("/openai")
                .trim_end_matches("/openai/v1")
                .to_string();
            if let Some(k) = &api_key {
                up_headers.insert("api-key".into(), k.clone());
            }
            (format!("{b}/openai"), "none", "openai")
        }
        p => match OPENAI_COMPATIBLE.iter().find(|(n, _)| *n == p) {
            Some((_, default_base)) => {
                // LiteLLM's OpenAI-compatible bases usually end in /v1; portcullis appends
                // the /v1/... path itself.
                let base = api_base
                    .clone()
                    .map(|b| b.strip_suffix("/v1").unwrap_or(&b).to_string())
                    .unwrap_or_else(|| default_base.to_string());
                let openai = base == "https://api.openai.com";
                let auth = match (&api_key, openai) {
                    (Some(_), _) => "bearer",
                    (None, true) => "passthrough",
                    (None, false) => "none",
                };
                // OpenAI itself speaks the Responses API too: Codex's requests go as sent.
                let api = if openai { "openai-responses" } else { "openai" };
                (base, auth, api)
            }
            None => {
                out.note(
                    format!("{lat}.model"),
                    format!("provider {p:?} has no equivalent (not an OpenAI- or Anthropic-compatible API); entry skipped"),
                );
                return;
            }
        },
    };
    let base = if base.contains("://") {
        base
    } else {
        format!("http://{base}")
    };

    // The upstream: shared by deployments with the same address, key and API.
    let key_for_upstream = if provider == "azure" {
        None
    } else {
        api_key.clone()
    };
    let idx = match out.upstreams.iter().position(|u| {
        u.base_url == base
            && u.api_key == key_for_upstream
            && u.api == api
            && u.headers == up_headers
    }) {
        Some(j) => j,
        None => {
            let name = upstream_name(&provider, api_base.as_deref(), &out.upstreams);
            let timeout = lp.get("timeout").and_then(secs);
            out.upstreams.push(Up {
                name,
                base_url: base,
                api_key: key_for_upstream,
                auth,
                api,
                headers: up_headers,
                timeout,
            });
            out.upstreams.len() - 1
        }
    };

    let mut t = Table::entry("models");
    t.set("name", name.as_str());
    t.set("upstream", out.upstreams[idx].name.as_str());
    if upstream_model != name && !upstream_model.contains('*') {
        t.set("model", upstream_model.as_str());
    }
    let mut params = Map::new();
    for (k, v) in lp {
        let path = format!("{lat}.{k}");
        match k.as_str() {
            "model" | "api_base" | "base_url" | "api_key" | "custom_llm_provider" | "timeout" => {}
            "api_version" if provider == "azure" => out.note(
                &path,
                "not needed: requests go to Azure OpenAI's v1 API ({api_base}/openai/v1/...)",
            ),
            "extra_headers" | "headers" => match v.as_object() {
                Some(h) => {
                    let h: Map<String, Value> = h
                        .iter()
                        .filter_map(|(k, v)| text(v).map(|s| (k.to_lowercase(), Value::String(s))))
                        .collect();
                    t.set("headers", Value::Object(h));
                }
                None => out.note(&path, "not a mapping; ignored"),
            },
            "rpm" => match v.as_u64().filter(|n| *n > 0) {
                Some(n) => add_rpm(&mut t, n, out, &name, &path),
                None => out.note(&path, "not a positive number; ignored"),
            },
            "weight" => match v.as_f64() {
                Some(w) => t.set("weight", (w.round() as u64).max(1)),
                None => out.note(&path, "not a number; ignored"),
            },
            "extra_body" => match v.as_object() {
                Some(b) => params.extend(b.clone()),
                None => out.note(&path, "not a mapping; ignored"),
            },
            k if BODY_PARAMS.contains(&k) => {
                params.insert(k.to_string(), v.clone());
            }
            _ => out.no_equivalent(&path),
        }
    }
    if !params.is_empty() {
        t.set("params", Value::Object(params));
    }
    out.models.push((i, t, name));
}

/// LiteLLM's `rpm` is per deployment; portcullis limits the model: the deployments' rpm add up.
fn add_rpm(t: &mut Table, n: u64, out: &mut Out, name: &str, path: &str) {
    let before: u64 = out
        .models
        .iter()
        .filter(|(_, _, m)| m == name)
        .filter_map(|(_, t, _)| t.get("rate_limit"))
        .map(|v| v["requests_per_minute"].as_u64().unwrap_or(0))
        .next()
        .unwrap_or(0);
    let total = before + n;
    let quota = json!({ "requests_per_minute": total, "burst": total });
    if before > 0 {
        out.note(
            path,
            format!("per-deployment rpm added into the limit of model {name:?} ({total} rpm)"),
        );
        for (_, other, m) in out.models.iter_mut() {
            if m == name && other.has("rate_limit") {
                other.set("rate_limit", quota.clone());
            }
        }
    }
    t.set("rate_limit", quota);
}

/// `openai`, `anthropic`, ... for a provider's own address; with an `api_base`, the provider
/// and the host (`anthropic-supermemory`, `openai-localhost-8080`); unique among `taken`.
fn upstream_name(provider: &str, api_base: Option<&str>, taken: &[Up]) -> String {
    let provider = provider.replace('_', "-");
    let base = match api_base.and_then(|b| url::Url::parse(b).ok()) {
        Some(u) => {
            let host = u.host_str().unwrap_or("");
            let label = host
                .split('.')
                .find(|l| !matches!(*l, "api" | "www" | "openai" | "inference"))
                .unwrap_or(host);
            let mut s = if host.parse::<std::net::IpAddr>().is_ok() || host == "localhost" {
                host.replace('.', "-")
            } else {
                label.to_string()
            };
            if let Some(p) = u.port() {
                s.push_str(&format!("-{p}"));
            }
            if s == provider {
                s
            } else {
                format!("{provider}-{s}")
            }
        }
        None => provider,
    };
    let mut name = base.clone();
    let mut n = 2;
    while taken.iter().any(|u| u.name == name) {
        name = format!("{base}-{n}");
        n += 1;
    }
    name
}
