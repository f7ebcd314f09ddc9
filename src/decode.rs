//! Compressed request bodies: `Content-Encoding: zstd` (what Codex sends on long Responses
//! requests), `gzip` / `x-gzip`, `deflate` and `br`, decoded as they stream.
//!
//! The providers accept such bodies, so the gateway must too: every layer that reads a body
//! (validation, routing, the dedup key, commands) needs the JSON, and the upstream gets it
//! plain (`Content-Encoding` and `Content-Length` removed; the length of what is sent is
//! known again once a layer has read it). The body is never inflated whole ahead of its
//! readers: the decoder sits in the body, so `server.max_body_bytes` bounds the *decoded* size
//! (a zip bomb is a `413 body_too_large` after at most that many bytes), and a body that does
//! not decode is a `400` naming the coding.
//!
//! On the API routes a coding the gateway cannot decode is `415 unsupported_content_encoding`:
//! no layer could read the body. On pass-through paths (uploads, files) such a body goes on
//! as it came, for the upstream to judge. A request without `Content-Encoding` (nearly all)
//! costs one header lookup.

use std::{fmt, io};

use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder, ZlibDecoder, ZstdDecoder};
use axum::body::Body;
use futures_util::TryStreamExt as _;
use http::{header, HeaderMap, Request, StatusCode};
use portcullis_core::error::{Refusal, Refused};
use tokio::io::{AsyncBufRead, AsyncRead, BufReader};
use tokio_util::io::{ReaderStream, StreamReader};
use tower::BoxError;

/// Codings stacked on one body past this are refused: real clients send one.
const MAX_CODINGS: usize = 2;

/// A content coding the gateway decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Gzip,
    Deflate,
    Zstd,
    Brotli,
}

impl Coding {
    fn parse(name: &str) -> Option<Coding> {
        match name {
            "gzip" | "x-gzip" => Some(Coding::Gzip),
            // HTTP's `deflate` is the zlib format (RFC 9110 8.4.1.2).
            "deflate" => Some(Coding::Deflate),
            "zstd" => Some(Coding::Zstd),
            "br" => Some(Coding::Brotli),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Zstd => "zstd",
            Coding::Brotli => "br",
        }
    }

    fn decoder(self, input: impl AsyncBufRead + Send + 'static) -> Reader {
        match self {
            Coding::Gzip => Box::pin(GzipDecoder::new(input)),
            Coding::Deflate => Box::pin(ZlibDecoder::new(input)),
            // RFC 9659's limit for HTTP: a frame whose window is over 8 MiB is refused, not
            // given the 128 MiB zstd would otherwise allocate for it, per request.
            Coding::Zstd => Box::pin(ZstdDecoder::new_for_http(input)),
            Coding::Brotli => Box::pin(BrotliDecoder::new(input)),
        }
    }
}

type Reader = std::pin::Pin<Box<dyn AsyncRead + Send>>;

/// A `Content-Encoding` the gateway cannot decode, on a route whose body it must read.
#[derive(Debug)]
pub struct UnsupportedEncoding(String);

impl fmt::Display for UnsupportedEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request Content-Encoding {:?} is not supported; send the body plain or as one of \
             zstd, gzip, deflate, br",
            self.0
        )
    }
}

impl std::error::Error for UnsupportedEncoding {}

impl Refusal for UnsupportedEncoding {
    fn status(&self) -> StatusCode {
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    }
    fn code(&self) -> &'static str {
        "unsupported_content_encoding"
    }
}

/// For the API routes: the request with its body decoded, or a refusal of a coding that
/// cannot be.
pub fn api_request(req: Request<Body>) -> Result<Request<Body>, BoxError> {
    if !req.headers().contains_key(header::CONTENT_ENCODING) {
        return Ok(req);
    }
    match codings(req.headers()) {
        Ok(codings) => Ok(decode(req, codings)),
        Err(coding) => Err(Refused::boxed(UnsupportedEncoding(coding))),
    }
}

/// For pass-through paths: the body decoded when its codings are all known, else as it came
/// (an empty body too: a `GET` that names a coding has nothing to decode).
pub fn passthrough_request(req: Request<Body>) -> Request<Body> {
    if !req.headers().contains_key(header::CONTENT_ENCODING)
        || http_body::Body::size_hint(req.body()).exact() == Some(0)
    {
        return req;
    }
    match codings(req.headers()) {
        Ok(codings) => decode(req, codings),
        Err(_) => req,
    }
}

/// The codings of a `Content-Encoding`, in the order they were applied (`identity` left
/// out); `Err` names the first one that cannot be decoded.
fn codings(headers: &HeaderMap) -> Result<Vec<Coding>, String> {
    let mut out = Vec::new();
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let value = value.to_str().map_err(|_| "(not text)".to_owned())?;
        for name in value.split(',') {
            let name = name.trim().to_ascii_lowercase();
            if name.is_empty() || name == "identity" {
                continue;
            }
            // Named in the error (cut short: the client's header, not ours to repeat whole).
            out.push(
                Coding::parse(&name).ok_or_else(|| name.chars().take(32).collect::<String>())?,
            );
        }
    }
    if out.len() > MAX_CODINGS {
        return Err(format!("{} codings", out.len()));
    }
    Ok(out)
}

/// `req` with its body decoded from `codings` (see the module docs).
fn decode(req: Request<Body>, codings: Vec<Coding>) -> Request<Body> {
    let (mut parts, body) = req.into_parts();
    parts.headers.remove(header::CONTENT_ENCODING);
    // Applied in order, so undone in reverse: `gzip, br` is brotli outside gzip.
    let mut undo = codings.iter().rev();
    let Some(outer) = undo.next() else {
        // `identity` only: nothing to decode, and the length still holds.
        return Request::from_parts(parts, body);
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    let input = StreamReader::new(body.into_data_stream().map_err(io::Error::other));
    let mut reader = outer.decoder(input);
    for inner in undo {
        reader = inner.decoder(BufReader::new(reader));
    }
    let named: Vec<&str> = codings.iter().map(|c| c.as_str()).collect();
    let named = named.join(", ");
    let stream = ReaderStream::new(reader).map_err(move |e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the request body is not valid {named}: {e}"),
        )
    });
    Request::from_parts(parts, Body::from_stream(stream))
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use http_body_util::BodyExt as _;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn request(coding: &str, body: Vec<u8>) -> Request<Body> {
        Request::post("/v1/chat/completions")
            .header(header::CONTENT_ENCODING, coding)
            .header(header::CONTENT_LENGTH, body.len())
            .body(Body::from(body))
            .unwrap()
    }

    async fn text(req: Request<Body>) -> Result<String, String> {
        let bytes = req
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn each_coding_is_decoded_and_its_headers_removed() {
        let json = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
        let zstd = zstd::encode_all(&json[..], 3).unwrap();
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), Default::default());
        zlib.write_all(json).unwrap();
        let deflate = zlib.finish().unwrap();
        let mut br = Vec::new();
        brotli::BrotliCompress(&mut &json[..], &mut br, &Default::default()).unwrap();
        for (coding, body) in [
            ("zstd", zstd),
            ("gzip", gzip(json)),
            ("X-Gzip", gzip(json)),
            ("deflate", deflate),
            ("br", br),
            ("identity", json.to_vec()),
        ] {
            let req = api_request(request(coding, body)).unwrap();
            assert!(req.headers().get(header::CONTENT_ENCODING).is_none());
            if coding != "identity" {
                assert!(
                    req.headers().get(header::CONTENT_LENGTH).is_none(),
                    "{coding}"
                );
            }
            assert_eq!(text(req).await.unwrap().as_bytes(), json, "{coding}");
        }
        // Two codings, undone in reverse order of application.
        let twice = zstd::encode_all(&gzip(json)[..], 1).unwrap();
        let req = api_request(request("gzip, zstd", twice)).unwrap();
        assert_eq!(text(req).await.unwrap().as_bytes(), json);
    }

    #[tokio::test]
    async fn unknown_codings_are_refused_on_api_routes_and_left_alone_on_pass_through() {
        let e = api_request(request("compress", b"x".to_vec())).unwrap_err();
        let refused = portcullis_core::error::find_in_chain::<Refused>(&*e).unwrap();
        assert_eq!(refused.refusal().status(), 415);
        assert_eq!(refused.refusal().code(), "unsupported_content_encoding");
        assert!(e.to_string().contains("\"compress\""), "{e}");
        assert!(api_request(request("gzip, gzip, gzip", b"x".to_vec())).is_err());
        let long = "x".repeat(1000);
        let e = api_request(request(&long, b"x".to_vec())).unwrap_err();
        assert!(e.to_string().len() < 200, "{e}");

        let req = passthrough_request(request("compress", b"as sent".to_vec()));
        assert_eq!(req.headers()[header::CONTENT_ENCODING], "compress");
        assert_eq!(req.headers()[header::CONTENT_LENGTH], "7");
        assert_eq!(text(req).await.unwrap(), "as sent");
        let req = passthrough_request(request("gzip", gzip(b"{}")));
        assert!(req.headers().get(header::CONTENT_ENCODING).is_none());
        assert_eq!(text(req).await.unwrap(), "{}");
        let req = passthrough_request(request("gzip", Vec::new()));
        assert_eq!(req.headers()[header::CONTENT_ENCODING], "gzip");
        assert_eq!(text(req).await.unwrap(), "");
    }

    #[tokio::test]
    async fn a_body_that_does_not_decode_is_an_error_naming_the_coding() {
        let req = api_request(request("zstd", b"not zstd at all".to_vec())).unwrap();
        let e = text(req).await.unwrap_err();
        assert!(e.contains("not valid zstd"), "{e}");
    }

    #[tokio::test]
    async fn a_zstd_frame_asking_for_a_window_over_8_mib_is_refused() {
        // A window is memory the decoder holds for the whole body: 128 MiB a request, from a
        // few bytes of header, without RFC 9659's limit.
        let frame = |window_log: u32| {
            let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
            e.set_parameter(zstd::stream::raw::CParameter::WindowLog(window_log))
                .unwrap();
            e.include_contentsize(false).unwrap();
            e.write_all(b"{}").unwrap();
            e.finish().unwrap()
        };
        let req = api_request(request("zstd", frame(27))).unwrap();
        let e = text(req).await.unwrap_err();
        assert!(e.contains("not valid zstd"), "{e}");
        let req = api_request(request("zstd", frame(23))).unwrap();
        assert_eq!(text(req).await.unwrap(), "{}");
    }

    #[tokio::test]
    async fn a_plain_request_is_untouched() {
        let req = Request::post("/v1/chat/completions")
            .header(header::CONTENT_LENGTH, 2)
            .body(Body::from("{}"))
            .unwrap();
        let req = api_request(req).unwrap();
        assert_eq!(req.headers()[header::CONTENT_LENGTH], "2");
        assert_eq!(text(req).await.unwrap(), "{}");
    }
}
