//! The cookie-session layer against `tower_test` mocks, and the jar and persistence alone.

use std::time::Duration;

use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use portcullis_cookie_session::{
    persist, CallerJars, CookieJar, CookieScope, CookieSessionLayer, Jars, PersistError,
};
use portcullis_core::{ApiKeyHash, CallerId};
use tokio_test::assert_ready_ok;
use tower::Layer;
use tower_test::mock::{self, Handle, Spawn};
use url::Url;

type Req = Request<&'static str>;
type Res = Response<&'static str>;
type Svc = Spawn<portcullis_cookie_session::CookieSession<mock::Mock<Req, Res>>>;

fn url(s: &str) -> Url {
    Url::parse(s).unwrap()
}

fn set_cookies(values: &[&str]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for v in values {
        headers.append(SET_COOKIE, HeaderValue::from_str(v).unwrap());
    }
    headers
}

fn header(jar: &CookieJar, u: &str) -> Option<String> {
    jar.cookie_header_for(&url(u))
        .map(|v| v.to_str().unwrap().to_owned())
}

fn response(status: u16, cookies: &[&str]) -> Res {
    let mut res = Response::new("body");
    *res.status_mut() = StatusCode::from_u16(status).unwrap();
    *res.headers_mut() = set_cookies(cookies);
    res
}

fn session(jar: &CookieJar) -> (Svc, Handle<Req, Res>) {
    let (mock, handle) = mock::pair::<Req, Res>();
    (
        Spawn::new(CookieSessionLayer::new(jar.clone()).layer(mock)),
        handle,
    )
}

/// Send `req` through `svc`, answer it with `res`; returns what the upstream saw and got back.
async fn round_trip(
    svc: &mut Svc,
    handle: &mut Handle<Req, Res>,
    req: Req,
    res: Res,
) -> (Req, Res) {
    assert_ready_ok!(svc.poll_ready());
    let fut = svc.call(req);
    let (seen, send) = handle
        .next_request()
        .await
        .expect("request reached upstream");
    send.send_response(res);
    (seen, fut.await.expect("response"))
}

fn post(uri: &str) -> Req {
    Request::post(uri).body("{}").unwrap()
}

// === the Cloudflare story ===

#[tokio::test(start_paused = true)]
async fn cookies_from_a_503_go_out_on_the_retry() {
    let jar = CookieJar::new();
    let (mut svc, mut handle) = session(&jar);
    let uri = "https://api.example.com/v1/chat/completions";

    let (first, res) = round_trip(
        &mut svc,
        &mut handle,
        post(uri),
        response(
            503,
            &[
                "cf_clearance=clear123; Path=/; Domain=.example.com; HttpOnly; Secure",
                "__cf_bm=bm456; path=/; expires=Fri, 01 Jan 2100 00:00:00 GMT; domain=.example.com; HttpOnly; Secure; SameSite=None",
            ],
        ),
    )
    .await;
    assert!(first.headers().get(COOKIE).is_none());
    assert_eq!(res.status(), 503, "the failed response is passed on");
    assert_eq!(
        res.headers().get_all(SET_COOKIE).iter().count(),
        2,
        "Set-Cookie headers are left on the response"
    );
    assert_eq!(jar.len(), 2);

    let (retry, _) = round_trip(&mut svc, &mut handle, post(uri), response(200, &[])).await;
    let sent = retry.headers().get(COOKIE).unwrap().to_str().unwrap();
    assert!(sent.contains("cf_clearance=clear123"), "{sent}");
    assert!(sent.contains("__cf_bm=bm456"), "{sent}");
    assert_eq!(retry.headers().get_all(COOKIE).iter().count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_500_response_stores_its_cookies_too() {
    let jar = CookieJar::new();
    let (mut svc, mut handle) = session(&jar);
    round_trip(
        &mut svc,
        &mut handle,
        post("https://api.example.com/v1/messages"),
        response(500, &["sid=s1; Path=/"]),
    )
    .await;
    assert_eq!(
        header(&jar, "https://api.example.com/v1/messages").as_deref(),
        Some("sid=s1")
    );
}

#[tokio::test(start_paused = true)]
async fn an_upstream_error_stores_nothing_and_passes_through() {
    let jar = CookieJar::new();
    let (mut svc, mut handle) = session(&jar);
    assert_ready_ok!(svc.poll_ready());
    let fut = svc.call(post("https://api.example.com/"));
    handle
        .next_request()
        .await
        .unwrap()
        .1
        .send_error("connect error");
    assert_eq!(fut.await.unwrap_err().to_string(), "connect error");
    assert!(jar.is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_clients_own_cookies_are_kept_and_merged() {
    let jar = CookieJar::new();
    jar.store_response_cookies(&url("https://api.example.com/"), &set_cookies(&["jar=1"]));
    let (mut svc, mut handle) = session(&jar);
    let req = Request::post("https://api.example.com/v1")
        .header(COOKIE, "mine=a")
        .header(COOKIE, "also=b")
        .body("{}")
        .unwrap();
    let (seen, _) = round_trip(&mut svc, &mut handle, req, response(200, &[])).await;
    let all: Vec<_> = seen.headers().get_all(COOKIE).iter().collect();
    assert_eq!(all, ["mine=a; also=b; jar=1"]);
}

#[tokio::test(start_paused = true)]
async fn a_relative_uri_falls_back_to_the_host_header() {
    let jar = CookieJar::new();
    let (mut svc, mut handle) = session(&jar);
    let req = || {
        Request::post("/v1/chat/completions")
            .header("host", "upstream.test:8080")
            .body("{}")
            .unwrap()
    };
    round_trip(&mut svc, &mut handle, req(), response(503, &["a=1"])).await;
    // No Path attribute: RFC 6265's default path is the request path's directory.
    assert_eq!(
        header(&jar, "http://upstream.test:8080/v1/chat/x").as_deref(),
        Some("a=1")
    );
    assert_eq!(header(&jar, "http://upstream.test:8080/v1/models"), None);
    assert_eq!(
        header(&jar, "https://upstream.test/v1/chat/x").as_deref(),
        Some("a=1")
    );
    let (seen, _) = round_trip(&mut svc, &mut handle, req(), response(200, &[])).await;
    assert_eq!(seen.headers().get(COOKIE).unwrap(), "a=1");
}

#[tokio::test(start_paused = true)]
async fn a_request_without_uri_host_passes_through_untouched() {
    let jar = CookieJar::new();
    jar.store_response_cookies(&url("http://x.test/"), &set_cookies(&["a=1"]));
    let (mut svc, mut handle) = session(&jar);
    let (seen, res) = round_trip(&mut svc, &mut handle, post("/v1"), response(200, &["b=2"])).await;
    assert!(seen.headers().get(COOKIE).is_none());
    assert_eq!(res.headers().get(SET_COOKIE).unwrap(), "b=2");
    assert_eq!(jar.len(), 1, "nothing stored without a URL to scope it to");
}

// === RFC 6265 matching: cookies never leave the upstream that set them ===

#[test]
fn a_cookie_is_not_sent_to_another_host() {
    let jar = CookieJar::new();
    jar.store_response_cookies(&url("https://a.example/"), &set_cookies(&["k=v; Path=/"]));
    assert_eq!(header(&jar, "https://a.example/x").as_deref(), Some("k=v"));
    assert_eq!(header(&jar, "https://b.example/x"), None);
    assert_eq!(header(&jar, "https://sub.a.example/x"), None, "host-only");
}

#[test]
fn a_domain_cookie_goes_to_subdomains_only() {
    let jar = CookieJar::new();
    jar.store_response_cookies(
        &url("https://api.example.com/"),
        &set_cookies(&["d=1; Domain=example.com"]),
    );
    assert!(header(&jar, "https://other.example.com/").is_some());
    assert!(header(&jar, "https://example.com/").is_some());
    assert_eq!(header(&jar, "https://example.org/"), None);
    assert_eq!(header(&jar, "https://notexample.com/"), None);
}

#[test]
fn a_cookie_for_a_foreign_domain_is_ignored() {
    let jar = CookieJar::new();
    let stored = jar.store_response_cookies(
        &url("https://a.example/"),
        &set_cookies(&["evil=1; Domain=b.example", "ok=1"]),
    );
    assert_eq!(stored, 1);
    assert_eq!(header(&jar, "https://b.example/"), None);
}

#[test]
fn a_secure_cookie_is_not_sent_over_plain_http() {
    let jar = CookieJar::new();
    jar.store_response_cookies(
        &url("https://a.example/"),
        &set_cookies(&["s=1; Secure", "p=2"]),
    );
    assert_eq!(header(&jar, "http://a.example/").as_deref(), Some("p=2"));
    let both = header(&jar, "https://a.example/").unwrap();
    assert!(both.contains("s=1") && both.contains("p=2"), "{both}");
}

#[test]
fn a_path_scoped_cookie_is_only_sent_under_its_path() {
    let jar = CookieJar::new();
    jar.store_response_cookies(
        &url("https://a.example/"),
        &set_cookies(&["v1=yes; Path=/v1", "root=yes; Path=/"]),
    );
    assert_eq!(
        header(&jar, "https://a.example/v1/chat").as_deref(),
        Some("v1=yes; root=yes"),
        "longest path first"
    );
    assert_eq!(
        header(&jar, "https://a.example/v1").as_deref(),
        Some("v1=yes; root=yes")
    );
    assert_eq!(
        header(&jar, "https://a.example/v2/chat").as_deref(),
        Some("root=yes")
    );
    assert_eq!(
        header(&jar, "https://a.example/v10").as_deref(),
        Some("root=yes")
    );
}

#[test]
fn an_expired_set_cookie_deletes_and_a_new_value_replaces() {
    let jar = CookieJar::new();
    let u = url("https://a.example/");
    jar.store_response_cookies(&u, &set_cookies(&["a=1", "b=1"]));
    jar.store_response_cookies(&u, &set_cookies(&["a=2", "b=gone; Max-Age=0"]));
    assert_eq!(header(&jar, "https://a.example/").as_deref(), Some("a=2"));
    assert_eq!(jar.len(), 1);
}

#[test]
fn invalid_set_cookie_headers_are_skipped() {
    let jar = CookieJar::new();
    let mut headers = set_cookies(&["=novalue", "good=1"]);
    headers.append(SET_COOKIE, HeaderValue::from_bytes(b"bin=\xff").unwrap());
    assert_eq!(
        jar.store_response_cookies(&url("https://a.example/"), &headers),
        1
    );
    assert_eq!(
        header(&jar, "https://a.example/").as_deref(),
        Some("good=1")
    );
}

#[test]
fn debug_output_never_shows_values() {
    let jar = CookieJar::new();
    jar.store_response_cookies(&url("https://a.example/"), &set_cookies(&["k=supersecret"]));
    let debug = format!("{jar:?}");
    assert!(!debug.contains("supersecret"), "{debug}");
    assert!(debug.contains("cookies: 1"), "{debug}");
}

// === the bound ===

#[test]
fn the_bound_evicts_the_oldest() {
    let jar = CookieJar::with_max_cookies(3);
    let u = url("https://a.example/");
    for name in ["a", "b", "c"] {
        jar.store_response_cookies(&u, &set_cookies(&[&format!("{name}=1")]));
    }
    // Refreshing `a` makes `b` the oldest.
    jar.store_response_cookies(&u, &set_cookies(&["a=2"]));
    jar.store_response_cookies(&u, &set_cookies(&["d=1"]));
    assert_eq!(jar.len(), 3);
    assert_eq!(
        header(&jar, "https://a.example/").as_deref(),
        Some("a=2; c=1; d=1")
    );
}

#[tokio::test]
async fn the_bound_evicts_expired_cookies_first() {
    let jar = CookieJar::with_max_cookies(2);
    let u = url("https://a.example/");
    jar.store_response_cookies(&u, &set_cookies(&["old=1"]));
    jar.store_response_cookies(&u, &set_cookies(&["short=1; Max-Age=1"]));
    // cookie_store judges expiry by the wall clock, which paused tokio time cannot move, and
    // offers no way to hold an expired cookie other than letting one expire: one real second.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(jar.len(), 1, "the expired cookie no longer counts");
    jar.store_response_cookies(&u, &set_cookies(&["new=1"]));
    assert_eq!(
        header(&jar, "https://a.example/").as_deref(),
        Some("new=1; old=1")
    );
}

#[test]
fn lowering_the_bound_evicts_at_once() {
    let jar = CookieJar::new();
    let u = url("https://a.example/");
    jar.store_response_cookies(&u, &set_cookies(&["a=1", "b=1", "c=1"]));
    jar.set_max_cookies(1);
    assert_eq!(header(&jar, "https://a.example/").as_deref(), Some("c=1"));
}

#[test]
fn clear_empties_the_jar() {
    let jar = CookieJar::new();
    let before = jar.generation();
    jar.store_response_cookies(&url("https://a.example/"), &set_cookies(&["a=1"]));
    assert_ne!(jar.generation(), before);
    jar.clear();
    assert!(jar.is_empty());
    assert_eq!(header(&jar, "https://a.example/"), None);
}

/// The layer makes no URL for a jar that holds nothing (the common case, and the costly
/// part): `holds_any` must be true whenever a cookie could match, expired ones included.
#[test]
fn holds_any_says_whether_a_cookie_could_match() {
    let jar = CookieJar::new();
    assert!(!jar.holds_any());
    jar.store_response_cookies(&url("https://a.example/"), &set_cookies(&["a=1"]));
    assert!(jar.holds_any());
    jar.clear();
    assert!(!jar.holds_any());
    // A loaded jar holds what it loaded.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jars.json");
    let saved = CookieJar::new();
    saved.store_response_cookies(&url("https://a.example/"), &set_cookies(&["s=1"]));
    portcullis_cookie_session::persist::save_all(&path, &[("up", &saved)]).unwrap();
    let loaded = portcullis_cookie_session::persist::load_all(&path).unwrap();
    assert!(loaded["up"].holds_any());
}

// === persistence ===

#[test]
fn session_cookies_survive_save_all_and_load_all() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state").join("cookies.json");
    let openai = CookieJar::new();
    let anthropic = CookieJar::new();
    openai.store_response_cookies(
        &url("https://api.openai.com/"),
        &set_cookies(&[
            "__cf_bm=session; Path=/; Domain=.openai.com; HttpOnly; Secure",
            "persist=1; Max-Age=3600",
            "first=1; Path=/v1",
        ]),
    );
    anthropic.store_response_cookies(&url("https://api.anthropic.com/"), &set_cookies(&["x=1"]));

    persist::save_all(&path, &[("openai", &openai), ("anthropic", &anthropic)]).unwrap();
    assert!(!dir.path().join("state").join("cookies.json.tmp").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "cookie file readable by others: {mode:o}");
    }

    let loaded = persist::load_all(&path).unwrap();
    assert_eq!(loaded.len(), 2);
    let openai = &loaded["openai"];
    assert_eq!(openai.len(), 3);
    let sent = header(openai, "https://api.openai.com/v1/chat").unwrap();
    assert_eq!(sent, "first=1; __cf_bm=session; persist=1");
    assert_eq!(
        header(&loaded["anthropic"], "https://api.anthropic.com/").as_deref(),
        Some("x=1")
    );
    assert_eq!(
        header(&loaded["anthropic"], "https://api.openai.com/"),
        None
    );
}

#[test]
fn saving_replaces_the_previous_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cookies.json");
    let jar = CookieJar::new();
    jar.store_response_cookies(&url("https://a.example/"), &set_cookies(&["a=1"]));
    persist::save_all(&path, &[("a", &jar)]).unwrap();
    jar.clear();
    persist::save_all(&path, &[("a", &jar)]).unwrap();
    assert!(persist::load_all(&path).unwrap()["a"].is_empty());
}

#[test]
fn load_order_keeps_eviction_order() {
    let jar = CookieJar::new();
    let u = url("https://a.example/");
    for name in ["z", "y", "x"] {
        jar.store_response_cookies(&u, &set_cookies(&[&format!("{name}=1")]));
    }
    let mut buf = Vec::new();
    jar.save_json(&mut buf).unwrap();
    let loaded = CookieJar::load_json(buf.as_slice()).unwrap();
    loaded.set_max_cookies(1);
    assert_eq!(
        header(&loaded, "https://a.example/").as_deref(),
        Some("x=1")
    );
}

#[test]
fn expired_cookies_are_dropped_on_load() {
    let cookie = |name: &str, expires: &str| {
        format!(
            r#"{{ "raw_cookie": "{name}=1; Path=/", "path": ["/", true],
                 "domain": {{ "HostOnly": "a.example" }}, "expires": {expires} }}"#
        )
    };
    let json = format!(
        "[{}, {}, {}]",
        cookie("gone", r#"{ "AtUtc": "2000-01-01T00:00:00Z" }"#),
        cookie("later", r#"{ "AtUtc": "2100-01-01T00:00:00Z" }"#),
        cookie("session", r#""SessionEnd""#),
    );
    let loaded = CookieJar::load_json(json.as_bytes()).unwrap();
    assert_eq!(loaded.len(), 2);
    assert_eq!(
        header(&loaded, "https://a.example/").as_deref(),
        Some("later=1; session=1")
    );
}

#[test]
fn a_missing_file_is_an_empty_map() {
    let dir = tempfile::tempdir().unwrap();
    assert!(persist::load_all(dir.path().join("nope.json"))
        .unwrap()
        .is_empty());
}

#[test]
fn a_corrupt_file_is_a_clear_error_without_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cookies.json");
    std::fs::write(
        &path,
        "{ \"openai\": [ { \"raw_cookie\": \"\", \"secret\": \"topsecret\" ",
    )
    .unwrap();
    let err = persist::load_all(&path).unwrap_err();
    assert!(matches!(err, PersistError::Corrupt { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("cookies.json") && msg.contains("line 1"),
        "{msg}"
    );

    std::fs::write(
        &path,
        r#"{ "openai": [ { "raw_cookie": 7, "note": "topsecret" } ] }"#,
    )
    .unwrap();
    let msg = persist::load_all(&path).unwrap_err().to_string();
    assert!(msg.contains("data"), "{msg}");
    assert!(!msg.contains("topsecret"), "{msg}");
}

#[tokio::test(start_paused = true)]
async fn autosave_writes_changed_jars() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cookies.json");
    let jar = CookieJar::new();
    let task = persist::spawn_autosave(
        path.clone(),
        vec![("up".to_owned(), jar.clone())],
        Duration::from_secs(30),
    );

    tokio::time::sleep(Duration::from_secs(31)).await;
    assert!(!path.exists(), "nothing changed, nothing written");

    jar.store_response_cookies(&url("https://a.example/"), &set_cookies(&["a=1"]));
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(persist::load_all(&path).unwrap()["up"].len(), 1);
    task.abort();
}

// === issue 14: per-caller jars and a safe cookie file ===

fn caller_post(uri: &str, key: &'static str) -> Req {
    Request::post(uri)
        .header("x-api-key", key)
        .body("{}")
        .unwrap()
}

/// One jar per upstream sent the session cookie an upstream set for caller 1 on caller 2's
/// request. With `cookie_scope = "caller"` it stays with caller 1.
#[tokio::test(start_paused = true)]
async fn caller_scope_keeps_a_callers_session_to_itself() {
    let jars = CallerJars::new(10, 100);
    let (mock, mut handle) = mock::pair::<Req, Res>();
    let mut svc = Spawn::new(CookieSessionLayer::new(jars.clone()).layer(mock));
    let uri = "https://api.example.com/v1/chat/completions";

    let (first, _) = round_trip(
        &mut svc,
        &mut handle,
        caller_post(uri, "sk-one"),
        response(200, &["session=of-caller-one; Path=/"]),
    )
    .await;
    assert!(first.headers().get(COOKIE).is_none());

    let (other, _) = round_trip(
        &mut svc,
        &mut handle,
        caller_post(uri, "sk-two"),
        response(200, &[]),
    )
    .await;
    assert!(
        other.headers().get(COOKIE).is_none(),
        "caller two got caller one's session: {:?}",
        other.headers().get(COOKIE)
    );

    let (again, _) = round_trip(
        &mut svc,
        &mut handle,
        caller_post(uri, "sk-one"),
        response(200, &[]),
    )
    .await;
    assert_eq!(again.headers()[COOKIE], "session=of-caller-one");
    assert_eq!(jars.callers(), 2);
    assert_eq!(jars.len(), 1);

    // The gateway's `CallerId` extension decides over the headers (the gateway adds its own
    // provider key, the same for every caller, before this layer).
    let with_id = |key: &str| {
        let mut r = caller_post(uri, "sk-gateway-own");
        r.extensions_mut()
            .insert(CallerId::of(&HeaderMap::new(), Some(&ApiKeyHash::of(key))));
        r
    };
    round_trip(
        &mut svc,
        &mut handle,
        with_id("team-a"),
        response(200, &["team=a; Path=/"]),
    )
    .await;
    let (b, _) = round_trip(&mut svc, &mut handle, with_id("team-b"), response(200, &[])).await;
    assert!(b.headers().get(COOKIE).is_none());
    let (a, _) = round_trip(&mut svc, &mut handle, with_id("team-a"), response(200, &[])).await;
    assert_eq!(a.headers()[COOKIE], "team=a");
}

#[tokio::test(start_paused = true)]
async fn upstream_scope_still_shares_one_jar() {
    let jar = CookieJar::new();
    let (mut svc, mut handle) = session(&jar);
    let uri = "https://api.example.com/v1/chat/completions";
    round_trip(
        &mut svc,
        &mut handle,
        caller_post(uri, "sk-one"),
        response(503, &["cf_clearance=c; Path=/"]),
    )
    .await;
    let (other, _) = round_trip(
        &mut svc,
        &mut handle,
        caller_post(uri, "sk-two"),
        response(200, &[]),
    )
    .await;
    assert_eq!(other.headers()[COOKIE], "cf_clearance=c");
    assert_eq!(CookieScope::default(), CookieScope::Upstream);
    assert_eq!(
        serde_json::from_str::<CookieScope>(r#""caller""#).unwrap(),
        CookieScope::Caller
    );
}

#[test]
fn caller_jars_are_bounded_least_recently_used_first() {
    let jars = CallerJars::new(2, 10);
    let id = |k: &str| CallerId::of(&HeaderMap::new(), Some(&ApiKeyHash::of(k)));
    let u = url("https://a.example/");
    jars.jar_for(id("a"))
        .store_response_cookies(&u, &set_cookies(&["a=1"]));
    jars.jar_for(id("b"))
        .store_response_cookies(&u, &set_cookies(&["b=1"]));
    jars.jar_for(id("a")); // a is used again: b is now the least recently used
    jars.jar_for(id("c"));
    assert_eq!(jars.callers(), 2);
    assert!(jars.get(&id("b")).is_none(), "b was evicted");
    assert_eq!(
        header(&jars.get(&id("a")).unwrap(), "https://a.example/").as_deref(),
        Some("a=1")
    );
    // Many identities cannot grow it.
    for i in 0..100 {
        jars.jar_for(id(&format!("rotating-{i}")));
    }
    assert_eq!(jars.callers(), 2);
    let many: Vec<String> = (0..20).map(|i| format!("c{i}=1")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    jars.jar_for(id("x"))
        .store_response_cookies(&u, &set_cookies(&many));
    assert_eq!(
        jars.get(&id("x")).unwrap().len(),
        10,
        "max_cookies per caller"
    );
}

#[test]
fn per_caller_jars_persist_next_to_shared_ones_and_old_files_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cookies.json");
    let u = url("https://a.example/");
    let shared = CookieJar::new();
    shared.store_response_cookies(&u, &set_cookies(&["cf_clearance=1"]));
    let callers = CallerJars::new(10, 100);
    let one = CallerId::of(&HeaderMap::new(), Some(&ApiKeyHash::of("one")));
    let two = CallerId::of(&HeaderMap::new(), Some(&ApiKeyHash::of("two")));
    callers
        .jar_for(one)
        .store_response_cookies(&u, &set_cookies(&["sid=one"]));
    callers
        .jar_for(two)
        .store_response_cookies(&u, &set_cookies(&["sid=two"]));
    let (a, b) = (Jars::from(shared), Jars::from(callers));
    persist::save(&path, &[("cf", &a), ("sessions", &b)]).unwrap();

    let loaded = persist::load(&path).unwrap();
    let Jars::Upstream(cf) = &loaded["cf"] else {
        panic!("cf is shared")
    };
    assert_eq!(
        header(cf, "https://a.example/").as_deref(),
        Some("cf_clearance=1")
    );
    let Jars::Caller(sessions) = &loaded["sessions"] else {
        panic!("sessions are per caller")
    };
    assert_eq!(loaded["sessions"].scope(), CookieScope::Caller);
    assert_eq!(
        header(&sessions.get(&one).unwrap(), "https://a.example/").as_deref(),
        Some("sid=one")
    );
    assert_eq!(
        header(&sessions.get(&two).unwrap(), "https://a.example/").as_deref(),
        Some("sid=two")
    );
    // `load_all` (shared jars only) still works on the new file.
    let shared_only = persist::load_all(&path).unwrap();
    assert_eq!(shared_only.len(), 1);
    assert!(shared_only.contains_key("cf"));

    // A file of the old form (every upstream an array) loads as shared jars.
    std::fs::write(
        &path,
        r#"{ "old": [ { "raw_cookie": "k=v; Path=/", "path": ["/", true],
             "domain": { "HostOnly": "a.example" }, "expires": "SessionEnd" } ] }"#,
    )
    .unwrap();
    let loaded = persist::load(&path).unwrap();
    assert_eq!(loaded["old"].scope(), CookieScope::Upstream);
    assert_eq!(loaded["old"].len(), 1);
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

/// A planted symlink (at the old fixed `<path>.tmp`, or at the file itself) was followed.
#[cfg(unix)]
#[test]
fn saving_never_writes_through_a_planted_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cookies.json");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    std::os::unix::fs::symlink(&victim, dir.path().join("cookies.json.tmp")).unwrap();

    let jar = CookieJar::new();
    jar.store_response_cookies(&url("https://a.example/"), &set_cookies(&["a=secret"]));
    persist::save_all(&path, &[("a", &jar)]).unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert_eq!(persist::load_all(&path).unwrap()["a"].len(), 1);

    // A symlink at the file itself is replaced, not followed.
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(&victim, &path).unwrap();
    persist::save_all(&path, &[("a", &jar)]).unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(!std::fs::symlink_metadata(&path)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(mode(&path), 0o600);
    // No temp files are left behind.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp") && n != "cookies.json.tmp")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A planted 0644 file kept its mode, so the saved cookies were world-readable.
#[cfg(unix)]
#[test]
fn the_saved_file_is_0600_whatever_was_planted() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cookies.json");
    for planted in [dir.path().join("cookies.json.tmp"), path.clone()] {
        std::fs::write(&planted, "planted").unwrap();
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let jar = CookieJar::new();
    jar.store_response_cookies(&url("https://a.example/"), &set_cookies(&["a=secret"]));
    persist::save_all(&path, &[("a", &jar)]).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(persist::load_all(&path).unwrap()["a"].len(), 1);
}

// === caller-scoped jars across a restart ===

/// A layer over `jars` (any scope) and its mock upstream.
fn session_over(jars: &Jars) -> (Svc, Handle<Req, Res>) {
    let (mock, handle) = mock::pair::<Req, Res>();
    (
        Spawn::new(CookieSessionLayer::new(jars.clone()).layer(mock)),
        handle,
    )
}

/// The caller-scoped jars of upstream `name` as a starting gateway makes them.
fn start(path: &std::path::Path, name: &str, config: &portcullis_cookie_session::Config) -> Jars {
    let saved = persist::load(path).unwrap().remove(name);
    Jars::restore(CookieScope::Caller, saved, config)
}

/// Before, only shared jars were saved by the gateway: a caller's session cookie was gone after
/// a restart. Now it comes back, to that caller only.
#[tokio::test(start_paused = true)]
async fn a_callers_session_cookie_survives_a_restart_and_stays_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cookies.json");
    let config = portcullis_cookie_session::Config {
        persist_path: path.clone(),
        max_callers: 10,
        max_cookies: 100,
        ..Default::default()
    };
    let uri = "https://api.example.com/v1/responses";
    {
        let jars = start(&path, "sessions", &config);
        let (mut svc, mut handle) = session_over(&jars);
        round_trip(
            &mut svc,
            &mut handle,
            caller_post(uri, "sk-one"),
            response(200, &["session=of-caller-one; Path=/; Secure; HttpOnly"]),
        )
        .await;
        persist::save(&path, &[("sessions", &jars)]).unwrap();
    } // the layer and its jars are gone: a restart

    // The file names the caller by its identity hash, never by the key it sent.
    let file = std::fs::read_to_string(&path).unwrap();
    let one = CallerId::of(&caller_post(uri, "sk-one").headers().clone(), None);
    assert!(file.contains(&one.to_hex()), "{file}");
    assert!(!file.contains("sk-one"), "a key in the cookie file: {file}");
    #[cfg(unix)]
    assert_eq!(mode(&path), 0o600);

    let jars = start(&path, "sessions", &config);
    let (mut svc, mut handle) = session_over(&jars);
    let (other, _) = round_trip(
        &mut svc,
        &mut handle,
        caller_post(uri, "sk-two"),
        response(200, &[]),
    )
    .await;
    assert!(
        other.headers().get(COOKIE).is_none(),
        "caller two got caller one's restored session"
    );
    let (again, _) = round_trip(
        &mut svc,
        &mut handle,
        caller_post(uri, "sk-one"),
        response(200, &[]),
    )
    .await;
    assert_eq!(again.headers()[COOKIE], "session=of-caller-one");

    // Restored jars keep the configured bounds: the least recently used caller goes first.
    persist::save(&path, &[("sessions", &jars)]).unwrap();
    let one_caller = portcullis_cookie_session::Config {
        max_callers: 1,
        ..config.clone()
    };
    let Jars::Caller(kept) = start(&path, "sessions", &one_caller) else {
        panic!("per-caller jars")
    };
    assert_eq!(kept.callers(), 1);
    assert_eq!(kept.max_callers(), 1);
    assert_eq!(kept.len(), 1, "caller one, used last, is the one kept");

    // An upstream switched to `cookie_scope = "upstream"` does not hand a caller's session
    // to everyone.
    let saved = persist::load(&path).unwrap().remove("sessions");
    let shared = Jars::restore(CookieScope::Upstream, saved, &config);
    assert_eq!(shared.scope(), CookieScope::Upstream);
    assert!(shared.is_empty());
}
