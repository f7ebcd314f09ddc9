//! A cheap scan of one streamed event's JSON for its answer text: no allocation, no tree.
//!
//! Parsing every event of a stream with serde (typed, borrowed, unknown fields ignored) cost
//! more than the detector itself: a chat chunk is some 300 bytes of envelope (ids, model,
//! fingerprint) around 20 characters of text. This scan walks the JSON once, skips strings
//! eight bytes at a time, reads only the keys it needs and decodes only the text, into a
//! buffer that is reused from event to event.
//!
//! # Why not sure means serde
//!
//! The scan accepts a subset of what serde accepts and, when it accepts, finds exactly the
//! texts serde finds (a property test holds it to that on generated events). Anything it is
//! not sure about (a top level that is not an object, a duplicate or escaped key it reads, a
//! value of an unexpected type, deep nesting, a lone surrogate, invalid UTF-8 in the text) is
//! [`Unsure`], and the caller falls back to serde, which decides as before. Honest streams
//! never take the slow path.

use std::ops::Range;

use portcullis_core::json_skim::{object_reading, short_escape, skip_value, string_stop, ws};

use crate::Api;

/// The scan is not sure: let serde decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unsure;

type Result<T> = std::result::Result<T, Unsure>;

/// Deeper nesting is left to serde (which refuses past 128).
const MAX_DEPTH: usize = 100;

/// The texts of one event, reused from event to event (cleared, never shrunk).
#[derive(Debug, Default)]
pub(crate) struct Texts {
    /// Decoded text of every piece, one after the other.
    buf: String,
    /// Each piece, in order.
    pieces: Vec<Piece>,
    /// The last event read in full, but for its one text (see [`Template`]).
    template: Template,
}

/// One text of an event.
#[derive(Debug, Clone)]
struct Piece {
    /// The choice (chat completions; 0 elsewhere).
    index: u32,
    /// The decoded text, in [`Texts::buf`].
    text: Range<usize>,
    /// The JSON string token it was decoded from, quotes included, in the payload.
    token: Range<usize>,
}

/// The bytes around the one text of the last event read in full.
///
/// # Why
///
/// The events of one stream differ only in their text: `{"id":"chatcmpl-1",...,"delta":
/// {"content":"` + text + `"},...}` (or `..."text_delta","text":"` + text + `"}}`). When an
/// event is the last one's bytes with another JSON string token in place of the text's, the
/// scan would walk it exactly as it walked the last one (every byte outside the token is the
/// same, and a string token's content changes nothing else), so only the new token is read:
/// two comparisons and one string instead of some thirty keys and values. Anything else is
/// read in full (and becomes the template).
#[derive(Debug, Default)]
struct Template {
    api: Option<Api>,
    index: u32,
    before: Vec<u8>,
    after: Vec<u8>,
}

impl Texts {
    /// The pieces found by the last successful [`scan`].
    pub(crate) fn each(&self, f: &mut impl FnMut(u32, &str)) {
        for p in &self.pieces {
            f(p.index, &self.buf[p.text.clone()]);
        }
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.pieces.clear();
    }

    /// The event is the template's but for its text: read just that.
    fn read_by_template(&mut self, api: Api, payload: &[u8]) -> Option<()> {
        let t = &self.template;
        if t.api != Some(api) || payload.len() < t.before.len() + t.after.len() {
            return None;
        }
        if !payload.starts_with(&t.before) || !payload.ends_with(&t.after) {
            return None;
        }
        let token = t.before.len()..payload.len() - t.after.len();
        // Exactly one string token in between (a quote inside would change the structure).
        let mut s = Cursor::at(&payload[..token.end], token.start);
        if s.peek() != Some(b'"') {
            return None;
        }
        let text = s.text(&mut self.buf).ok()?.text;
        if s.i != token.end {
            return None;
        }
        self.pieces.push(Piece {
            index: t.index,
            text,
            token,
        });
        Some(())
    }

    /// A full read found one text: this event is the template for the next.
    fn remember(&mut self, api: Api, payload: &[u8]) {
        let t = &mut self.template;
        t.api = None;
        if let [p] = self.pieces.as_slice() {
            t.api = Some(api);
            t.index = p.index;
            t.before.clear();
            t.before.extend_from_slice(&payload[..p.token.start]);
            t.after.clear();
            t.after.extend_from_slice(&payload[p.token.end..]);
        }
    }
}

/// Find the answer text of one SSE `data:` payload of `api` into `out` (what
/// [`crate::api::stream_text`] finds with serde), or [`Unsure`].
pub(crate) fn scan(api: Api, payload: &[u8], out: &mut Texts) -> Result<()> {
    out.clear();
    if out.read_by_template(api, payload).is_some() {
        return Ok(());
    }
    out.clear();
    // No text key or type written out: no text, as serde's reading decides it too (the last
    // events of a chat stream; most events of a Messages stream). In a chat event, also every
    // text key written out holding `""` or `null` (the role event that opens every chat
    // stream): serde's reading finds at most empty texts there, which the watch ignores. One
    // search of the event for the key decides both.
    let no_text = match api {
        Api::ChatCompletions => only_empty_content(payload),
        Api::Responses | Api::Messages => !crate::api::may_hold_text(api, payload),
    };
    if no_text {
        return Ok(());
    }
    // Checked whole, once: cheaper than a check of each string in it (serde refuses invalid
    // UTF-8 anywhere, so an event that is not UTF-8 is serde's to refuse).
    let text = utf8(payload)?;
    let mut s = Cursor {
        b: payload,
        i: 0,
        text: Some(text),
    };
    s.ws();
    match api {
        Api::ChatCompletions => chat_choices(&mut s, out, b"delta")?,
        Api::Responses | Api::Messages => typed_event(api, &mut s, out)?,
    }
    s.ws();
    if s.i != s.b.len() {
        return Err(Unsure);
    }
    out.remember(api, payload);
    Ok(())
}

/// Whether every `"content"` key written out in `payload` has the value `""` or `null`; so
/// also when none is ([`crate::api::may_hold_text`] is `false` for a chat event).
///
/// `"content"` followed by a colon is a key wherever it appears: inside a JSON string its
/// quotes would be escaped. One followed by anything else is a value and says nothing. Any
/// other value (a string with text, an array of parts, a malformed one) is `false`: the scan
/// reads the event. Keys written with `\u` escapes are not looked for, as
/// [`crate::api::may_hold_text`] does not.
fn only_empty_content(payload: &[u8]) -> bool {
    static KEY: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"content\""));
    KEY.find_iter(payload).all(|at| {
        let i = ws(payload, at + b"\"content\"".len());
        if payload.get(i) != Some(&b':') {
            return true; // a value, not the key
        }
        let value = &payload[ws(payload, i + 1)..];
        value.starts_with(b"\"\"") || value.starts_with(b"null")
    })
}

/// Find the answer text of a whole (not streamed) chat completion into `out` (what
/// [`crate::api::json_text`] finds with serde: `choices[].message.content` as a string), or
/// [`Unsure`] (content parts, duplicate or escaped keys, a choice index or message of an
/// unexpected type: serde's to read or refuse).
///
/// Unlike [`scan`], which checks an event as serde would, a whole answer is stepped over with
/// [`portcullis_core::json_skim`] (its structure checked, the values around the texts not
/// read), and only the texts are decoded and checked. The one difference from serde: an
/// answer whose structure is whole but with invalid JSON outside its texts (a bad number in
/// `usage`) is still watched, where serde would refuse it and leave it unwatched.
pub(crate) fn scan_chat_answer(body: &[u8], out: &mut Texts) -> Result<()> {
    out.clear();
    let mut seen = false;
    let end = object_reading(body, ws(body, 0), |key, start| {
        if key != b"choices" {
            return skip_value(body, start);
        }
        if std::mem::replace(&mut seen, true) {
            return None; // serde refuses a duplicate field
        }
        answer_choices(body, start, out).ok()
    })
    .ok_or(Unsure)?;
    // No `choices`: serde's default, no texts.
    if ws(body, end) != body.len() {
        return Err(Unsure);
    }
    Ok(())
}

/// The `choices` array of a whole answer, from `b[i]`: each choice's text into `out`; the
/// index just past the array.
fn answer_choices(b: &[u8], i: usize, out: &mut Texts) -> Result<usize> {
    if b.get(i) != Some(&b'[') {
        return Err(Unsure); // `null` or another type: serde refuses the answer
    }
    let mut i = ws(b, i + 1);
    if b.get(i) == Some(&b']') {
        return Ok(i + 1);
    }
    loop {
        let (mut index, mut seen_message) = (None, false);
        let mut text = None;
        let end = object_reading(b, i, |key, start| match key {
            b"index" => {
                let mut c = Cursor::at(b, start);
                if index.replace(c.index().ok()?).is_some() {
                    return None;
                }
                Some(c.i)
            }
            b"message" => {
                if std::mem::replace(&mut seen_message, true) {
                    return None;
                }
                if b[start..].starts_with(b"null") {
                    return Some(start + 4);
                }
                let mut seen_content = false;
                object_reading(b, start, |key, start| {
                    if key != b"content" {
                        return skip_value(b, start);
                    }
                    if std::mem::replace(&mut seen_content, true) {
                        return None;
                    }
                    match *b.get(start)? {
                        b'"' => {
                            let mut c = Cursor::at(b, start);
                            text = Some(c.text(&mut out.buf).ok()?);
                            Some(c.i)
                        }
                        // Content parts are serde's.
                        b'[' => None,
                        // `null` or another JSON value: no text (serde reads it as a `Value`
                        // and finds no string in it).
                        _ => skip_value(b, start),
                    }
                })
            }
            _ => skip_value(b, start),
        })
        .ok_or(Unsure)?;
        if let Some(t) = text {
            out.pieces.push(t.piece(index.unwrap_or(0)));
        }
        i = ws(b, end);
        match b.get(i) {
            Some(b',') => i = ws(b, i + 1),
            Some(b']') => return Ok(i + 1),
            _ => return Err(Unsure),
        }
    }
}

/// `{"choices":[{"index":N,"delta":{"content":"..."}}, ..], ..}` (`message` in place of
/// `delta` in a whole answer).
fn chat_choices(s: &mut Cursor<'_>, out: &mut Texts, inner: &[u8]) -> Result<()> {
    let mut seen_choices = false;
    s.object(0, |s, key| {
        if key != b"choices" {
            return s.skip_value(1);
        }
        if std::mem::replace(&mut seen_choices, true) {
            return Err(Unsure);
        }
        s.array(1, |s| {
            let (mut index, mut seen_delta) = (None, false);
            let mut text: Option<Text> = None;
            s.object(2, |s, key| match key {
                b"index" => {
                    if index.replace(s.index()?).is_some() {
                        return Err(Unsure);
                    }
                    Ok(())
                }
                k if k == inner => {
                    if std::mem::replace(&mut seen_delta, true) {
                        return Err(Unsure);
                    }
                    if s.null() {
                        return Ok(());
                    }
                    let mut seen_content = false;
                    s.object(3, |s, key| {
                        if key != b"content" {
                            return s.skip_value(4);
                        }
                        if std::mem::replace(&mut seen_content, true) {
                            return Err(Unsure);
                        }
                        if !s.null() {
                            text = Some(s.text(&mut out.buf)?);
                        }
                        Ok(())
                    })
                }
                _ => s.skip_value(3),
            })?;
            if let Some(t) = text {
                out.pieces.push(t.piece(index.unwrap_or(0)));
            }
            Ok(())
        })
    })
}

/// `{"type":"response.output_text.delta","delta":"..."}` (Responses) or
/// `{"type":"content_block_delta","delta":{"type":"text_delta","text":"..."}}` (Messages).
fn typed_event(api: Api, s: &mut Cursor<'_>, out: &mut Texts) -> Result<()> {
    enum Delta {
        None,
        /// serde's untagged `delta` fails on it, and with it the whole event: no text.
        Failed,
        Text(Text),
        Block {
            text_delta: bool,
            text: Option<Text>,
        },
    }
    let (mut kind, mut delta) = (None::<&[u8]>, None::<Delta>);
    s.object(0, |s, key| match key {
        b"type" => {
            let k = s.raw_string()?;
            if kind.replace(k).is_some() {
                return Err(Unsure);
            }
            Ok(())
        }
        b"delta" => {
            let d = match s.peek() {
                Some(b'n') if s.null() => Delta::None,
                Some(b'"') => Delta::Text(s.text(&mut out.buf)?),
                Some(b'{') => {
                    let (mut block_kind, mut text, mut seen_text) = (None::<&[u8]>, None, false);
                    s.object(1, |s, key| match key {
                        b"type" => {
                            let k = s.raw_string()?;
                            if block_kind.replace(k).is_some() {
                                return Err(Unsure);
                            }
                            Ok(())
                        }
                        b"text" => {
                            if std::mem::replace(&mut seen_text, true) {
                                return Err(Unsure);
                            }
                            if !s.null() {
                                text = Some(s.text(&mut out.buf)?);
                            }
                            Ok(())
                        }
                        _ => s.skip_value(2),
                    })?;
                    // serde's untagged `Block` needs its `type` (Anthropic's `message_delta`
                    // has none).
                    match block_kind {
                        Some(k) => Delta::Block {
                            text_delta: k == b"text_delta",
                            text,
                        },
                        None => Delta::Failed,
                    }
                }
                _ => return Err(Unsure),
            };
            if delta.replace(d).is_some() {
                return Err(Unsure);
            }
            Ok(())
        }
        _ => s.skip_value(1),
    })?;
    let Some(kind) = kind else {
        // serde: a missing `type` fails the event; nothing either way.
        return Ok(());
    };
    match (api, kind, delta) {
        (Api::Responses, b"response.output_text.delta", Some(Delta::Text(t))) => {
            out.pieces.push(t.piece(0))
        }
        (
            Api::Messages,
            b"content_block_delta",
            Some(Delta::Block {
                text_delta: true,
                text: Some(t),
            }),
        ) => out.pieces.push(t.piece(0)),
        _ => {}
    }
    Ok(())
}

// === the cursor ===

/// A decoded string: where its text is in the buffer, where its token was in the payload.
struct Text {
    text: Range<usize>,
    token: Range<usize>,
}

impl Text {
    fn piece(self, index: u32) -> Piece {
        Piece {
            index,
            text: self.text,
            token: self.token,
        }
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
    /// `b` as text, when it was checked as UTF-8 whole (an event is, once): its strings need
    /// no check of their own then.
    text: Option<&'a str>,
}

impl<'a> Cursor<'a> {
    /// At `b[i]`, `b` not checked as UTF-8 yet: each string is checked as it is read.
    fn at(b: &'a [u8], i: usize) -> Self {
        Self { b, i, text: None }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// `b[from..to]` as text (`from` and `to` at ASCII bytes: quotes, escapes, stops).
    fn str_of(&self, from: usize, to: usize) -> Result<&'a str> {
        match self.text {
            Some(text) => text.get(from..to).ok_or(Unsure),
            None => {
                let b = self.b;
                utf8(&b[from..to])
            }
        }
    }

    fn ws(&mut self) {
        self.i = ws(self.b, self.i);
    }

    fn eat(&mut self, c: u8) -> Result<()> {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(Unsure)
        }
    }

    /// `null` next (consumed), after whitespace.
    fn null(&mut self) -> bool {
        self.ws();
        if self.b[self.i..].starts_with(b"null") {
            self.i += 4;
            true
        } else {
            false
        }
    }

    /// `{ key: value, .. }`: `f` gets each key (raw, unescaped, valid UTF-8) and must consume
    /// its value.
    fn object(
        &mut self,
        depth: usize,
        mut f: impl FnMut(&mut Self, &'a [u8]) -> Result<()>,
    ) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(Unsure);
        }
        self.eat(b'{')?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            let key = self.raw_string()?;
            self.eat(b':')?;
            self.ws();
            f(self, key)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(Unsure),
            }
        }
    }

    /// `[ value, .. ]`: `f` must consume each value.
    fn array(&mut self, depth: usize, mut f: impl FnMut(&mut Self) -> Result<()>) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(Unsure);
        }
        self.eat(b'[')?;
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            f(self)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(Unsure),
            }
        }
    }

    /// Any JSON value, unread.
    fn skip_value(&mut self, depth: usize) -> Result<()> {
        self.ws();
        match self.peek() {
            Some(b'{') => self.object(depth + 1, |s, _| s.skip_value(depth + 1)),
            Some(b'[') => self.array(depth + 1, |s| s.skip_value(depth + 1)),
            Some(b'"') => self.skip_string(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number().map(drop),
            _ => Err(Unsure),
        }
    }

    fn literal(&mut self, lit: &[u8]) -> Result<()> {
        if self.b[self.i..].starts_with(lit) {
            self.i += lit.len();
            Ok(())
        } else {
            Err(Unsure)
        }
    }

    /// A number (JSON's grammar); whether it is a plain integer.
    fn number(&mut self) -> Result<bool> {
        let digits = |s: &mut Self| {
            let from = s.i;
            while let Some(b'0'..=b'9') = s.peek() {
                s.i += 1;
            }
            s.i - from
        };
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => return Err(Unsure),
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.i += 1;
            if digits(self) == 0 {
                return Err(Unsure);
            }
            integer = false;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if digits(self) == 0 {
                return Err(Unsure);
            }
            integer = false;
        }
        Ok(integer)
    }

    /// A choice index: what serde reads into a `u32` (a non-negative integer that fits).
    fn index(&mut self) -> Result<u32> {
        let from = self.i;
        if self.peek() == Some(b'-') || !self.number()? {
            return Err(Unsure);
        }
        self.str_of(from, self.i)?.parse().map_err(|_| Unsure)
    }

    /// A string with no escape, as its raw bytes (valid UTF-8, as serde checks keys).
    fn raw_string(&mut self) -> Result<&'a [u8]> {
        if self.peek() != Some(b'"') {
            return Err(Unsure);
        }
        let from = self.i + 1;
        let stop = string_stop(self.b, from);
        if self.b.get(stop) != Some(&b'"') {
            return Err(Unsure);
        }
        self.i = stop + 1;
        let raw = &self.b[from..stop];
        // Keys are short and ASCII, where `from_utf8`'s setup would dominate.
        if self.text.is_none() && !raw.is_ascii() {
            utf8(raw)?;
        }
        Ok(raw)
    }

    /// A string, unread (what serde checks of it: its escapes, no control character, and
    /// UTF-8: a string cut inside a character is not JSON).
    fn skip_string(&mut self) -> Result<()> {
        self.i += 1;
        let start = self.i;
        loop {
            self.i = string_stop(self.b, self.i);
            match self.peek() {
                Some(b'"') => {
                    self.str_of(start, self.i)?;
                    self.i += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 1,
                        Some(b'u') => {
                            self.i += 1;
                            match self.hex4()? {
                                // A surrogate only in a pair, high then low: serde refuses a
                                // lone one.
                                0xD800..=0xDBFF => {
                                    if self.b.get(self.i..self.i + 2) != Some(b"\\u") {
                                        return Err(Unsure);
                                    }
                                    self.i += 2;
                                    if !(0xDC00..=0xDFFF).contains(&self.hex4()?) {
                                        return Err(Unsure);
                                    }
                                }
                                0xDC00..=0xDFFF => return Err(Unsure),
                                _ => {}
                            }
                        }
                        _ => return Err(Unsure),
                    }
                }
                _ => return Err(Unsure),
            }
        }
    }

    fn hex4(&mut self) -> Result<u16> {
        let h = self.b.get(self.i..self.i + 4).ok_or(Unsure)?;
        let h = std::str::from_utf8(h).map_err(|_| Unsure)?;
        let v = u16::from_str_radix(h, 16).map_err(|_| Unsure)?;
        if h.starts_with(['+', '-']) {
            return Err(Unsure);
        }
        self.i += 4;
        Ok(v)
    }

    /// A string, decoded and appended to `buf`.
    fn text(&mut self, buf: &mut String) -> Result<Text> {
        self.ws();
        if self.peek() != Some(b'"') {
            return Err(Unsure);
        }
        let start = buf.len();
        let token = self.i;
        self.i += 1;
        loop {
            let from = self.i;
            self.i = string_stop(self.b, self.i);
            buf.push_str(self.str_of(from, self.i)?);
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(Text {
                        text: start..buf.len(),
                        token: token..self.i,
                    });
                }
                Some(b'\\') => {
                    self.i += 1;
                    let escaped = self.peek().ok_or(Unsure)?;
                    let c = match short_escape(escaped) {
                        Some(c) => c,
                        None if escaped == b'u' => {
                            self.i += 1;
                            let hi = self.hex4()?;
                            self.i -= 1;
                            let code = match hi {
                                0xD800..=0xDBFF => {
                                    if self.b.get(self.i + 1..self.i + 3) != Some(b"\\u") {
                                        return Err(Unsure);
                                    }
                                    self.i += 3;
                                    let lo = self.hex4()?;
                                    self.i -= 1;
                                    if !(0xDC00..=0xDFFF).contains(&lo) {
                                        return Err(Unsure);
                                    }
                                    0x10000
                                        + ((u32::from(hi) - 0xD800) << 10)
                                        + (u32::from(lo) - 0xDC00)
                                }
                                0xDC00..=0xDFFF => return Err(Unsure),
                                _ => u32::from(hi),
                            };
                            char::from_u32(code).ok_or(Unsure)?
                        }
                        None => return Err(Unsure),
                    };
                    self.i += 1;
                    buf.push(c);
                }
                _ => return Err(Unsure),
            }
        }
    }
}

fn utf8(b: &[u8]) -> Result<&str> {
    std::str::from_utf8(b).map_err(|_| Unsure)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scan is sure the chat event `p` holds no text, and serde finds none in it.
    fn no_text_either_way(p: &str) {
        assert_eq!(pieces(Api::ChatCompletions, p), Ok(vec![]), "{p}");
        assert_eq!(
            serde_pieces(Api::ChatCompletions, p.as_bytes()),
            vec![],
            "{p}"
        );
    }

    fn pieces(api: Api, payload: &str) -> Result<Vec<(u32, String)>> {
        let mut t = Texts::default();
        scan(api, payload.as_bytes(), &mut t)?;
        Ok(non_empty(&t))
    }

    /// A lone surrogate escape in a string the scan steps over: serde refuses the event (here,
    /// inside the delta it reads whole), so the scan must not be sure of a text in it.
    #[test]
    fn a_lone_surrogate_in_a_skipped_string_is_left_to_serde() {
        let event = |x: &str| {
            format!(
                r#"{{"type":"content_block_delta","delta":{{"type":"text_delta","text":"hi","x":["{x}"]}}}}"#
            )
        };
        for lone in [r"\ud80dudc40", r"a\ude00", r"\ud834", r"\ud834\u0041"] {
            let p = event(lone);
            let mut serde = Vec::new();
            crate::api::stream_text_serde(Api::Messages, p.as_bytes(), &mut |i, t| {
                serde.push((i, t.to_owned()))
            });
            assert_eq!(serde, [], "{p}");
            assert_eq!(pieces(Api::Messages, &p), Err(Unsure), "{p}");
        }
        // A pair, high then low, is read as serde reads it.
        assert_eq!(
            pieces(Api::Messages, &event(r"\ud834\ude00")),
            Ok(vec![(0, "hi".into())])
        );
    }

    /// The texts the scan found, empty ones left out (the watch ignores them).
    fn non_empty(texts: &Texts) -> Vec<(u32, String)> {
        let mut v = Vec::new();
        texts.each(&mut |i, t| {
            if !t.is_empty() {
                v.push((i, t.to_owned()))
            }
        });
        v
    }

    #[test]
    fn reads_each_shape() {
        assert_eq!(
            pieces(
                Api::ChatCompletions,
                r#"{"id":"x","choices":[{"delta":{"content":"a\"b\n\u00e9\ud83d\ude00"},"index":2}]}"#
            ),
            Ok(vec![(2, "a\"b\né😀".to_owned())])
        );
        assert_eq!(
            pieces(
                Api::Messages,
                r#" {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"yo"}} "#
            ),
            Ok(vec![(0, "yo".to_owned())])
        );
        assert_eq!(
            pieces(
                Api::Responses,
                r#"{"type":"response.output_text.delta","delta":"hi","logprobs":[1.5e-3,-0,{"a":[true,false,null]}]}"#
            ),
            Ok(vec![(0, "hi".to_owned())])
        );
    }

    #[test]
    fn is_unsure_rather_than_wrong() {
        for p in [
            r#"[{"choices":[{"delta":{"content":"x"}}]}]"#,
            r#"{"choices":[],"choices":[{"delta":{"content":"x"}}]}"#,
            r#"{"choices":[{"index":1.0,"delta":{"content":"x"}}]}"#,
            r#"{"choices":[{"index":-1,"delta":{"content":"x"}}]}"#,
            r#"{"choices":[{"delta":{"content":"\ud800"}}]}"#,
            r#"{"choices":[{"delta":{"content":7}}]}"#,
            r#"{"choices":[{"delta":{"content":"x"}}]} trailing"#,
            r#"{"a":01,"content":"x"}"#,
            "{\"a\":\"\u{1}\",\"content\":\"x\"}",
        ] {
            assert_eq!(pieces(Api::ChatCompletions, p), Err(Unsure), "{p}");
        }
        // Without the text key written out the event holds no text, valid or not: what serde's
        // reading finds too (it looks for the same key first), without a walk of the event.
        for p in [
            r#"[{"choices":[]}]"#,
            r#"{"choices":[],"choices":[]}"#,
            r#"{"choices":[{"delta":{"\u0063ontent":"x"}}]}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"stop","index":0}]}"#,
            r#"{"a":01}"#,
            "{\"a\":\"\u{1}\"}",
        ] {
            no_text_either_way(p);
        }
        for (api, p) in [
            (
                Api::Messages,
                r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"}}"#,
            ),
            (Api::Messages, r#"{"type":"ping"#),
            (
                Api::Responses,
                r#"{"type":"response.completed","response":{"output":[1]}}"#,
            ),
        ] {
            assert_eq!(pieces(api, p), Ok(vec![]), "{p}");
        }
        assert_eq!(
            pieces(
                Api::Messages,
                r#"{"type":"content_block_delta","delta":["text_delta","x"]}"#
            ),
            Err(Unsure)
        );
        // serde fails the whole event on a `delta` object without `type`: no text either way.
        assert_eq!(
            pieces(
                Api::Messages,
                r#"{"type":"content_block_delta","delta":{"text":"x"}}"#
            ),
            Ok(vec![])
        );
    }

    // === the scan against serde ===

    use proptest::prelude::*;

    /// Any JSON value, as text (strings with escapes, numbers of every form).
    fn any_json() -> BoxedStrategy<String> {
        let leaf = prop_oneof![
            Just("null".to_owned()),
            any::<bool>().prop_map(|b| b.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| format!("{f:e}")),
            any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
            "\\PC{0,12}".prop_map(|s| ascii_escaped(&s)),
        ];
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec(("[a-z]{1,8}", inner), 0..4).prop_map(|v| {
                    let fields: Vec<String> =
                        v.into_iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                    format!("{{{}}}", fields.join(","))
                }),
            ]
        })
        .boxed()
    }

    fn extras() -> BoxedStrategy<Vec<(String, String)>> {
        prop::collection::vec(("[a-z_]{1,10}", any_json()), 0..4).boxed()
    }

    /// A string written the way `ensure_ascii` servers write it: `\uXXXX` (pairs included).
    fn ascii_escaped(s: &str) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                ' '..='~' => out.push(c),
                _ => {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{u:04x}"));
                    }
                }
            }
        }
        out.push('"');
        out
    }

    fn text_value() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
            2 => "\\PC{0,12}".prop_map(|s| ascii_escaped(&s)),
            1 => Just("null".to_owned()),
            1 => any_json(),
        ]
    }

    /// An object in a random key order, sometimes with a key twice, sometimes with spaces.
    fn object(fields: Vec<(String, String)>, dup: Option<usize>, spaced: bool) -> String {
        let mut fields = fields;
        if let Some(d) = dup {
            if !fields.is_empty() {
                let f = fields[d % fields.len()].clone();
                fields.push(f);
            }
        }
        let sep = if spaced { " , " } else { "," };
        let colon = if spaced { " : " } else { ":" };
        let body: Vec<String> = fields
            .into_iter()
            .map(|(k, v)| format!("\"{k}\"{colon}{v}"))
            .collect();
        if spaced {
            format!("{{ {} }}", body.join(sep))
        } else {
            format!("{{{}}}", body.join(sep))
        }
    }

    fn shuffled(mut v: Vec<(String, String)>, seed: u64) -> Vec<(String, String)> {
        let mut x = seed | 1;
        for i in (1..v.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.swap(i, (x % (i as u64 + 1)) as usize);
        }
        v
    }

    fn event(api: Api) -> BoxedStrategy<String> {
        let knobs = (
            any::<u64>(),
            prop::option::weighted(0.05, any::<usize>()),
            any::<bool>(),
        );
        match api {
            Api::ChatCompletions => {
                let index = prop_oneof![
                    8 => (0..4u32).prop_map(|i| i.to_string()),
                    1 => Just("1.0".to_owned()),
                    1 => Just("-1".to_owned()),
                    1 => Just("4294967296".to_owned()),
                ];
                let delta = (
                    prop::option::weighted(0.9, text_value()),
                    extras(),
                    knobs.clone(),
                    prop::sample::select(vec![false, false, false, false, false, true]),
                )
                    .prop_map(|(content, mut extra, (seed, dup, spaced), null)| {
                        if null {
                            return "null".to_owned();
                        }
                        if let Some(c) = content {
                            extra.push(("content".into(), c));
                        }
                        object(shuffled(extra, seed), dup, spaced)
                    });
                let choice = (
                    prop::option::weighted(0.9, index),
                    prop::option::weighted(0.9, delta),
                    extras(),
                    knobs.clone(),
                )
                    .prop_map(|(index, delta, mut extra, (seed, dup, spaced))| {
                        extra.extend(index.map(|i| ("index".into(), i)));
                        extra.extend(delta.map(|d| ("delta".into(), d)));
                        object(shuffled(extra, seed), dup, spaced)
                    });
                (prop::collection::vec(choice, 0..3), extras(), knobs)
                    .prop_map(|(choices, mut extra, (seed, dup, spaced))| {
                        extra.push(("choices".into(), format!("[{}]", choices.join(","))));
                        object(shuffled(extra, seed), dup, spaced)
                    })
                    .boxed()
            }
            Api::Responses | Api::Messages => {
                let kind = prop::sample::select(vec![
                    "\"response.output_text.delta\"",
                    "\"response.output_text.delta\"",
                    "\"content_block_delta\"",
                    "\"content_block_delta\"",
                    "\"response.function_call_arguments.delta\"",
                    "\"content_block_start\"",
                    "\"content\\u005fblock_delta\"",
                    "3",
                ])
                .prop_map(str::to_owned);
                let block_kind = prop::sample::select(vec![
                    "\"text_delta\"",
                    "\"text_delta\"",
                    "\"input_json_delta\"",
                    "\"thinking_delta\"",
                    "null",
                ])
                .prop_map(str::to_owned);
                let block = (
                    prop::option::weighted(0.9, block_kind),
                    prop::option::weighted(0.9, text_value()),
                    extras(),
                    knobs.clone(),
                )
                    .prop_map(|(kind, text, mut extra, (seed, dup, spaced))| {
                        extra.extend(kind.map(|k| ("type".into(), k)));
                        extra.extend(text.map(|t| ("text".into(), t)));
                        object(shuffled(extra, seed), dup, spaced)
                    });
                let delta = prop_oneof![3 => text_value(), 3 => block, 1 => any_json()];
                (
                    prop::option::weighted(0.95, kind),
                    prop::option::weighted(0.95, delta),
                    extras(),
                    knobs,
                )
                    .prop_map(|(kind, delta, mut extra, (seed, dup, spaced))| {
                        extra.extend(kind.map(|k| ("type".into(), k)));
                        extra.extend(delta.map(|d| ("delta".into(), d)));
                        object(shuffled(extra, seed), dup, spaced)
                    })
                    .boxed()
            }
        }
    }

    fn api() -> impl Strategy<Value = Api> {
        prop::sample::select(vec![Api::ChatCompletions, Api::Responses, Api::Messages])
    }

    /// The texts serde's reading finds, empty ones left out: the watch ignores them (see
    /// `Watch::text`), and the scan need not find them.
    fn serde_pieces(api: Api, payload: &[u8]) -> Vec<(u32, String)> {
        let mut v = Vec::new();
        crate::api::stream_text_serde(api, payload, &mut |i, t| {
            if !t.is_empty() {
                v.push((i, t.to_owned()))
            }
        });
        v
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Where the scan is sure, it finds what serde finds; on the events honest upstreams
        /// send (no duplicate key, the expected types) it is sure.
        #[test]
        fn agrees_with_serde(
            (api, payload) in api().prop_flat_map(|a| (Just(a), event(a))),
            cut in any::<prop::sample::Index>(),
            mutate in 0..6u8,
        ) {
            let payload = mutated(payload.into_bytes(), cut, mutate);
            let mut texts = Texts::default();
            let scanned = scan(api, &payload, &mut texts);
            let expected = serde_pieces(api, &payload);
            if scanned.is_ok() {
                let got = non_empty(&texts);
                prop_assert_eq!(got, expected);
            }
        }
    }

    /// Truncated (1), a byte dropped (2), or as it is: malformed JSON must never be read wrong.
    fn mutated(mut payload: Vec<u8>, cut: prop::sample::Index, mutate: u8) -> Vec<u8> {
        match mutate {
            1 => payload.truncate(cut.index(payload.len() + 1)),
            2 if !payload.is_empty() => {
                payload.remove(cut.index(payload.len()));
            }
            _ => {}
        }
        payload
    }

    fn serde_answer_pieces(payload: &[u8]) -> Vec<(u32, String)> {
        let mut v = Vec::new();
        crate::api::chat_answer_serde(payload, &mut |i, t| {
            if !t.is_empty() {
                v.push((i, t.to_owned()))
            }
        });
        v
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The same for whole chat answers (`message` in place of `delta`): where the scan
        /// is sure, it finds what the serde read of a whole answer finds, for valid JSON and
        /// cut answers. (Invalid JSON outside the texts is the one difference: the skim does
        /// not read it, serde refuses the answer.)
        #[test]
        fn whole_chat_answers_agree_with_serde(
            payload in event(Api::ChatCompletions),
            cut in any::<prop::sample::Index>(),
            mutate in 0..6u8,
        ) {
            let payload = payload.replace("\"delta\"", "\"message\"").into_bytes();
            let payload = mutated(payload, cut, mutate);
            let valid = serde_json::from_slice::<serde_json::Value>(&payload).is_ok();
            // Cut before its closing brace (a cut of trailing whitespace leaves it whole).
            let cut = mutate == 1 && !payload.trim_ascii_end().ends_with(b"}");
            let mut texts = Texts::default();
            if (valid || cut) && scan_chat_answer(&payload, &mut texts).is_ok() {
                let got = non_empty(&texts);
                prop_assert_eq!(got, serde_answer_pieces(&payload));
            }
        }
    }

    proptest! {
        /// Whatever bytes a whole answer is (an upstream chose them): no panic.
        #[test]
        fn any_whole_answer_bytes_scan_without_panic(
            b in prop::collection::vec(
                prop::sample::select(b"{}[]\",:\\ 0a-nul\xff".to_vec()),
                0..64,
            ),
            pre in prop::sample::select(vec![
                "",
                r#"{"choices":["#,
                r#"{"choices":[{"index":"#,
                r#"{"choices":[{"message":"#,
                r#"{"choices":[{"message":{"content":"#,
            ]),
        ) {
            let mut body = pre.as_bytes().to_vec();
            body.extend_from_slice(&b);
            let _ = scan_chat_answer(&body, &mut Texts::default());
        }
    }

    #[test]
    fn whole_chat_answer_is_scanned() {
        let body = br#"{"choices":[{"finish_reason":"stop","index":0,"logprobs":null,"message":{"content":"Hello \"x\"","refusal":null,"role":"assistant"}}],"id":"c","usage":{"prompt_tokens":2}}"#;
        let mut texts = Texts::default();
        assert_eq!(scan_chat_answer(body, &mut texts), Ok(()));
        let got = non_empty(&texts);
        assert_eq!(got, vec![(0, "Hello \"x\"".to_owned())]);
        // Content parts are serde's.
        let parts = br#"{"choices":[{"message":{"content":[{"type":"text","text":"a"}]}}]}"#;
        assert_eq!(scan_chat_answer(parts, &mut texts), Err(Unsure));
        // Cut anywhere (right after a key too): unsure, never a panic.
        for cut in 0..body.len() {
            assert_eq!(
                scan_chat_answer(&body[..cut], &mut texts),
                Err(Unsure),
                "{cut}"
            );
        }
        // A second `index`, `message` or `content` in a choice, or a second `choices`, is
        // serde's to refuse.
        for dup in [
            &br#"{"choices":[{"index":0,"index":1,"message":{"content":"a"}}]}"#[..],
            br#"{"choices":[{"message":null,"message":{"content":"a"}}]}"#,
            br#"{"choices":[{"message":{"content":"a","content":"b"}}]}"#,
            br#"{"choices":[],"choices":[{"message":{"content":"a"}}]}"#,
        ] {
            assert_eq!(scan_chat_answer(dup, &mut texts), Err(Unsure));
        }
    }

    /// Events around one text token, as a stream sends them (so the template is used), with
    /// whatever in the token's place: another string, other JSON, broken JSON, a second key.
    fn stream_of(api: Api) -> BoxedStrategy<Vec<String>> {
        let (before, after) = match api {
            Api::ChatCompletions => (
                r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"index":1,"delta":{"content":"#,
                r#"},"logprobs":null,"finish_reason":null}]}"#,
            ),
            Api::Messages => (
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"#,
                "}}",
            ),
            Api::Responses => (
                r#"{"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"delta":"#,
                r#","logprobs":[]}"#,
            ),
        };
        let middle = prop_oneof![
            6 => text_value(),
            1 => any_json(),
            1 => Just(r#""a","content":"b""#.to_owned()),
            1 => Just(r#""a"},"delta":{"content":"b""#.to_owned()),
            1 => Just(r#""a\""#.to_owned()),
            1 => Just(r#""\ud800""#.to_owned()),
            1 => Just(r#" "spaced" "#.to_owned()),
            1 => Just(String::new()),
        ];
        let event = prop_oneof![
            6 => middle.prop_map(move |m| format!("{before}{m}{after}")),
            1 => event(api),
        ];
        prop::collection::vec(event, 1..12).boxed()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// One `Texts` across a stream's events (the template at work): where the scan is
        /// sure, it finds what serde finds, event after event.
        #[test]
        fn agrees_with_serde_across_a_stream(
            (api, events) in api().prop_flat_map(|a| (Just(a), stream_of(a))),
        ) {
            let mut texts = Texts::default();
            for payload in &events {
                let expected = serde_pieces(api, payload.as_bytes());
                if scan(api, payload.as_bytes(), &mut texts).is_ok() {
                    let got = non_empty(&texts);
                    prop_assert_eq!(got, expected, "{}", payload);
                }
            }
        }
    }

    #[test]
    fn an_event_whose_text_keys_are_all_empty_is_no_text_without_a_walk() {
        // Read without a walk: what serde finds is at most empty, valid JSON or not (the
        // walk would refuse the last two, and serde too).
        for p in [
            r#"{"choices":[{"delta":{"content":"","refusal":null,"role":"assistant"},"index":0}]}"#,
            r#"{"choices":[{"delta":{"content" : null}}]}"#,
            r#"{"choices":[{"delta":{"content":""}}]} trailing"#,
            r#"{"choices":[{"delta":{"content":""},"content":null}],,}"#,
        ] {
            no_text_either_way(p);
        }
        // Any text key with something else in it is walked.
        for (p, want) in [
            (
                r#"{"choices":[{"delta":{"content":"x"}}]}"#,
                Ok(vec![(0, "x".to_owned())]),
            ),
            (
                r#"{"choices":[{"delta":{"role":"content","content" :"y"}}]}"#,
                Ok(vec![(0, "y".to_owned())]),
            ),
            (
                r#"{"choices":[{"index":1,"delta":{"content":""}},{"index":2,"delta":{"content":"z"}}]}"#,
                Ok(vec![(2, "z".to_owned())]),
            ),
            (
                r#"{"choices":[{"delta":{"content":"x"}}]} trailing"#,
                Err(Unsure),
            ),
            (r#"{"choices":[{"delta":{"content":[]}}]}"#, Err(Unsure)),
        ] {
            assert_eq!(pieces(Api::ChatCompletions, p), want, "{p}");
        }
        assert!(only_empty_content(br#"{"type":"content"}"#));
        assert!(!only_empty_content(br#"{"content":"\"\""}"#));
        assert!(!only_empty_content(br#"{"content":nul"#));
    }

    #[test]
    fn the_template_reads_the_next_events_of_a_stream() {
        let mut texts = Texts::default();
        let event = |t: &str| {
            format!(
                r#"{{"id":"c","choices":[{{"index":0,"delta":{{"content":{t}}},"finish_reason":null}}]}}"#
            )
        };
        for (payload, want) in [
            (event(r#""one""#), Some("one")),
            (event(r#""two \"2\"""#), Some("two \"2\"")),
            (event(r#""x","content":"y""#), None), // a duplicate key: not the template's shape
            (event("7"), None),
            (event(r#""three""#), Some("three")),
        ] {
            let got = scan(Api::ChatCompletions, payload.as_bytes(), &mut texts).map(|()| {
                let mut v = Vec::new();
                texts.each(&mut |_, t| v.push(t.to_owned()));
                v
            });
            match want {
                Some(w) => assert_eq!(got, Ok(vec![w.to_owned()]), "{payload}"),
                None => assert_eq!(got, Err(Unsure), "{payload}"),
            }
        }
        assert_eq!(texts.template.api, Some(Api::ChatCompletions));
    }

    #[test]
    fn is_sure_on_what_upstreams_send() {
        for (api, p) in [
            (
                Api::ChatCompletions,
                r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1741570283,"model":"gpt-4o","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}"#,
            ),
            (
                Api::ChatCompletions,
                r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{"content":" the \"x\"\n"},"logprobs":{"content":[{"token":" the","logprob":-0.5,"bytes":[32,116],"top_logprobs":[]}]},"finish_reason":null}]}"#,
            ),
            (
                Api::ChatCompletions,
                r#"{"id":"1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":1}"}}]}}]}"#,
            ),
            (
                Api::ChatCompletions,
                r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21,"prompt_tokens_details":{"cached_tokens":0}}}"#,
            ),
            (
                Api::Responses,
                r#"{"type":"response.output_text.delta","sequence_number":5,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hi","logprobs":[]}"#,
            ),
            (
                Api::Responses,
                r#"{"type":"response.created","response":{"id":"resp_1","object":"response","created_at":1741290958,"status":"in_progress","output":[],"usage":null,"metadata":{}}}"#,
            ),
            (
                Api::Messages,
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}"#,
            ),
            (
                Api::Messages,
                r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}"#,
            ),
        ] {
            let mut texts = Texts::default();
            assert_eq!(scan(api, p.as_bytes(), &mut texts), Ok(()), "{p}");
            let got = non_empty(&texts);
            assert_eq!(got, serde_pieces(api, p.as_bytes()), "{p}");
        }
    }
}
