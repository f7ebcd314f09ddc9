//! What a request asks for, read once from its JSON body.
//!
//! The validation layer inserts [`RequestMeta`] after parsing the body in full. A layer that
//! needs it and finds it absent (because it is used alone, or stacked outside validation)
//! calls [`peek`], which reads the body, parses only `model` and `stream`, inserts the
//! extension for the layers after it and puts the body back.
//!
//! # Why a hand-written visitor
//!
//! `serde_json::Value` would build a tree of the whole body (every message, every string)
//! to read two fields. A derived `struct { model: Option<&str>, stream: Option<bool> }`
//! skips the rest but rejects the whole body when `model` is not a string or has escapes
//! (`&str` cannot borrow an escaped string). The visitor here skips everything else with
//! `IgnoredAny`, borrows `model` when it can, and reads a wrongly typed field as absent:
//! judging types is the validation layer's job, not a rate limiter's.

use std::{fmt, sync::Arc};

use bytes::Bytes;
use http::Request;
use http_body::Body;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::body::{collect_limited, CollectError};

/// Facts about an LLM request that several layers need, inserted as a request extension by
/// whichever layer parses the body first (the validation layer in the default stack).
///
/// Layers that find it absent read it with [`peek`], so each still works alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestMeta {
    /// The `model` field, if the body had one.
    pub model: Option<Arc<str>>,
    /// `"stream": true` in the body.
    pub stream: bool,
}

/// `model` and `stream` of a JSON request body; `None` if the body is not a JSON object.
///
/// A `model` that is not a string counts as absent, and so does a `stream` that is not
/// `true`. Only the top level is looked at.
///
/// ```
/// use portcullis_core::meta::parse;
///
/// let meta = parse(br#"{"messages":[{"role":"user","content":"hi"}],"model":"gpt-4o","stream":true}"#).unwrap();
/// assert_eq!(meta.model.as_deref(), Some("gpt-4o"));
/// assert!(meta.stream);
/// assert!(parse(b"not json").is_none());
/// ```
pub fn parse(body: &[u8]) -> Option<RequestMeta> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let meta = de.deserialize_map(MetaVisitor).ok()?;
    de.end().ok()?;
    Some(meta)
}

/// The request's [`RequestMeta`]: the extension if present, else read from the body.
///
/// The body is read up to `limit` bytes (a larger one fails with
/// [`CollectError::TooLarge`]), parsed with [`parse`], and put back as `B::from(bytes)`;
/// the meta found is inserted as an extension so the layers after this one need not parse
/// the body again. `None`: the body is not a JSON object.
pub async fn peek<B>(
    req: Request<B>,
    limit: usize,
) -> Result<(Request<B>, Option<RequestMeta>), CollectError>
where
    B: Body + From<Bytes>,
    B::Error: Into<tower::BoxError>,
{
    if let Some(meta) = req.extensions().get::<RequestMeta>() {
        let meta = meta.clone();
        return Ok((req, Some(meta)));
    }
    let (mut parts, body) = req.into_parts();
    let bytes = collect_limited(body, limit).await?;
    let meta = parse(&bytes);
    if let Some(meta) = &meta {
        parts.extensions.insert(meta.clone());
    }
    Ok((Request::from_parts(parts, B::from(bytes)), meta))
}

struct MetaVisitor;

impl<'de> Visitor<'de> for MetaVisitor {
    type Value = RequestMeta;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RequestMeta, A::Error> {
        let mut meta = RequestMeta::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Model => meta.model = map.next_value::<Lenient<ModelStr>>()?.0.map(|m| m.0),
                Key::Stream => meta.stream = map.next_value::<Lenient<bool>>()?.0 == Some(true),
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(meta)
    }
}

/// A top-level key, without allocating for the ones we skip.
enum Key {
    Model,
    Stream,
    Other,
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "model" => Key::Model,
                    "stream" => Key::Stream,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

/// A model name: borrowed from the input when it has no escapes, copied once into the
/// `Arc<str>` either way.
struct ModelStr(Arc<str>);

impl<'de> de::Deserialize<'de> for ModelStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct StrVisitor;
        impl Visitor<'_> for StrVisitor {
            type Value = ModelStr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ModelStr, E> {
                Ok(ModelStr(Arc::from(v)))
            }
        }
        d.deserialize_str(StrVisitor)
    }
}

/// `Some(T)` if the value is a `T`, `None` if it is any other JSON value (which is skipped).
struct Lenient<T>(Option<T>);

impl<'de, T: de::Deserialize<'de>> de::Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // serde_json cannot rewind, so "try T, else skip" goes through a visitor that sees
        // the value's type first. Only the two shapes used here need to succeed.
        struct AnyVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: de::Deserialize<'de>> Visitor<'de> for AnyVisitor<T> {
            type Value = Lenient<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Lenient(
                    T::deserialize(de::value::BoolDeserializer::<E>::new(v)).ok(),
                ))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Lenient(
                    T::deserialize(de::value::StrDeserializer::<E>::new(v)).ok(),
                ))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Lenient(
                    T::deserialize(de::value::BorrowedStrDeserializer::<E>::new(v)).ok(),
                ))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Lenient(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Lenient(None))
            }
        }
        d.deserialize_any(AnyVisitor(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[test]
    fn parses_model_and_stream() {
        let m = parse(br#"{"model":"gpt-4o","stream":true,"messages":[]}"#).unwrap();
        assert_eq!(m.model.as_deref(), Some("gpt-4o"));
        assert!(m.stream);
        let m = parse(br#"{"messages":[{"model":"inner","stream":true}]}"#).unwrap();
        assert_eq!(m, RequestMeta::default(), "only the top level counts");
        let m = parse(br#" { "stream" : false , "model" : "a\"b\u00e9" } "#).unwrap();
        assert_eq!(
            m.model.as_deref(),
            Some("a\"b\u{e9}"),
            "escapes are decoded"
        );
        assert!(!m.stream);
    }

    #[test]
    fn wrong_types_count_as_absent() {
        let m = parse(br#"{"model":5,"stream":"true"}"#).unwrap();
        assert_eq!(m, RequestMeta::default());
        let m = parse(br#"{"model":{"name":"x"},"stream":[true],"x":null}"#).unwrap();
        assert_eq!(m, RequestMeta::default());
        let m = parse(br#"{"model":null,"stream":1}"#).unwrap();
        assert_eq!(m, RequestMeta::default());
    }

    #[test]
    fn not_an_object_is_none() {
        for body in [
            &b"not json"[..],
            b"[1]",
            b"\"s\"",
            b"",
            b"{\"model\":\"m\"",
            b"{} x",
        ] {
            assert!(parse(body).is_none(), "{:?}", String::from_utf8_lossy(body));
        }
    }

    #[tokio::test]
    async fn peek_inserts_the_extension_and_puts_the_body_back() {
        let body = r#"{"model":"m","stream":true}"#;
        let req = Request::new(Full::new(Bytes::from_static(body.as_bytes())));
        let (req, meta) = peek(req, 1024).await.unwrap();
        let meta = meta.unwrap();
        assert_eq!(meta.model.as_deref(), Some("m"));
        assert_eq!(req.extensions().get::<RequestMeta>(), Some(&meta));
        let back = req.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(back, body.as_bytes());
    }

    #[tokio::test]
    async fn peek_trusts_an_extension_and_caps_the_body() {
        let mut req = Request::new(Full::new(Bytes::from_static(b"not read")));
        let given = RequestMeta {
            model: Some("given".into()),
            stream: false,
        };
        req.extensions_mut().insert(given.clone());
        let (_, meta) = peek(req, 1).await.unwrap();
        assert_eq!(meta, Some(given));

        let req = Request::new(Full::new(Bytes::from_static(b"{\"model\":\"m\"}")));
        let e = peek(req, 4).await.unwrap_err();
        assert!(matches!(e, CollectError::TooLarge { limit: 4 }));
    }

    proptest::proptest! {
        /// Stand-in for the `request_body` fuzz target (fuzz/), run by `cargo test`: wherever
        /// serde_json parses a body, `parse` reads it as `serde_json::Value` does (`Some`
        /// exactly for an object, the last `model` if a string, `stream` exactly when `true`).
        #[test]
        fn agrees_with_serde_json_value(
            fields in proptest::collection::vec(
                (
                    proptest::sample::select(vec!["model", "stream", "mod\\u0065l", "messages", "x"]),
                    proptest::sample::select(vec![
                        "\"gpt-4o\"", "\"a\\\"b\"", "true", "false", "null", "1", "[true]",
                        "{\"model\":\"inner\"}", "\"\"",
                    ]),
                ),
                0..6,
            ),
            wrap in 0..3u8,
            cut in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let object = format!(
                "{{{}}}",
                fields
                    .iter()
                    .map(|(k, v)| format!("\"{k}\":{v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            let body = match wrap {
                0 => object,
                1 => format!("[{object}]"),
                _ => object[..cut.index(object.len() + 1)].to_owned(),
            };
            let got = parse(body.as_bytes());
            match serde_json::from_slice::<serde_json::Value>(body.as_bytes()) {
                Ok(v) if v.is_object() => {
                    let m = got.expect("an object is read");
                    proptest::prop_assert_eq!(m.model.as_deref(), v["model"].as_str());
                    proptest::prop_assert_eq!(m.stream, v["stream"] == serde_json::Value::Bool(true));
                }
                _ => proptest::prop_assert!(got.is_none(), "{}", body),
            }
        }
    }
}
