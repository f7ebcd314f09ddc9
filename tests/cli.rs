//! The real binary: `check`, `route`, `serve` on embedded defaults, signals.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn run(args: &[&str], dir: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("PORTCULLIS_CONFIG")
        .output()
        .expect("run portcullis");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn version_and_help() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = run(&["--version"], dir.path());
    assert_eq!(code, 0);
    assert!(out.starts_with("portcullis "), "{out}");
    let (code, out, _) = run(&["--help"], dir.path());
    assert_eq!(code, 0);
    for sub in ["serve", "check", "route"] {
        assert!(out.contains(sub), "{out}");
    }
}

#[test]
fn check_summarises_the_embedded_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run(&["check"], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("openai -> https://api.openai.com"), "{out}");
    assert!(
        out.contains("anthropic -> https://api.anthropic.com"),
        "{out}"
    );
    assert!(out.contains("claude-* -> anthropic"), "{out}");
    assert!(out.contains("layers:"), "{out}");
}

#[test]
fn check_reports_every_problem_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        r#"
[[upstreams]]
name = "openai"
base_url = "https://api.openai.com"
api_key = "env:PORTCULLIS_SURELY_UNSET_KEY"
[[upstreams]]
name = "x"
base_url = "nope"
[[models]]
name = "*"
upstream = "openai"
[retry]
max_attempts = 0
[memory_routing]
patterns = [
  { header = "user-agent", pattern = "ok", user_id = "a" },
  { header = "user-agent", pattern = "(", user_id = "b" },
]
"#,
    )
    .unwrap();
    let (code, _out, err) = run(&["check", "--config", "bad.toml"], dir.path());
    assert_ne!(code, 0);
    for want in [
        "upstreams[1].base_url",
        "retry.max_attempts: must be >= 1",
        "environment variable PORTCULLIS_SURELY_UNSET_KEY is not set (referenced by upstreams[0].api_key)",
        "memory_routing.patterns[1].pattern",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn check_warns_about_a_shadowed_pattern() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("portcullis.toml"),
        r#"
[memory_routing]
patterns = [
  { header = "user-agent", pattern = ".*", user_id = "everyone" },
  { header = "User-Agent", pattern = "OpenAIClientImpl/Java", user_id = "pycharm-ai" },
]
"#,
    )
    .unwrap();
    let (code, out, err) = run(&["check"], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("warning: memory_routing.patterns[1]"), "{out}");
}

#[test]
fn route_prints_the_decision() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("r.toml"),
        r#"
[memory_routing]
patterns = [
  { header = "user-agent", pattern = "OpenAIClientImpl/Java", user_id = "pycharm-ai" },
  { header = "user-agent", pattern = "^claude-cli/", user_id = "claude-code" },
]
"#,
    )
    .unwrap();
    let (code, out, err) = run(
        &[
            "route",
            "--config",
            "r.toml",
            "--header",
            "User-Agent: claude-cli/1.0.3 (external, cli)",
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["user_id"], "claude-code");
    assert_eq!(v["matched_pattern"]["pattern"], "^claude-cli/");
    assert_eq!(v["is_default"], false);
    assert_eq!(v["custom_header_present"], false);

    let (_, out, _) = run(
        &[
            "route",
            "--config",
            "r.toml",
            "--header",
            "x-memory-user-id: alice",
        ],
        dir.path(),
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["user_id"], "alice");
    assert_eq!(v["custom_header_present"], true);

    let (code, _, err) = run(&["route", "--header", "no colon"], dir.path());
    assert_ne!(code, 0);
    assert!(err.contains("Name: value"), "{err}");
}

/// `portcullis` with no arguments serves the embedded defaults, logs one line naming the
/// address, and exits cleanly on SIGTERM.
#[test]
fn serve_on_embedded_defaults_and_stop_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = Command::new(BIN)
        .current_dir(dir.path())
        .env_remove("PORTCULLIS_CONFIG")
        .env("PORTCULLIS_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut started = false;
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            if line.contains("listening on") && line.contains(&format!("127.0.0.1:{port}")) {
                started = true;
                break;
            }
        }
    }
    assert!(started, "no start line naming the address");
    // It serves.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains(r#"{"status":"healthy"}"#), "{resp}");

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_supermemory_example_config_is_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(BIN)
        .args(["check", "--config", "examples/supermemory.toml"])
        .current_dir(root)
        .env("SUPERMEMORY_API_KEY", "sm-test")
        .env("ANTHROPIC_API_KEY", "sk-ant-test")
        .env("OPENAI_API_KEY", "sk-test")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("https://api.supermemory.ai/v3/https://api.anthropic.com"));
    // The API keys were resolved but are not printed.
    assert!(
        !stdout.contains("sm-test") && !stdout.contains("sk-ant-test"),
        "{stdout}"
    );
    assert!(!stdout.contains("warning"), "{stdout}");
}
