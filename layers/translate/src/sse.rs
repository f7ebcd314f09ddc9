//! A server-sent events reader with bounded memory: bytes in, `(event, data)` out, however
//! the bytes were cut into chunks.

/// The largest event (its unfinished line plus its data) kept; a larger one ends the stream
/// with an error rather than growing without bound.
pub const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

/// The event is larger than [`MAX_EVENT_BYTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Overflow;

#[derive(Debug, Default)]
pub(crate) struct SseParser {
    /// The unfinished last line.
    line: Vec<u8>,
    /// The current event's name.
    event: String,
    /// The current event's data lines, joined by `\n`.
    data: Vec<u8>,
    has_data: bool,
}

impl SseParser {
    /// Read `input`, calling `f(event, data)` for every event it completes.
    pub(crate) fn feed(
        &mut self,
        mut input: &[u8],
        f: &mut impl FnMut(&str, &[u8]),
    ) -> Result<(), Overflow> {
        while let Some(nl) = input.iter().position(|&b| b == b'\n') {
            let (head, tail) = input.split_at(nl);
            input = &tail[1..];
            if self.line.is_empty() {
                self.on_line(head, f)?;
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(head);
                let r = self.on_line(&line, f);
                line.clear();
                self.line = line; // keep the capacity
                r?;
            }
        }
        if !input.is_empty() {
            if self.line.len() + self.data.len() + input.len() > MAX_EVENT_BYTES {
                return Err(Overflow);
            }
            self.line.extend_from_slice(input);
        }
        Ok(())
    }

    /// The stream ended: dispatch an event left without its blank line.
    pub(crate) fn finish(&mut self, f: &mut impl FnMut(&str, &[u8])) -> Result<(), Overflow> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.on_line(&line, f)?;
        }
        self.on_line(b"", f)
    }

    fn on_line(&mut self, line: &[u8], f: &mut impl FnMut(&str, &[u8])) -> Result<(), Overflow> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if self.has_data {
                f(&self.event, &self.data);
            }
            self.event.clear();
            self.data.clear();
            self.has_data = false;
            return Ok(());
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(0) => return Ok(()), // comment / keep-alive
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.data.len() + value.len() > MAX_EVENT_BYTES {
                    return Err(Overflow);
                }
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => {
                self.event.clear();
                self.event.push_str(&String::from_utf8_lossy(value));
            }
            _ => {} // id, retry
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&[u8]]) -> Vec<(String, String)> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        let mut f =
            |e: &str, d: &[u8]| out.push((e.to_owned(), String::from_utf8_lossy(d).into_owned()));
        for c in chunks {
            p.feed(c, &mut f).unwrap();
        }
        p.finish(&mut f).unwrap();
        out
    }

    #[test]
    fn events_across_chunks() {
        let text: &[u8] =
            b"event: a\r\ndata: {\"x\":1}\r\n\r\n: ping\n\ndata: one\ndata: two\n\ndata: [DONE]";
        let want = vec![
            ("a".to_owned(), "{\"x\":1}".to_owned()),
            (String::new(), "one\ntwo".to_owned()),
            (String::new(), "[DONE]".to_owned()),
        ];
        assert_eq!(events(&[text]), want);
        for cut in 0..text.len() {
            assert_eq!(events(&[&text[..cut], &text[cut..]]), want, "cut at {cut}");
        }
    }

    #[test]
    fn overflow_is_reported() {
        let mut p = SseParser::default();
        let big = vec![b'x'; MAX_EVENT_BYTES + 1];
        assert_eq!(p.feed(&big, &mut |_, _| {}), Err(Overflow));
    }
}
