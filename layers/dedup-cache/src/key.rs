//! The dedup key: which requests count as "identical".
//!
//! Two requests share a key when they have the same method, path and query, the same JSON
//! body up to key order and whitespace, the same caller ([`CallerId`]: the gateway key that
//! matched and every credential header that goes upstream, hashed; and the memory user id)
//! and the same values of the few headers that change what an LLM API answers
//! ([`VARY_HEADERS`]). Everything is fed to blake3 with length-prefixed framing, so no two
//! different field splits can produce the same byte stream.
//!
//! # Why stream-write the canonical JSON
//!
//! The obvious canonical form is `serde_json::to_vec(&serde_json::from_slice::<Value>(body))`
//! (its `Map` is a `BTreeMap`, so keys come out sorted). Building that tree costs an
//! allocation per string, number and member. [`canonical_json`] instead steps over the body
//! once, copying what is already canonical (strings serde would write back the same, plain
//! integers, literals) and reordering an object's members only when they were not sorted;
//! the rare scalar it cannot copy (a `\u` escape, a float) is written by serde, and a body it
//! is unsure of is written by serde whole, through the visitor below. The bench
//! (`benches/dedup_cache.rs`) compares it with the `Value` round trip: 3x faster on 1 KB and
//! 4x on 100 KB chat bodies (the visitor alone was 1.5x).

use std::{borrow::Cow, fmt, io::Write as _};

use http::{request::Parts, HeaderName};
use portcullis_core::{hash::DeriveKey, CallerId, UserId};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// How many [`VARY_HEADERS`] there are (one bit each in a key).
const VARY_COUNT: usize = 7;
const _: () = assert!(VARY_COUNT <= 8);

/// Request headers that are part of the key besides the caller's identity, because they
/// change the upstream's answer: its encoding (`accept`, `accept-encoding`) or the API
/// version and features it uses (`anthropic-version`, `anthropic-beta`, `openai-beta`), or
/// whose account it bills (`openai-organization`, `openai-project`).
pub const VARY_HEADERS: [HeaderName; VARY_COUNT] = [
    http::header::ACCEPT,
    http::header::ACCEPT_ENCODING,
    HeaderName::from_static("anthropic-version"),
    HeaderName::from_static("anthropic-beta"),
    HeaderName::from_static("openai-beta"),
    HeaderName::from_static("openai-organization"),
    HeaderName::from_static("openai-project"),
];

// v2: the caller is a `CallerId` (every credential header), no longer one API key.
// v3: lengths and counts as varints, one byte for which vary headers are there: a chat
// request's key is three blake3 blocks instead of four, and fits `Framed`'s buffer.
const KEY_CONTEXT: &str = "portcullis dedup key v3";

/// A dedup key: a blake3 hash of everything that makes two requests identical.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub [u8; 32]);

impl Key {
    /// The 32 hash bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex of all 32 bytes (used in external store keys).
    pub fn to_hex(&self) -> String {
        portcullis_core::hash::to_hex(&self.0)
    }

    /// The first 8 hex digits: enough to tell keys apart in logs.
    pub fn short(&self) -> String {
        portcullis_core::hash::to_hex(&self.0[..4])
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.short())
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The dedup key of a request with head `parts` and (whole) body `body`.
///
/// ```
/// use portcullis_dedup_cache::dedup_key;
///
/// let (a, _) = http::Request::post("/v1/chat/completions").body(()).unwrap().into_parts();
/// let (b, _) = http::Request::post("/v1/chat/completions").body(()).unwrap().into_parts();
/// assert_eq!(
///     dedup_key(&a, br#"{"model":"m","messages":[]}"#),
///     dedup_key(&b, br#"{ "messages": [ ], "model": "m" }"#),
/// );
/// ```
pub fn dedup_key(parts: &Parts, body: &[u8]) -> Key {
    key_with(parts, canonical_json(body).as_deref(), body)
}

/// [`dedup_key`] of a request whose body's canonical form was made elsewhere (the
/// validation layer's [`CanonicalBody`](portcullis_core::CanonicalBody)), if it belongs to
/// this very body; otherwise made here.
pub(crate) fn dedup_key_of(
    parts: &Parts,
    body: &bytes::Bytes,
    canonical: Option<portcullis_core::CanonicalBody>,
) -> Key {
    match canonical.as_ref().and_then(|c| c.of(body)) {
        Some(canonical) => key_with(parts, Some(canonical), body),
        None => dedup_key(parts, body),
    }
}

/// The key of a request whose body has this canonical form (`None`: the body is no JSON
/// value, and its bytes count as they are).
fn key_with(parts: &Parts, canonical: Option<&[u8]>, body: &[u8]) -> Key {
    static CONTEXT: DeriveKey = DeriveKey::new(KEY_CONTEXT);
    let mut h = CONTEXT.framed();
    h.short_field(parts.method.as_str().as_bytes());
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    h.short_field(path.as_bytes());

    match canonical {
        Some(canonical) => {
            h.raw(b"j");
            h.short_field(canonical);
        }
        None => {
            h.raw(b"r");
            h.short_field(body);
        }
    }

    // The `CallerId` extension the gateway's auth set, else every credential header.
    h.short_field(&CallerId::from_parts(&parts.headers, &parts.extensions).0);
    match parts.extensions.get::<UserId>() {
        Some(u) => {
            h.raw(b"u");
            h.short_field(u.as_str().as_bytes());
        }
        None => {
            h.raw(b"-");
        }
    }
    // One pass over the request's names says which of them are there (most requests send
    // one or two, often none): a lookup of each of the seven costs more. One bit each, in
    // `VARY_HEADERS` order; then each one's values, counted.
    let mut present = 0u8;
    for name in parts.headers.keys() {
        if let Some(i) = vary_slot(name) {
            present |= 1 << i;
        }
    }
    h.raw(&[present]);
    // A `static`: the `const` array would be made, and dropped, on every call.
    static VARY: [HeaderName; VARY_COUNT] = VARY_HEADERS;
    for (i, name) in VARY.iter().enumerate() {
        if present & (1 << i) == 0 {
            continue;
        }
        let values = parts.headers.get_all(name);
        h.varint(values.iter().count());
        for v in values {
            h.short_field(v.as_bytes());
        }
    }
    Key(*h.finalize().as_bytes())
}

/// The place of `name` in [`VARY_HEADERS`].
fn vary_slot(name: &HeaderName) -> Option<usize> {
    Some(match name.as_str() {
        "accept" => 0,
        "accept-encoding" => 1,
        "anthropic-version" => 2,
        "anthropic-beta" => 3,
        "openai-beta" => 4,
        "openai-organization" => 5,
        "openai-project" => 6,
        _ => return None,
    })
}

/// The canonical form of a JSON document: object members sorted by key, no whitespace,
/// strings and numbers as `serde_json` prints them. `None` if `body` is not one JSON value.
///
/// ```
/// use portcullis_dedup_cache::canonical_json;
///
/// assert_eq!(
///     canonical_json(br#" { "b" : [1, 2.5, "x"], "a" : {"d": null, "c": true} } "#).unwrap(),
///     br#"{"a":{"c":true,"d":null},"b":[1,2.5,"x"]}"#,
/// );
/// assert_eq!(canonical_json(b"not json"), None);
/// ```
pub fn canonical_json(body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len());
    if fast::document(body, &mut out).is_some() {
        return Some(out);
    }
    out.clear();
    canonical_by_serde(body, &mut out)?;
    Some(out)
}

/// [`canonical_json`] by serde alone: the definition the fast path must match, byte for byte.
fn canonical_by_serde(value: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let mut de = serde_json::Deserializer::from_slice(value);
    Canon { out }.deserialize(&mut de).ok()?;
    de.end().ok()
}

/// The canonical form written while stepping over the document, without serde's visitor
/// machinery, for what a request body is made of: strings without escapes, integers,
/// literals, arrays and objects whose keys have no escapes. A scalar outside that (a string
/// with an escape, a number with a fraction, an exponent or many digits) is handed to serde
/// alone, as the few bytes it is. Anything else (a key with an escape, a nesting deeper than
/// [`fast::MAX_DEPTH`], a byte out of place) makes it give up, and [`canonical_json`] asks
/// serde for the whole document: the fast path never decides what is JSON, and what it writes
/// is what serde writes (a property test holds the two together).
mod fast {
    use std::ops::Range;

    use portcullis_core::json_skim::{
        key_order, number_end, plain_integer, string_end, string_stop, ws,
    };

    /// Deeper than this, serde decides (its own limit is 127).
    pub(super) const MAX_DEPTH: u32 = 64;

    /// The canonical form of `b` into `out`; `None`: not sure, ask serde.
    pub(super) fn document(b: &[u8], out: &mut Vec<u8>) -> Option<()> {
        // Checked once for every string in it (JSON text is UTF-8 throughout).
        std::str::from_utf8(b).ok()?;
        let mut w = Writer {
            b,
            out,
            run: 0..0,
            members: Vec::new(),
            scratch: Vec::new(),
        };
        let end = w.value(ws(b, 0), 0)?;
        w.flush();
        (ws(b, end) == b.len()).then_some(())
    }

    struct Writer<'a> {
        b: &'a [u8],
        out: &'a mut Vec<u8>,
        /// Bytes of `b` that come next in `out` but are not copied yet. The canonical form is
        /// mostly the document's own bytes (everything but whitespace, reordered members and
        /// the rare scalar serde rewrites), so tokens that sit side by side in `b` are copied
        /// as one run: a compact object is one copy, not one per key, colon, value and comma.
        run: Range<usize>,
        /// The members of the objects being written, innermost last: each one's key (in `b`)
        /// and its `"key":value` text (at its place in `out`, once the run is copied). One
        /// vector for every object of the document.
        members: Vec<(Range<usize>, Range<usize>)>,
        /// The text of an object being reordered.
        scratch: Vec<u8>,
    }

    impl Writer<'_> {
        /// `b[from..to]` comes next in the canonical form.
        #[inline]
        fn copy(&mut self, from: usize, to: usize) {
            if from != self.run.end {
                self.flush();
                self.run.start = from;
            }
            self.run.end = to;
        }

        /// Copies the run into `out`, before anything else is written there or rearranged.
        #[inline]
        fn flush(&mut self) {
            if !self.run.is_empty() {
                self.out.extend_from_slice(&self.b[self.run.clone()]);
                self.run.start = self.run.end;
            }
        }

        /// The length of `out` with the run copied.
        #[inline]
        fn len(&self) -> usize {
            self.out.len() + self.run.len()
        }

        /// A scalar serde writes (a `\u` escape, a float).
        fn by_serde(&mut self, from: usize, to: usize) -> Option<usize> {
            self.flush();
            super::canonical_by_serde(&self.b[from..to], self.out)?;
            Some(to)
        }

        /// Writes the value at `b[i]`; the index just past it.
        fn value(&mut self, i: usize, depth: u32) -> Option<usize> {
            match *self.b.get(i)? {
                b'"' => self.string(i),
                b'{' => self.object(i, depth + 1),
                b'[' => self.array(i, depth + 1),
                b't' => self.literal(i, b"true"),
                b'f' => self.literal(i, b"false"),
                b'n' => self.literal(i, b"null"),
                b'-' | b'0'..=b'9' => self.number(i),
                _ => None,
            }
        }

        fn literal(&mut self, i: usize, word: &[u8]) -> Option<usize> {
            let end = i + word.len();
            (self.b.get(i..end)? == word).then(|| {
                self.copy(i, end);
                end
            })
        }

        /// A string is written as it is when serde would write the same bytes back: no
        /// escapes, or only the short ones serde writes itself (`\"` `\\` `\n` `\t` `\r`
        /// `\b` `\f`, as in any prompt with lines or quotes). A `\/` or `\u` escape
        /// (which serde writes differently) makes it serde's to read and write.
        fn string(&mut self, i: usize) -> Option<usize> {
            let b = self.b;
            let mut j = i + 1;
            loop {
                j = string_stop(b, j);
                match *b.get(j)? {
                    b'"' => {
                        self.copy(i, j + 1);
                        return Some(j + 1);
                    }
                    b'\\' => match *b.get(j + 1)? {
                        b'"' | b'\\' | b'n' | b't' | b'r' | b'b' | b'f' => j += 2,
                        _ => return self.by_serde(i, string_end::<false>(b, i)?),
                    },
                    _ => return None, // a control character: not JSON
                }
            }
        }

        /// An integer of at most 18 digits without a sign on zero is written as it is (it
        /// fits serde's u64 or i64, which print it back unchanged); any other number is
        /// serde's.
        fn number(&mut self, i: usize) -> Option<usize> {
            let b = self.b;
            if let Some((_, end)) = plain_integer(b, i) {
                self.copy(i, end);
                return Some(end);
            }
            self.by_serde(i, number_end(b, i))
        }

        fn array(&mut self, i: usize, depth: u32) -> Option<usize> {
            if depth > MAX_DEPTH {
                return None;
            }
            let b = self.b;
            self.copy(i, i + 1);
            let mut i = ws(b, i + 1);
            if b.get(i) == Some(&b']') {
                self.copy(i, i + 1);
                return Some(i + 1);
            }
            loop {
                i = ws(b, self.value(i, depth)?);
                match *b.get(i)? {
                    b',' => {
                        self.copy(i, i + 1);
                        i = ws(b, i + 1);
                    }
                    b']' => {
                        self.copy(i, i + 1);
                        return Some(i + 1);
                    }
                    _ => return None,
                }
            }
        }

        /// Members are written in document order, then put in key order if they were not (a
        /// stable sort, as serde's path does, so repeated keys keep theirs).
        fn object(&mut self, i: usize, depth: u32) -> Option<usize> {
            if depth > MAX_DEPTH {
                return None;
            }
            let b = self.b;
            self.copy(i, i + 1);
            let start = self.len();
            let mut i = ws(b, i + 1);
            if b.get(i) == Some(&b'}') {
                self.copy(i, i + 1);
                return Some(i + 1);
            }
            let first = self.members.len();
            let mut sorted = true;
            loop {
                if b.get(i) != Some(&b'"') {
                    return None;
                }
                // A key with an escape would have to be unescaped to be sorted, and one with
                // a control character is no JSON: serde's.
                let key_end = string_stop(b, i + 1);
                if *b.get(key_end)? != b'"' {
                    return None;
                }
                let key = i + 1..key_end;
                let begin = self.len();
                self.copy(i, key_end + 1);
                i = ws(b, key_end + 1);
                if b.get(i) != Some(&b':') {
                    return None;
                }
                self.copy(i, i + 1);
                i = ws(b, self.value(ws(b, i + 1), depth)?);
                if let Some((prev, _)) = self.members[first..].last() {
                    sorted &= key_order(&b[prev.clone()], &b[key.clone()]).is_le();
                }
                self.members.push((key, begin..self.len()));
                match *b.get(i)? {
                    b',' => {
                        self.copy(i, i + 1);
                        i = ws(b, i + 1);
                    }
                    b'}' => break,
                    _ => return None,
                }
            }
            if !sorted {
                self.flush();
                super::put_in_key_order(
                    self.out,
                    &mut self.scratch,
                    start,
                    &mut self.members[first..],
                    |x, y| key_order(&b[x.0.clone()], &b[y.0.clone()]),
                    |m| m.1.clone(),
                );
            }
            self.members.truncate(first);
            self.copy(i, i + 1);
            Some(i + 1)
        }
    }
}

/// Rewrites an object's members in key order: `out[start..]` holds their `"key":value` texts
/// in document order, comma-separated, at the ranges `text` gives. The sort is stable, so
/// repeated keys keep their order and the form stays deterministic. Both ways of writing the
/// canonical form use it.
///
/// Two members are swapped in place; more are sorted, copied to `scratch` and back, except
/// the document's own object (`start` is 1, a whole conversation's text), which is written
/// in order into `scratch` once, and `scratch` then takes `out`'s place.
fn put_in_key_order<M>(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    start: usize,
    members: &mut [M],
    by_key: impl FnMut(&M, &M) -> std::cmp::Ordering,
    text: impl Fn(&M) -> std::ops::Range<usize>,
) {
    if let [a, b] = members {
        // Two members out of order (a chat message's `role` and `content`): swapped in
        // place, `A,B` -> `B,A`, with a comma put after `B` for the move and taken off.
        let a = text(a);
        debug_assert_eq!(text(b).start, a.end + 1);
        out.push(b',');
        out[start..].rotate_left(a.len() + 1);
        out.pop();
        return;
    }
    members.sort_by(by_key);
    scratch.clear();
    // Sized once for every object of the document (none is longer than it), not grown.
    scratch.reserve(out.capacity());
    if start == 1 {
        scratch.push(out[0]);
        for (n, member) in members.iter().enumerate() {
            if n > 0 {
                scratch.push(b',');
            }
            scratch.extend_from_slice(&out[text(member)]);
        }
        std::mem::swap(out, scratch);
        return;
    }
    scratch.extend_from_slice(&out[start..]);
    out.truncate(start);
    for (n, member) in members.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        let range = text(member);
        out.extend_from_slice(&scratch[range.start - start..range.end - start]);
    }
}

/// Writes the canonical form of one JSON value to `out`.
struct Canon<'o> {
    out: &'o mut Vec<u8>,
}

impl Canon<'_> {
    fn nested(&mut self) -> Canon<'_> {
        Canon { out: self.out }
    }
}

/// A string as serde_json writes it (keys stored in Redis stay what they were).
fn write_str(out: &mut Vec<u8>, s: &str) {
    portcullis_core::json_escape::write_str(out, s);
}

impl<'de> DeserializeSeed<'de> for Canon<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Canon<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        let _ = write!(self.out, "{v}");
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        let _ = write!(self.out, "{v}");
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        serde_json::to_writer(&mut *self.out, &v).map_err(E::custom)
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        write_str(self.out, v);
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        self.out.push(b'[');
        let mut first = true;
        loop {
            let comma = self.out.len();
            if !first {
                self.out.push(b',');
            }
            if seq.next_element_seed(self.nested())?.is_none() {
                // The comma written for an element that turned out not to exist goes.
                self.out.truncate(comma);
                break;
            }
            first = false;
        }
        self.out.push(b']');
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        self.out.push(b'{');
        let start = self.out.len();
        // Each member's key and the byte range of its `"key":value` text in `out`.
        let mut members: Vec<(Cow<'de, str>, std::ops::Range<usize>)> = Vec::new();
        let mut sorted = true;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if !members.is_empty() {
                self.out.push(b',');
            }
            let begin = self.out.len();
            write_str(self.out, &key);
            self.out.push(b':');
            map.next_value_seed(self.nested())?;
            if let Some((prev, _)) = members.last() {
                sorted &= *prev <= key;
            }
            members.push((key, begin..self.out.len()));
        }
        if !sorted {
            put_in_key_order(
                self.out,
                &mut Vec::new(),
                start,
                &mut members,
                |a, b| a.0.cmp(&b.0),
                |m| m.1.clone(),
            );
        }
        self.out.push(b'}');
        Ok(())
    }
}

/// Reads an object key, borrowing it from the input when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use http::{header::AUTHORIZATION, Request};

    #[test]
    fn every_vary_header_has_its_own_slot() {
        for (i, name) in VARY_HEADERS.iter().enumerate() {
            assert_eq!(vary_slot(name), Some(i), "{name}");
        }
        assert_eq!(vary_slot(&http::header::CONTENT_TYPE), None);
    }

    fn parts(method: &str, uri: &str) -> Parts {
        Request::builder()
            .method(method)
            .uri(uri)
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    fn canon(s: &str) -> String {
        String::from_utf8(canonical_json(s.as_bytes()).expect("valid json")).unwrap()
    }

    #[test]
    fn sorts_keys_at_every_depth_and_drops_whitespace() {
        assert_eq!(
            canon(r#"{"z":1,"a":{"y":[{"b":2,"a":1}],"x":null}}"#),
            r#"{"a":{"x":null,"y":[{"a":1,"b":2}]},"z":1}"#
        );
        assert_eq!(
            canon(" {\n\t\"b\" : [ 1 , 2 ] ,\r\n \"a\" : \"s\" } "),
            r#"{"a":"s","b":[1,2]}"#
        );
    }

    #[test]
    fn keys_that_start_alike_sort_by_what_follows() {
        for (doc, sorted) in [
            (r#"{"model":1,"messages":2}"#, r#"{"messages":2,"model":1}"#),
            (r#"{"ab":1,"a":2}"#, r#"{"a":2,"ab":1}"#),
            (r#"{"a":1,"":2}"#, r#"{"":2,"a":1}"#),
            (
                r#"{"type":1,"tool":2,"id":3}"#,
                r#"{"id":3,"tool":2,"type":1}"#,
            ),
        ] {
            assert_eq!(canon(doc), sorted);
            assert_eq!(canonical_json(doc.as_bytes()), by_serde(doc.as_bytes()));
        }
    }

    #[test]
    fn matches_serde_json_value_form() {
        let doc = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"h\u00e9llo \"q\" \n"}],
            "temperature":0.7,"n":-3,"big":18446744073709551615,"e":1e300,"t":true,"f":false,
            "o":{},"a":[],"nested":{"k\u0041y":[[[]]]}}"#;
        let v: serde_json::Value = serde_json::from_str(doc).unwrap();
        let mut sorted = serde_json::to_value(&v).unwrap();
        sorted.sort_all_objects();
        assert_eq!(canon(doc), serde_json::to_string(&sorted).unwrap());
    }

    #[test]
    fn escaped_keys_sort_by_their_value() {
        // "\u0061" is "a": it must sort (and print) as "a", before "b".
        assert_eq!(canon(r#"{"b":1,"\u0061":2}"#), r#"{"a":2,"b":1}"#);
    }

    #[test]
    fn scalars_and_arrays_at_top_level() {
        assert_eq!(canon(" [ 3 , 1 ] "), "[3,1]");
        assert_eq!(canon("\"x\""), "\"x\"");
        assert_eq!(canon("1.50"), "1.5");
        assert_eq!(canon("null"), "null");
    }

    #[test]
    fn rejects_what_is_not_one_json_value() {
        for bad in ["", "{", "{} {}", "{\"a\":}", "nope", "[1,]"] {
            assert_eq!(canonical_json(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn same_json_same_key() {
        let p = parts("POST", "/v1/chat/completions");
        assert_eq!(
            dedup_key(
                &p,
                br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#
            ),
            dedup_key(
                &p,
                br#"{ "messages" : [ { "content":"hi", "role":"user" } ], "model":"m" }"#
            ),
        );
    }

    #[test]
    fn every_part_of_the_request_changes_the_key() {
        let body = br#"{"model":"m"}"#;
        let base = dedup_key(&parts("POST", "/v1/chat/completions"), body);
        assert_ne!(base, dedup_key(&parts("GET", "/v1/chat/completions"), body));
        assert_ne!(base, dedup_key(&parts("POST", "/v1/completions"), body));
        assert_ne!(
            base,
            dedup_key(&parts("POST", "/v1/chat/completions?x=1"), body)
        );
        assert_ne!(
            base,
            dedup_key(&parts("POST", "/v1/chat/completions"), br#"{"model":"n"}"#)
        );
        // Same numbers, different spelling of type: the key is conservative, not equal.
        assert_ne!(
            dedup_key(&parts("POST", "/"), br#"{"t":1}"#),
            dedup_key(&parts("POST", "/"), br#"{"t":1.0}"#)
        );

        let mut p = parts("POST", "/v1/chat/completions");
        p.headers
            .insert(AUTHORIZATION, "Bearer sk-one".parse().unwrap());
        let one = dedup_key(&p, body);
        assert_ne!(base, one);
        p.headers
            .insert(AUTHORIZATION, "Bearer sk-two".parse().unwrap());
        let two = dedup_key(&p, body);
        assert_ne!(one, two);
        p.extensions.insert(UserId::new("alice"));
        let alice = dedup_key(&p, body);
        assert_ne!(two, alice);
        p.extensions.insert(UserId::new("bob"));
        assert_ne!(alice, dedup_key(&p, body));
        p.extensions.insert(UserId::new(""));
        let empty_user = dedup_key(&p, body);
        p.extensions.remove::<UserId>();
        assert_ne!(
            empty_user,
            dedup_key(&p, body),
            "no user id != empty user id"
        );

        let mut p = parts("POST", "/v1/chat/completions");
        p.headers
            .insert("anthropic-beta", "tools-2024".parse().unwrap());
        assert_ne!(base, dedup_key(&p, body));
        // Headers outside the list (request ids, tracing) do not split requests.
        let mut p = parts("POST", "/v1/chat/completions");
        p.headers.insert("x-request-id", "abc".parse().unwrap());
        p.headers.insert("user-agent", "curl".parse().unwrap());
        assert_eq!(base, dedup_key(&p, body));
    }

    #[test]
    fn every_credential_header_is_part_of_the_caller() {
        // Issue 14: one gateway key, two provider keys in `x-api-key`: two callers.
        let body = b"{}";
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut p = parts("POST", "/");
            for (k, v) in pairs {
                p.headers.insert(*k, v.parse().unwrap());
            }
            dedup_key(&p, body)
        };
        assert_ne!(
            with(&[("authorization", "Bearer gw"), ("x-api-key", "sk-1")]),
            with(&[("authorization", "Bearer gw"), ("x-api-key", "sk-2")]),
        );
        // Azure's `api-key` (and Google's `x-goog-api-key`) tell callers apart too.
        assert_ne!(with(&[("api-key", "az-1")]), with(&[("api-key", "az-2")]));
        assert_ne!(
            with(&[("x-goog-api-key", "g-1")]),
            with(&[("x-goog-api-key", "g-2")])
        );
        // What goes upstream differs, so the spelling is part of the identity now.
        assert_ne!(
            with(&[("authorization", "Bearer sk-1")]),
            with(&[("x-api-key", "sk-1")])
        );
    }

    #[test]
    fn the_gateways_caller_id_extension_decides() {
        use portcullis_core::ApiKeyHash;
        let body = b"{}";
        let mut a = parts("POST", "/");
        a.extensions
            .insert(CallerId::of(&a.headers, Some(&ApiKeyHash::of("team-a"))));
        let mut b = parts("POST", "/");
        b.extensions
            .insert(CallerId::of(&b.headers, Some(&ApiKeyHash::of("team-b"))));
        assert_ne!(dedup_key(&a, body), dedup_key(&b, body));
        assert_ne!(dedup_key(&a, body), dedup_key(&parts("POST", "/"), body));
    }

    #[test]
    fn framing_is_unambiguous() {
        // A raw body that happens to look like a canonical one cannot collide with it,
        // and moving bytes between path and body changes the key.
        assert_ne!(
            dedup_key(&parts("POST", "/ab"), b"c"),
            dedup_key(&parts("POST", "/a"), b"bc")
        );
        assert_ne!(
            dedup_key(&parts("POST", "/"), b"{\"a\":1} x"),
            dedup_key(&parts("POST", "/"), b"{\"a\":1}")
        );
    }

    #[test]
    fn key_formats() {
        let k = dedup_key(&parts("GET", "/"), b"");
        assert_eq!(k.to_hex().len(), 64);
        assert_eq!(k.short(), k.to_hex()[..8]);
        assert_eq!(format!("{k:?}"), format!("Key({})", k.short()));
        assert_eq!(k.to_string(), k.to_hex());
    }

    /// Keys stored in Redis stay valid within a key version: a request's key is pinned, and
    /// spelt out byte by byte (v3's framing), so a change to it is a deliberate new version.
    #[test]
    fn keys_stay_what_earlier_versions_stored() {
        let mut p = parts("POST", "/v1/messages?beta=true");
        for (k, v) in [
            ("authorization", "Bearer sk-pinned"),
            ("accept", "application/json"),
            ("user-agent", "pin"),
            ("openai-project", "proj_1"),
        ] {
            p.headers.append(k, v.parse().unwrap());
        }
        p.headers
            .append("anthropic-version", "2023-06-01".parse().unwrap());
        p.headers
            .append("anthropic-version", "2024-01-01".parse().unwrap());
        let body = br#"{"model":"claude","messages":[{"role":"user","content":"pin \u00e9"}],"max_tokens":9}"#;
        let key = dedup_key(&p, body);
        // The same bytes, framed by hand: each piece after its one-byte length.
        let canonical = canonical_json(body).unwrap();
        let caller = CallerId::of(&p.headers, None).0;
        let mut bytes = Vec::new();
        let piece = |b: &[u8], out: &mut Vec<u8>| {
            out.push(u8::try_from(b.len()).unwrap());
            out.extend_from_slice(b);
        };
        piece(b"POST", &mut bytes);
        piece(b"/v1/messages?beta=true", &mut bytes);
        bytes.push(b'j');
        piece(&canonical, &mut bytes);
        piece(&caller, &mut bytes);
        bytes.push(b'-');
        // accept (bit 0), anthropic-version (bit 2), openai-project (bit 6), in that order.
        bytes.push(0b100_0101);
        bytes.push(1);
        piece(b"application/json", &mut bytes);
        bytes.push(2);
        piece(b"2023-06-01", &mut bytes);
        piece(b"2024-01-01", &mut bytes);
        bytes.push(1);
        piece(b"proj_1", &mut bytes);
        let by_hand = blake3::Hasher::new_derive_key("portcullis dedup key v3")
            .update(&bytes)
            .finalize();
        assert_eq!(key.as_bytes(), by_hand.as_bytes());
        assert!(
            bytes.len() <= 192,
            "a chat request's key fits Framed's buffer"
        );
        assert_eq!(
            key.to_hex(),
            "718ae535577284ecd1a9b7101663c79da481f6fe7841bd183ec00b54de1d85f2"
        );
    }

    /// serde's canonical form alone, for comparison.
    fn by_serde(doc: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        canonical_by_serde(doc, &mut out).map(|()| out)
    }

    #[test]
    fn the_fast_path_writes_what_serde_writes() {
        for doc in [
            &br#"{"model":"m","stream":false,"messages":[{"role":"user","content":"hi"}]}"#[..],
            br#" { "b" : [1, -2, 0, 123456789012345678, true, null], "a" : {} , "c": [ ] } "#,
            br#"{"z":1,"a":2,"z":0,"a":1}"#,
            br#"{"t":"line\nbreak \u00e9 \/ \ud83e\udd80","n":[1.0,1e2,-0,0.5,1E-7,12345678901234567890,-9223372036854775809]}"#,
            br#"{"k\u0041":1,"kA":0}"#,
            "{\"é\":\"ü\",\"e\":\"\u{2028}\u{7f}\"}".as_bytes(),
            b"[01]",
            b"[1,]",
            b"{\"a\":1,}",
            b"{\"a\" 1}",
            b"[1 2]",
            b"[-]",
            b"[1.]",
            b"[1e]",
            b"[tru]",
            b"[nulll]",
            b"\"ctl\x01\"",
            b"{\"k\x01\":1}",
            b"\"\xff\"",
            b"{\"\xff\":1}",
            b"[1]x",
            b"",
            b"  ",
            b"[\"\\x\"]",
            b"[\"\\ud800\"]",
            b"{\"a\":1}{\"b\":2}",
        ] {
            assert_eq!(canonical_json(doc), by_serde(doc), "{}", String::from_utf8_lossy(doc));
        }
    }

    #[test]
    fn nesting_past_the_fast_paths_depth_is_serdes() {
        for depth in [
            fast::MAX_DEPTH as usize - 1,
            fast::MAX_DEPTH as usize,
            127,
            128,
            200,
        ] {
            let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let objects = format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
            for doc in [arrays, objects] {
                assert_eq!(
                    canonical_json(doc.as_bytes()),
                    by_serde(doc.as_bytes()),
                    "{depth}"
                );
            }
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A JSON value as text, spelled many ways: whitespace here and there, members in any
        /// order and repeated, strings with and without escapes, numbers in every form.
        fn spelled() -> impl Strategy<Value = String> {
            let ws = prop::sample::select(vec!["", "", " ", "\n\t ", "\r"]);
            let string = prop::collection::vec(
                prop::sample::select(vec![
                    "a",
                    "Z",
                    "é",
                    "🦀",
                    " ",
                    "\\n",
                    "\\\"",
                    "\\\\",
                    "\\/",
                    "\\u0041",
                    "\\u00e9",
                    "\\ud83e\\udd80",
                    "\u{2028}",
                    "\u{7f}",
                    "\\t",
                    "\\u001f",
                ]),
                0..6,
            )
            .prop_map(|parts| format!("\"{}\"", parts.concat()));
            let number = prop::sample::select(vec![
                "0",
                "-0",
                "7",
                "-12",
                "123456789012345678",
                "1234567890123456789",
                "18446744073709551615",
                "18446744073709551616",
                "-9223372036854775808",
                "-9223372036854775809",
                "1.0",
                "0.5",
                "-2.25",
                "1e3",
                "1E-3",
                "2.5e+10",
                "1e400",
            ])
            .prop_map(str::to_owned);
            let leaf = prop_oneof![
                string.clone(),
                number,
                prop::sample::select(vec!["true", "false", "null"]).prop_map(str::to_owned),
            ];
            leaf.prop_recursive(4, 48, 6, move |inner| {
                let key = prop::sample::select(vec![
                    "\"a\"",
                    "\"b\"",
                    "\"ab\"",
                    "\"model\"",
                    "\"messages\"",
                    "\"é\"",
                    "\"a\\u0062\"",
                    "\"\"",
                ]);
                prop_oneof![
                    (prop::collection::vec((inner.clone(), ws.clone()), 0..5)).prop_map(|items| {
                        let body: Vec<String> = items
                            .into_iter()
                            .map(|(v, w)| format!("{w}{v}{w}"))
                            .collect();
                        format!("[{}]", body.join(","))
                    }),
                    (prop::collection::vec((key, inner, ws.clone()), 0..5)).prop_map(|members| {
                        let body: Vec<String> = members
                            .into_iter()
                            .map(|(k, v, w)| format!("{w}{k}{w}:{w}{v}{w}"))
                            .collect();
                        format!("{{{}}}", body.join(","))
                    }),
                ]
            })
        }

        proptest! {
            #[test]
            fn fast_path_matches_serde_on_any_spelling(doc in spelled()) {
                prop_assert_eq!(canonical_json(doc.as_bytes()), by_serde(doc.as_bytes()));
            }

            /// One byte changed, dropped or added anywhere: valid or not, the same answer.
            #[test]
            fn fast_path_matches_serde_on_damaged_documents(
                doc in spelled(),
                at in any::<prop::sample::Index>(),
                byte in prop::sample::select(b"{}[],:\" \\-.e0t\x01\xc3".to_vec()),
                how in 0..3u8,
            ) {
                let mut b = doc.into_bytes();
                let i = at.index(b.len() + 1);
                match how {
                    0 if i < b.len() => b[i] = byte,
                    1 if i < b.len() => { b.remove(i); }
                    _ => b.insert(i, byte),
                }
                prop_assert_eq!(canonical_json(&b), by_serde(&b));
            }
        }
    }
}
