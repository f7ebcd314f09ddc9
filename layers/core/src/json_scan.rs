//! A cursor over JSON bytes that validates what it walks: no allocation, no tree.
//!
//! The scans built on it (the loop-detection layer's event and answer scans, the usage read of
//! a whole JSON answer) accept a subset of what serde accepts and, where they accept, find
//! exactly what serde finds; anything they are not sure about (a duplicate or escaped key they
//! read, a value of an unexpected type, deep nesting, invalid UTF-8) is [`Unsure`], and the
//! caller lets serde decide. A skipped value is checked as serde checks it (JSON's grammar,
//! string escapes, no control character, UTF-8), so malformed JSON is never read as valid.

use std::ops::Range;

/// The scan is not sure: let serde decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsure;

/// A scan's result.
pub type Result<T> = std::result::Result<T, Unsure>;

/// Deeper nesting is left to serde (which refuses past 128).
pub const MAX_DEPTH: usize = 100;

impl<'a> Cursor<'a> {
    /// A cursor at the start of `b`.
    pub fn new(b: &'a [u8]) -> Self {
        Self { b, i: 0 }
    }
}

/// A decoded string: where its text is in the buffer, where its token was in the payload.
#[derive(Debug, Clone)]
pub struct Text {
    /// The decoded text, in the buffer given to [`Cursor::text`].
    pub text: Range<usize>,
    /// The JSON string token, quotes included, in the scanned bytes.
    pub token: Range<usize>,
}

/// A position in JSON bytes, read forwards.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    /// The bytes.
    pub b: &'a [u8],
    /// The position of the next byte to read.
    pub i: usize,
}

impl<'a> Cursor<'a> {
    /// The next byte, if any.
    pub fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// Skip whitespace.
    pub fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.i += 1;
        }
    }

    /// `c` next, after whitespace (consumed), or [`Unsure`].
    pub fn eat(&mut self, c: u8) -> Result<()> {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(Unsure)
        }
    }

    /// `null` next (consumed), after whitespace.
    pub fn null(&mut self) -> bool {
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
    pub fn object(
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
    pub fn array(
        &mut self,
        depth: usize,
        mut f: impl FnMut(&mut Self) -> Result<()>,
    ) -> Result<()> {
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
    pub fn skip_value(&mut self, depth: usize) -> Result<()> {
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

    /// `lit` next (consumed), or [`Unsure`].
    pub fn literal(&mut self, lit: &[u8]) -> Result<()> {
        if self.b[self.i..].starts_with(lit) {
            self.i += lit.len();
            Ok(())
        } else {
            Err(Unsure)
        }
    }

    /// A number (JSON's grammar); whether it is a plain integer.
    pub fn number(&mut self) -> Result<bool> {
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
    pub fn index(&mut self) -> Result<u32> {
        let from = self.i;
        if self.peek() == Some(b'-') || !self.number()? {
            return Err(Unsure);
        }
        std::str::from_utf8(&self.b[from..self.i])
            .ok()
            .and_then(|d| d.parse().ok())
            .ok_or(Unsure)
    }

    /// A string with no escape, as its raw bytes (valid UTF-8, as serde checks keys).
    pub fn raw_string(&mut self) -> Result<&'a [u8]> {
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
        if !raw.is_ascii() {
            utf8(raw)?;
        }
        Ok(raw)
    }

    /// A string, unread (what serde checks of it: its escapes, no control character, and
    /// UTF-8: a string cut inside a character is not JSON).
    pub fn skip_string(&mut self) -> Result<()> {
        self.i += 1;
        let start = self.i;
        loop {
            self.i = string_stop(self.b, self.i);
            match self.peek() {
                Some(b'"') => {
                    utf8(&self.b[start..self.i])?;
                    self.i += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 1,
                        Some(b'u') => {
                            self.i += 1;
                            self.hex4()?;
                        }
                        _ => return Err(Unsure),
                    }
                }
                _ => return Err(Unsure),
            }
        }
    }

    /// Four hex digits (consumed) as a code unit, or [`Unsure`].
    pub fn hex4(&mut self) -> Result<u16> {
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
    pub fn text(&mut self, buf: &mut String) -> Result<Text> {
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
            buf.push_str(utf8(&self.b[from..self.i])?);
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
                    let c = match self.peek().ok_or(Unsure)? {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
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
                        _ => return Err(Unsure),
                    };
                    self.i += 1;
                    buf.push(c);
                }
                _ => return Err(Unsure),
            }
        }
    }
}

/// `b` as UTF-8, or [`Unsure`].
pub fn utf8(b: &[u8]) -> Result<&str> {
    std::str::from_utf8(b).map_err(|_| Unsure)
}

/// The first byte at or after `i` that is `"`, `\` or a control character (or `b.len()`),
/// eight bytes at a time.
pub fn string_stop(b: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // The lowest flagged byte is always a real one (a false flag only follows a real one).
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    while let Some(word) = b.get(i..).and_then(<[u8]>::first_chunk::<8>) {
        let w = u64::from_le_bytes(*word);
        let stops = zero_byte(w ^ (ONES * u64::from(b'"')))
            | zero_byte(w ^ (ONES * u64::from(b'\\')))
            | (w.wrapping_sub(ONES * 0x20) & !w & HIGHS);
        if stops != 0 {
            return i + (stops.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            break;
        }
        i += 1;
    }
    i
}
