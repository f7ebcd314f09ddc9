//! The memory-routing layer against a mock upstream, and the decision against a naive
//! reference implementation on arbitrary headers.

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use portcullis_core::UserId;
use portcullis_memory_routing::{
    BoundUserId, Config, Decision, MemoryRouter, MemoryRoutingLayer, Pattern, MAX_MATCHED_BYTES,
    MAX_MATCHED_VALUES, MAX_PATTERNS,
};
use proptest::prelude::*;
use regex::RegexBuilder;
use tokio_test::{assert_pending, assert_ready_ok};
use tower::{Layer, ServiceBuilder, ServiceExt};
use tower_test::mock;

fn pat(header: &str, pattern: &str, user_id: &str) -> Pattern {
    Pattern {
        header: header.into(),
        pattern: pattern.into(),
        user_id: user_id.into(),
    }
}

fn users_setup() -> Config {
    Config {
        patterns: vec![
            pat("user-agent", "OpenAIClientImpl/Java", "pycharm-ai"),
            pat("user-agent", "^claude-cli/", "claude-code"),
            pat("x-client", "^script-", "scripts"),
        ],
        ..Config::default()
    }
}

/// Send `req` through the layer to a mock upstream; return what the upstream received.
async fn upstream_sees(config: &Config, req: Request<String>) -> Request<String> {
    let layer = MemoryRoutingLayer::from_config(config).unwrap();
    let (mut svc, mut handle) = mock::spawn_layer::<Request<String>, Response<String>, _>(layer);
    assert_ready_ok!(svc.poll_ready());
    let fut = svc.call(req);
    let (seen, send) = handle.next_request().await.unwrap();
    send.send_response(Response::new("ok".to_owned()));
    assert_eq!(fut.await.unwrap().body(), "ok");
    seen
}

fn request(headers: &[(&str, &str)]) -> Request<String> {
    let mut b = Request::post("/v1/chat/completions");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body("{}".to_owned()).unwrap()
}

#[tokio::test]
async fn upstream_gets_the_pattern_user_id_and_the_extensions() {
    let seen = upstream_sees(
        &users_setup(),
        request(&[("User-Agent", "OpenAIClientImpl/Java (PyCharm 2025.1)")]),
    )
    .await;
    assert_eq!(seen.headers()["x-sm-user-id"], "pycharm-ai");
    assert_eq!(seen.headers().get_all("x-sm-user-id").iter().count(), 1);
    assert_eq!(
        seen.extensions().get::<UserId>().unwrap().as_str(),
        "pycharm-ai"
    );
    let d = seen.extensions().get::<Decision>().unwrap();
    assert_eq!(d.pattern_index, Some(0));
    assert_eq!(
        d.matched_pattern.as_ref().unwrap().pattern,
        "OpenAIClientImpl/Java"
    );
    assert!(!d.is_default && !d.custom_header_present);
    // The body is untouched.
    assert_eq!(seen.body(), "{}");
}

#[tokio::test]
async fn each_client_lands_in_its_own_memory_space() {
    let cfg = users_setup();
    for (headers, want) in [
        (vec![("user-agent", "OpenAIClientImpl/Java")], "pycharm-ai"),
        (
            vec![("user-agent", "claude-cli/1.0.62 (external, cli)")],
            "claude-code",
        ),
        (
            vec![
                ("user-agent", "python-requests/2.32"),
                ("x-client", "script-nightly"),
            ],
            "scripts",
        ),
        (vec![("user-agent", "curl/8.5")], "default"),
    ] {
        let seen = upstream_sees(&cfg, request(&headers)).await;
        assert_eq!(seen.headers()["x-sm-user-id"], want, "{headers:?}");
    }
}

#[tokio::test]
async fn explicit_client_header_wins_and_is_not_forwarded() {
    let seen = upstream_sees(
        &users_setup(),
        request(&[
            ("user-agent", "OpenAIClientImpl/Java"),
            ("X-Memory-User-Id", "alice"),
            ("x-sm-user-id", "mallory"),
        ]),
    )
    .await;
    assert!(seen.headers().get("x-memory-user-id").is_none());
    assert_eq!(seen.headers()["x-sm-user-id"], "alice");
    let values: Vec<_> = seen.headers().get_all("x-sm-user-id").iter().collect();
    assert_eq!(
        values,
        ["alice"],
        "the client's own x-sm-user-id is replaced, not appended to"
    );
    let d = seen.extensions().get::<Decision>().unwrap();
    assert!(d.custom_header_present && d.matched_pattern.is_none() && !d.is_default);
}

#[tokio::test]
async fn explicit_upstream_header_from_the_client_wins() {
    let seen = upstream_sees(
        &users_setup(),
        request(&[("user-agent", "claude-cli/1.0"), ("x-sm-user-id", "bob")]),
    )
    .await;
    assert_eq!(seen.headers()["x-sm-user-id"], "bob");
    assert_eq!(seen.extensions().get::<UserId>().unwrap().as_str(), "bob");
}

#[tokio::test]
async fn custom_header_names_are_honoured() {
    let cfg = Config {
        upstream_header: "X-Mem-User".into(),
        client_header: "X-Who".into(),
        default_user_id: "anon".into(),
        ..Config::default()
    };
    let seen = upstream_sees(&cfg, request(&[])).await;
    assert_eq!(seen.headers()["x-mem-user"], "anon");
    assert!(seen.headers().get("x-sm-user-id").is_none());
    let seen = upstream_sees(&cfg, request(&[("x-who", "carol")])).await;
    assert_eq!(seen.headers()["x-mem-user"], "carol");
    assert!(seen.headers().get("x-who").is_none());
}

#[tokio::test]
async fn default_is_used_and_says_so() {
    let seen = upstream_sees(&users_setup(), request(&[("user-agent", "Mozilla/5.0")])).await;
    assert_eq!(seen.headers()["x-sm-user-id"], "default");
    let d = seen.extensions().get::<Decision>().unwrap();
    assert!(d.is_default && d.matched_pattern.is_none() && !d.custom_header_present);
    assert_eq!(
        serde_json::to_value(d).unwrap(),
        serde_json::json!({
            "user_id": "default",
            "matched_pattern": null,
            "custom_header_present": false,
            "is_default": true
        })
    );
}

#[tokio::test]
async fn disabled_means_not_stacked_and_nothing_changes() {
    // The binary's `enabled = false` leaves the layer out (`option_layer(None)`).
    let svc = ServiceBuilder::new()
        .option_layer(None::<MemoryRoutingLayer>)
        .service_fn(|req: Request<String>| async move {
            assert!(req.headers().get("x-sm-user-id").is_none());
            assert_eq!(req.headers()["x-memory-user-id"], "alice");
            assert!(req.extensions().get::<Decision>().is_none());
            Ok::<_, std::convert::Infallible>(Response::new(String::new()))
        });
    svc.oneshot(request(&[("x-memory-user-id", "alice")]))
        .await
        .unwrap();
}

#[tokio::test]
async fn readiness_and_errors_pass_through() {
    let layer = MemoryRoutingLayer::from_config(&users_setup()).unwrap();
    let (mut svc, mut handle) = mock::spawn_layer::<Request<String>, Response<String>, _>(layer);
    handle.allow(0);
    assert_pending!(svc.poll_ready());
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    let fut = svc.call(request(&[]));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error(std::io::Error::other("upstream down"));
    let err = fut.await.unwrap_err();
    assert!(err.to_string().contains("upstream down"), "{err}");
}

#[tokio::test]
async fn clones_share_one_compiled_router() {
    let layer = MemoryRoutingLayer::from_config(&users_setup()).unwrap();
    let a = layer.layer(tower::service_fn(|_: Request<String>| async {
        Ok::<_, std::convert::Infallible>(Response::new(String::new()))
    }));
    let b = a.clone();
    assert!(std::sync::Arc::ptr_eq(a.router(), b.router()));
    assert!(std::sync::Arc::ptr_eq(a.router(), layer.clone().router()));
}

#[test]
fn unescaped_dot_matches_too_much_and_is_warned_about() {
    let host = |v: &str| {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-host", HeaderValue::from_str(v).unwrap());
        h
    };
    let loose = Config {
        patterns: vec![pat("x-forwarded-host", "api.openai.com", "openai")],
        ..Config::default()
    };
    let r = MemoryRouter::new(&loose).unwrap();
    assert_eq!(
        &*r.decide(&host("apixopenai.com")).user_id,
        "openai",
        "the classic bug"
    );
    let w = loose.warnings();
    assert_eq!(w.len(), 1);
    assert!(w[0].message.contains(r"'api\.openai\.com'"), "{w:?}");

    let strict = Config {
        patterns: vec![pat("x-forwarded-host", r"api\.openai\.com", "openai")],
        ..Config::default()
    };
    let r = MemoryRouter::new(&strict).unwrap();
    assert!(r.decide(&host("apixopenai.com")).is_default);
    assert_eq!(&*r.decide(&host("api.openai.com")).user_id, "openai");
    assert!(strict.warnings().is_empty());
}

#[test]
fn shadowed_patterns_are_warned_about() {
    let cfg = Config {
        patterns: vec![
            pat("User-Agent", "^.*$", "everyone"),
            pat("user-agent", "OpenAIClientImpl/Java", "pycharm-ai"),
            pat("x-client", "ide", "ide"),
        ],
        ..Config::default()
    };
    let w: Vec<String> = cfg.warnings().iter().map(ToString::to_string).collect();
    assert_eq!(
        w,
        ["patterns[1].pattern: can never match: patterns[0] (same header, pattern \"^.*$\") always matches first"]
    );
    assert!(cfg.validate().is_empty(), "a warning does not stop loading");
}

#[test]
fn every_bad_regex_is_reported_with_its_index() {
    let cfg = Config {
        patterns: vec![
            pat("user-agent", "(unclosed", "a"),
            pat("user-agent", "fine", "b"),
            pat("user-agent", "*star", "c"),
            pat("user-agent", "[z-a]", "d"),
        ],
        ..Config::default()
    };
    let problems = cfg.validate();
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "patterns[0].pattern",
            "patterns[2].pattern",
            "patterns[3].pattern"
        ]
    );
    assert!(problems
        .iter()
        .all(|p| p.message.starts_with("invalid regex: ") && !p.message.contains('\n')));
    let err = MemoryRoutingLayer::from_config(&cfg).unwrap_err();
    assert_eq!(err, problems);
}

// === property: the decision never panics and equals a naive reference ===

const CLIENT: &str = "x-memory-user-id";
const UPSTREAM: &str = "x-sm-user-id";

/// The spec, written the slow obvious way: explicit id, then each pattern in order with
/// `Regex::is_match`, then the default.
fn reference(cfg: &Config, h: &HeaderMap) -> (String, Option<usize>, bool) {
    for name in [CLIENT, UPSTREAM] {
        if let Some(v) = h.get(name) {
            if let Ok(s) = std::str::from_utf8(v.as_bytes()) {
                let t = s.trim_matches([' ', '\t']);
                if !t.is_empty() && t.len() <= 256 && t.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                    return (t.to_owned(), None, true);
                }
            }
        }
    }
    for (i, p) in cfg.patterns.iter().enumerate() {
        let re = RegexBuilder::new(&p.pattern)
            .case_insensitive(true)
            .build()
            .unwrap();
        let name = p.header.to_ascii_lowercase();
        if h.get_all(name.as_str())
            .iter()
            .any(|v| re.is_match(&String::from_utf8_lossy(v.as_bytes())))
        {
            return (p.user_id.clone(), Some(i), false);
        }
    }
    (cfg.default_user_id.clone(), None, false)
}

const PATTERN_POOL: &[&str] = &[
    ".*",
    "",
    "^a",
    "b$",
    "java",
    "OpenAIClientImpl/Java",
    "a.c",
    "^$",
    "[^a-z]",
    "\u{fffd}",
    "\u{e9}",
    "claude",
    r"\d+",
    "^x-?y",
    "(?-i)A",
    "^A+$",
    r"\s",
    "a|b",
    "^.$",
];
const HEADER_POOL: &[&str] = &[
    "user-agent",
    "User-Agent",
    "x-client",
    "X-CLIENT",
    "x-other",
];

fn patterns() -> impl Strategy<Value = Vec<Pattern>> {
    proptest::collection::vec((0..HEADER_POOL.len(), 0..PATTERN_POOL.len()), 0..12).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (h, p))| pat(HEADER_POOL[h], PATTERN_POOL[p], &format!("u{i}")))
            .collect()
    })
}

fn value_bytes() -> impl Strategy<Value = Vec<u8>> {
    let interesting =
        proptest::sample::select(b"aAbBcjavJ0123 \t\xff\xc3\xa9.-/xy\x7f\x00\x80".to_vec());
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..24),
        proptest::collection::vec(interesting, 0..12),
        Just(b"OpenAIClientImpl/Java".to_vec()),
        Just(vec![b'x'; 300]),
    ]
}

fn header_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::sample::select(
            [HEADER_POOL, &[CLIENT, UPSTREAM, "X-Memory-User-Id"]].concat()
        )
        .prop_map(|s| s.as_bytes().to_vec()),
        1 => proptest::collection::vec(any::<u8>(), 0..12),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn decide_never_panics_and_matches_the_reference(
        patterns in patterns(),
        headers in proptest::collection::vec((header_name(), value_bytes()), 0..8),
    ) {
        let cfg = Config { patterns, ..Config::default() };
        let router = MemoryRouter::new(&cfg).unwrap();
        let mut h = HeaderMap::new();
        for (name, value) in headers {
            if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(&name), HeaderValue::from_bytes(&value)) {
                h.append(n, v);
            }
        }
        let d = router.decide(&h);
        let (id, index, explicit) = reference(&cfg, &h);
        prop_assert_eq!(&*d.user_id, id.as_str());
        prop_assert_eq!(d.pattern_index, index);
        prop_assert_eq!(d.custom_header_present, explicit);
        prop_assert_eq!(d.is_default, index.is_none() && !explicit);
        prop_assert_eq!(d.header_value().as_bytes(), id.as_bytes());

        // And the service applies it: one upstream header, no client header.
        let mut applied = h.clone();
        router.apply(&d, &mut applied);
        prop_assert!(applied.get(CLIENT).is_none());
        prop_assert_eq!(applied.get_all(UPSTREAM).iter().count(), 1);
    }
}

// === issue 14: trust, bounds, keys ===

fn untrusting() -> Config {
    Config {
        trust_client_header: false,
        ..users_setup()
    }
}

/// A rate limit keyed on the user id was bypassed by rotating `x-memory-user-id`.
#[tokio::test]
async fn an_untrusted_client_cannot_name_its_user_id() {
    for i in 0..5 {
        let rotated = format!("rotating-{i}");
        let seen = upstream_sees(
            &untrusting(),
            request(&[
                ("x-memory-user-id", rotated.as_str()),
                ("x-sm-user-id", rotated.as_str()),
                ("User-Agent", "curl/8"),
            ]),
        )
        .await;
        assert_eq!(
            seen.extensions().get::<UserId>().unwrap().as_str(),
            "default",
            "the rate limit and dedup key see the gateway's decision"
        );
        // Dropped, not forwarded: only the decided id goes upstream.
        assert!(seen.headers().get("x-memory-user-id").is_none());
        let sent: Vec<_> = seen.headers().get_all("x-sm-user-id").iter().collect();
        assert_eq!(sent, ["default"]);
        let d = seen.extensions().get::<Decision>().unwrap();
        assert!(!d.custom_header_present && d.is_default);
    }
    // Patterns still apply.
    let seen = upstream_sees(
        &untrusting(),
        request(&[
            ("x-memory-user-id", "me"),
            ("User-Agent", "OpenAIClientImpl/Java"),
        ]),
    )
    .await;
    assert_eq!(seen.headers()["x-sm-user-id"], "pycharm-ai");
    // Trusted (the default): the client's id is used, as before.
    assert!(Config::default().trust_client_header);
    let seen = upstream_sees(&users_setup(), request(&[("x-memory-user-id", "me")])).await;
    assert_eq!(seen.headers()["x-sm-user-id"], "me");
}

/// "A key's user_id always wins over both."
#[tokio::test]
async fn a_key_bound_user_id_wins_over_headers_and_patterns() {
    for config in [users_setup(), untrusting()] {
        let mut req = request(&[
            ("x-memory-user-id", "me"),
            ("x-sm-user-id", "me-too"),
            ("User-Agent", "OpenAIClientImpl/Java"),
        ]);
        req.extensions_mut().insert(BoundUserId::new("team-a"));
        let seen = upstream_sees(&config, req).await;
        assert_eq!(seen.headers()["x-sm-user-id"], "team-a");
        assert_eq!(seen.headers().get_all("x-sm-user-id").iter().count(), 1);
        assert!(seen.headers().get("x-memory-user-id").is_none());
        assert_eq!(
            seen.extensions().get::<UserId>().unwrap().as_str(),
            "team-a"
        );
        let d = seen.extensions().get::<Decision>().unwrap();
        assert_eq!(d.source(), "bound");
        assert!(!d.custom_header_present && !d.is_default);
    }
    // An unusable bound id is ignored rather than sent.
    let router = MemoryRouter::new(&users_setup()).unwrap();
    let d = router.decide_for(&HeaderMap::new(), Some(&BoundUserId::new("bad\u{7f}")));
    assert!(d.is_default);
}

#[test]
fn patterns_are_capped() {
    let many = |n: usize| Config {
        patterns: (0..n)
            .map(|i| pat("user-agent", &format!("^client-{i}/"), "u"))
            .collect(),
        ..Config::default()
    };
    assert!(many(MAX_PATTERNS).validate().is_empty());
    let problems = many(MAX_PATTERNS + 1).validate();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, "patterns");
    assert!(MemoryRouter::new(&many(200)).is_err());
}

#[test]
fn only_the_first_kib_of_a_header_value_is_matched() {
    let router = MemoryRouter::new(&Config {
        patterns: vec![pat("user-agent", "needle", "found")],
        ..Config::default()
    })
    .unwrap();
    let at = |offset: usize| {
        let mut v = "a".repeat(offset);
        v.push_str("needle");
        let mut h = HeaderMap::new();
        h.insert("user-agent", HeaderValue::from_str(&v).unwrap());
        router.decide(&h).user_id.to_string()
    };
    assert_eq!(at(0), "found");
    assert_eq!(at(MAX_MATCHED_BYTES - "needle".len()), "found");
    assert_eq!(at(MAX_MATCHED_BYTES), "default", "past the first KiB");
    assert_eq!(at(300_000), "default");
}

/// Issue 14: 200 patterns and a 300 KB `User-Agent` cost 959 ms per request. Now the cost
/// does not grow with what the client sends: 50 values of 300 KB cost what 16 values of
/// 1 KiB cost (compared with each other, so the test holds on a slow or busy machine).
#[test]
fn a_huge_header_costs_no_more_than_a_small_one() {
    let patterns: Vec<Pattern> = (0..MAX_PATTERNS)
        .map(|i| pat("user-agent", &format!("client-{i}/[0-9]+"), "u"))
        .collect();
    let router = MemoryRouter::new(&Config {
        patterns,
        ..Config::default()
    })
    .unwrap();
    let headers = |value_len: usize, values: usize| {
        let v = HeaderValue::from_str(&"word ".repeat(value_len / 5)).unwrap();
        let mut h = HeaderMap::new();
        for _ in 0..values {
            h.append("user-agent", v.clone());
        }
        h
    };
    let time = |h: &HeaderMap| {
        assert!(router.decide(h).is_default);
        let start = std::time::Instant::now();
        for _ in 0..5 {
            assert!(router.decide(h).is_default);
        }
        start.elapsed()
    };
    let small = time(&headers(MAX_MATCHED_BYTES, MAX_MATCHED_VALUES));
    let huge = time(&headers(300_000, 50));
    assert!(
        huge < small * 3 + std::time::Duration::from_millis(20),
        "300 KB x 50 values took {huge:?}, 1 KiB x 16 took {small:?}"
    );
}
