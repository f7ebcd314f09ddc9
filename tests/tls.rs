//! The gateway terminating TLS itself (`server.tls_cert`, `server.tls_key`): real sockets, a
//! self-signed certificate made with rcgen, and clients that negotiate the protocol by ALPN.

mod support;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis_mock::MockUpstream;
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use serde_json::json;
use support::{chat, eventually, mock_config, TestGateway};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::Mutex,
};
use tokio_rustls::TlsConnector;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// A certificate for `localhost` and its key, written as PEM files into a temp dir.
struct Pki {
    dir: tempfile::TempDir,
    cert_pem: String,
    key_pem: String,
}

impl Pki {
    fn new() -> Pki {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki {
            dir,
            cert_pem: ck.cert.pem(),
            key_pem: ck.signing_key.serialize_pem(),
        };
        std::fs::write(pki.cert(), &pki.cert_pem).unwrap();
        std::fs::write(pki.key(), &pki.key_pem).unwrap();
        pki
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    /// The `[server]` lines that turn TLS on, plus `extra`.
    fn server_section(&self, extra: &str) -> String {
        format!(
            "[server]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n{extra}",
            self.cert().display(),
            self.key().display()
        )
    }
}

/// A gateway with TLS on, in front of a plain-HTTP mock upstream.
async fn tls_gateway(pki: &Pki, extra: &str) -> (MockUpstream, TestGateway) {
    let mock = MockUpstream::start().await.unwrap();
    let gw = TestGateway::start(&mock_config(&mock.url(), &pki.server_section(extra))).await;
    (mock, gw)
}

enum Sender {
    H1(Mutex<http1::SendRequest<Full<Bytes>>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// One TLS connection to the gateway, speaking what ALPN agreed on (HTTP/1.1 without it).
struct Conn {
    alpn: Option<Vec<u8>>,
    sender: Sender,
}

struct Answer {
    status: StatusCode,
    version: Version,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

fn client_config(ca_pem: &str, alpn: &[&str]) -> rustls::ClientConfig {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    cfg
}

impl Conn {
    /// Connect, handshake (trusting `ca_pem`, offering `alpn`), then the HTTP handshake.
    async fn open(addr: SocketAddr, ca_pem: &str, alpn: &[&str]) -> std::io::Result<Conn> {
        let connector = TlsConnector::from(Arc::new(client_config(ca_pem, alpn)));
        let tcp = TcpStream::connect(addr).await?;
        let tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await?;
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let io = TokioIo::new(tls);
        let sender = if alpn.as_deref() == Some(b"h2") {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            Sender::H2(sender)
        } else {
            let (sender, conn) = http1::handshake(io).await.map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            Sender::H1(Mutex::new(sender))
        };
        Ok(Conn { alpn, sender })
    }

    async fn send(&self, method: Method, path: &str, body: Option<serde_json::Value>) -> Answer {
        let mut req = Request::builder().method(method);
        req = match &self.sender {
            // HTTP/2 carries scheme and authority as pseudo-headers: an absolute URI.
            Sender::H2(_) => req.uri(format!("https://localhost{path}")),
            Sender::H1(_) => req.uri(path).header("host", "localhost"),
        };
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(body)).unwrap();
        let resp = match &self.sender {
            Sender::H2(s) => s.clone().send_request(req).await,
            Sender::H1(s) => s.lock().await.send_request(req).await,
        }
        .expect("response");
        let (parts, body) = resp.into_parts();
        Answer {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body: body.collect().await.expect("body").to_bytes(),
        }
    }
}

#[tokio::test]
async fn http2_by_alpn_gets_a_chat_completion() {
    let pki = Pki::new();
    let (mock, gw) = tls_gateway(&pki, "").await;
    let conn = Conn::open(gw.addr, &pki.cert_pem, &["h2", "http/1.1"])
        .await
        .expect("TLS handshake");
    assert_eq!(conn.alpn.as_deref(), Some(&b"h2"[..]), "ALPN chose h2");

    let r = conn
        .send(Method::POST, "/v1/chat/completions", Some(chat("m")))
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.version, Version::HTTP_2);
    assert_eq!(r.json()["object"], "chat.completion");
    assert_eq!(
        r.headers
            .get("x-portcullis-upstream")
            .and_then(|v| v.to_str().ok()),
        Some("mock")
    );
    assert_eq!(mock.request_count(), 1);

    // Two requests at once on the one connection: HTTP/2 streams.
    let (a, b) = tokio::join!(
        conn.send(Method::POST, "/v1/chat/completions", Some(chat("a"))),
        conn.send(Method::POST, "/v1/chat/completions", Some(chat("b"))),
    );
    assert_eq!((a.status, b.status), (StatusCode::OK, StatusCode::OK));
    assert_eq!(mock.request_count(), 3);

    // The client address reaches the app: with no admin key, /admin/* answers loopback only.
    let r = conn.send(Method::GET, "/admin/usage", None).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

#[tokio::test]
async fn http11_alpn_and_no_alpn_clients_are_served_http11() {
    let pki = Pki::new();
    let (mock, gw) = tls_gateway(&pki, "").await;
    for alpn in [&["http/1.1"][..], &[]] {
        let conn = Conn::open(gw.addr, &pki.cert_pem, alpn)
            .await
            .expect("TLS handshake");
        let expected_alpn = alpn.first().map(|p| p.as_bytes());
        assert_eq!(conn.alpn.as_deref(), expected_alpn);
        for _ in 0..2 {
            // Twice: the connection is kept alive.
            let r = conn
                .send(Method::POST, "/v1/chat/completions", Some(chat("m")))
                .await;
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            assert_eq!(r.version, Version::HTTP_11);
            assert_eq!(r.json()["object"], "chat.completion");
        }
    }
    assert_eq!(mock.request_count(), 4);
}

#[tokio::test]
async fn a_client_stalled_in_the_handshake_is_closed_after_header_read_timeout() {
    let pki = Pki::new();
    let (_mock, gw) = tls_gateway(&pki, "header_read_timeout = \"1s\"").await;

    // One client never starts the handshake, one stops in the middle of its ClientHello
    // (a record header announcing 512 bytes, then nothing).
    let silent = TcpStream::connect(gw.addr).await.unwrap();
    let mut partial = TcpStream::connect(gw.addr).await.unwrap();
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .unwrap();
    let start = Instant::now();

    // Meanwhile the accept loop is free: a real client is served at once.
    let conn = Conn::open(gw.addr, &pki.cert_pem, &["h2"]).await.unwrap();
    let r = conn
        .send(Method::POST, "/v1/chat/completions", Some(chat("m")))
        .await;
    assert_eq!(r.status, 200);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "a stalled handshake held up the accept loop"
    );

    for (name, mut stalled) in [("silent", silent), ("partial", partial)] {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(6), stalled.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{name}: still open after 6 s"));
        // Closed: end of stream, or a reset when unread bytes were left behind.
        assert!(matches!(read, Ok(0) | Err(_)), "{name}: read {read:?}");
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(950) && waited < Duration::from_secs(4),
            "{name}: closed after {waited:?}"
        );
    }
}

#[tokio::test]
async fn plain_http_on_the_tls_port_is_closed() {
    let pki = Pki::new();
    let (mock, gw) = tls_gateway(&pki, "").await;
    let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut got))
        .await
        .expect("closed");
    assert!(!got.starts_with(b"HTTP/"), "answered in plain text");
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test]
async fn max_connections_counts_tls_connections() {
    let pki = Pki::new();
    let (_mock, gw) = tls_gateway(&pki, "max_connections = 1").await;
    let first = Conn::open(gw.addr, &pki.cert_pem, &["http/1.1"])
        .await
        .unwrap();
    assert_eq!(first.send(Method::GET, "/health", None).await.status, 200);

    // The second waits in the backlog: its handshake does not complete...
    let ca = pki.cert_pem.clone();
    let addr = gw.addr;
    let second = tokio::spawn(async move { Conn::open(addr, &ca, &["h2"]).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!second.is_finished(), "a second connection was served");

    // ...until the first one goes.
    drop(first);
    let second = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("second connection served once the first closed")
        .unwrap()
        .unwrap();
    assert_eq!(second.send(Method::GET, "/health", None).await.status, 200);
}

#[tokio::test]
async fn shutdown_drains_an_in_flight_stream_over_tls() {
    let pki = Pki::new();
    let mock = MockUpstream::start().await.unwrap();
    mock.set_chunk_delay(Duration::from_millis(150));
    let mut gw = TestGateway::start(&mock_config(
        &mock.url(),
        &pki.server_section("shutdown_grace = \"10s\""),
    ))
    .await;
    let conn = Conn::open(gw.addr, &pki.cert_pem, &["h2"]).await.unwrap();
    let mut body = chat("m");
    body["stream"] = json!(true);
    let stream = tokio::spawn(async move {
        conn.send(Method::POST, "/v1/chat/completions", Some(body))
            .await
    });
    assert!(eventually(Duration::from_secs(5), || mock.request_count() == 1).await);
    let server = gw.signal_shutdown();
    // A few events later the stream goes on, and the server waits for it.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(!stream.is_finished(), "the stream should still be running");
    assert!(
        !server.is_finished(),
        "shutdown did not wait for the stream"
    );
    let s = stream.await.unwrap();
    assert_eq!(s.status, 200);
    let text = String::from_utf8_lossy(&s.body);
    assert!(text.contains("[DONE]"), "stream cut short: {text}");
    assert!(server.await.unwrap().unwrap(), "drained within grace");
}

// === portcullis check ===

/// `portcullis check --config` on a TOML file; (exit code, stdout, stderr).
fn check(dir: &Path, toml: &str) -> (i32, String, String) {
    let path = dir.join("portcullis.toml");
    std::fs::write(&path, toml).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .env_remove("PORTCULLIS_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_a_certificate_and_its_key() {
    let pki = Pki::new();
    let (code, out, err) = check(pki.dir.path(), &pki.server_section(""));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("(TLS, certificate "), "{out}");
}

#[test]
fn check_refuses_tls_cert_without_tls_key_and_the_reverse() {
    let pki = Pki::new();
    let toml = format!("[server]\ntls_cert = \"{}\"\n", pki.cert().display());
    let (code, _, err) = check(pki.dir.path(), &toml);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("server.tls_key: must be set together with server.tls_cert"),
        "{err}"
    );

    let toml = format!("[server]\ntls_key = \"{}\"\n", pki.key().display());
    let (code, _, err) = check(pki.dir.path(), &toml);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("server.tls_cert: must be set together with server.tls_key"),
        "{err}"
    );
}

#[test]
fn check_names_an_unreadable_file_by_its_key_path() {
    let pki = Pki::new();
    let missing = pki.dir.path().join("missing.pem");
    // A directory cannot be read as a file, whoever runs the test (root included).
    let toml = format!(
        "[server]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        missing.display(),
        pki.dir.path().display()
    );
    let (code, _, err) = check(pki.dir.path(), &toml);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!(
            "server.tls_cert: cannot read {}",
            missing.display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "server.tls_key: cannot read {}",
            pki.dir.path().display()
        )),
        "{err}"
    );
}

#[test]
fn check_refuses_swapped_or_mismatched_pem_files_without_printing_them() {
    let pki = Pki::new();
    // Certificate and key swapped: a PEM without a certificate, and one without a key.
    let toml = format!(
        "[server]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        pki.key().display(),
        pki.cert().display()
    );
    let (code, out, err) = check(pki.dir.path(), &toml);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("server.tls_cert: ") && err.contains("no certificate found"),
        "{err}"
    );
    assert!(
        err.contains("server.tls_key: ") && err.contains("no private key found"),
        "{err}"
    );

    // A key that is not the certificate's.
    let other = Pki::new();
    let toml = format!(
        "[server]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        pki.cert().display(),
        other.key().display()
    );
    let (code, out2, err2) = check(pki.dir.path(), &toml);
    assert_eq!(code, 2, "{err2}");
    assert!(
        err2.contains("server.tls_key: ") && err2.contains("is not the private key of"),
        "{err2}"
    );

    // A key file broken in its first line: rustls would quote that line.
    let broken = pki.dir.path().join("broken.pem");
    let secret_line = "-----BEGIN PRIVATE KEY-----sk-live-SECRET";
    std::fs::write(&broken, format!("{secret_line}\n{}", pki.key_pem)).unwrap();
    let toml = format!(
        "[server]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        pki.cert().display(),
        broken.display()
    );
    let (code, out3, err3) = check(pki.dir.path(), &toml);
    assert_eq!(code, 2, "{err3}");
    assert!(err3.contains("server.tls_key: "), "{err3}");

    // Never a line of the files themselves.
    let everything = [out, err, out2, err2, out3, err3].concat();
    assert!(!everything.contains("SECRET"), "{everything}");
    for pem in [&pki.key_pem, &pki.cert_pem, &other.key_pem] {
        for line in pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!everything.contains(line), "PEM content printed: {line}");
        }
    }
}
