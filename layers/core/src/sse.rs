//! Server-sent events cut at event boundaries, so a stream can be ended cleanly between two
//! events.
//!
//! [`Framer`] holds back the bytes of the event being received (up to a cap) and forwards each
//! event once its blank line arrives, so when a line of the current event decides that the
//! stream must end, nothing of that event has reached the client yet and an error event can
//! follow the last complete one. Frames that hold whole events (what upstreams send) are
//! forwarded without a copy; only the unfinished tail of a frame is copied.
//!
//! Lines end with `\n` (a trailing `\r` is stripped); an event ends with an empty line. An
//! event longer than the cap is forwarded as it comes, unread, until its end (the stream stays
//! correct; that event is just not looked at).

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::api::Api;

/// The one event that ends a stream with an error in `api`'s shape (interface.md "Streams"):
/// chat `data: {"error":{"message","type","code"}}` (the stream then closes, no `[DONE]`);
/// Messages `event: error` with `{"type":"error","error":{"type","message"}}`; Responses
/// `event: error` with `{"type":"error","code","message","param":null}`. `kind` is the error
/// type the client's SDK reads (`api_error`, `invalid_request_error`, ...).
///
/// On Responses the error event comes after a `response.failed` event carrying the same code
/// and message (`response.status` `failed`, `response.error`), as OpenAI ends a response that
/// fails: clients that act on the response's status read the reason there (Codex reports
/// "stream closed before response.completed" for a stream that ends with the error event
/// alone), and the error event is still the last.
pub fn error_event(api: Api, code: &str, kind: &str, message: &str) -> Bytes {
    let text = match api {
        Api::ChatCompletions => format!(
            "data: {}\n\n",
            serde_json::json!({ "error": { "message": message, "type": kind, "code": code } })
        ),
        Api::Messages => format!(
            "event: error\ndata: {}\n\n",
            serde_json::json!({ "type": "error", "error": { "type": kind, "message": message } })
        ),
        Api::Responses => format!(
            "event: response.failed\ndata: {}\n\nevent: error\ndata: {}\n\n",
            serde_json::json!({ "type": "response.failed", "response": {
                "object": "response", "status": "failed", "output": [],
                "error": { "code": code, "message": message } } }),
            serde_json::json!({ "type": "error", "code": code, "message": message, "param": null })
        ),
    };
    Bytes::from(text)
}

/// What the line callback wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Go on.
    Continue,
    /// End the stream before the event this line belongs to.
    Stop,
}

/// Cuts a byte stream into whole SSE events (see the module docs).
#[derive(Debug)]
pub struct Framer {
    /// Bytes of the unfinished event (always starts at an event boundary).
    held: BytesMut,
    /// Start of the unfinished line in `held`.
    line_start: usize,
    /// The current event outgrew `cap`: pass it through unread until its blank line.
    skipping: bool,
    /// While skipping: the current line has nothing but an optional `\r` so far.
    skip_line_blank: bool,
    cap: usize,
}

impl Framer {
    /// A framer holding at most `cap` bytes of one event (a larger event passes unread).
    pub fn new(cap: usize) -> Self {
        Self {
            held: BytesMut::new(),
            line_start: 0,
            skipping: false,
            skip_line_blank: true,
            cap,
        }
    }

    /// Bytes held back (the unfinished event).
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Feed the next piece of the stream; every complete non-empty line goes to `on_line`
    /// (without its line ending) and the bytes that may be sent are pushed on `out`. `Stop`
    /// from `on_line`: the bytes of that line's event and everything after are dropped and
    /// `feed` returns `Stop`.
    pub fn feed(
        &mut self,
        mut data: Bytes,
        out: &mut VecDeque<Bytes>,
        on_line: &mut impl FnMut(&[u8]) -> Flow,
    ) -> Flow {
        if self.skipping {
            match self.skip(&data) {
                Some(end) => {
                    out.push_back(data.split_to(end));
                    self.skipping = false;
                }
                None => {
                    out.push_back(data);
                    return Flow::Continue;
                }
            }
        }
        if data.is_empty() {
            return Flow::Continue;
        }
        if self.held.is_empty() {
            // Fast path: scan the frame in place; forward its complete events without a copy.
            let mut line_start = 0;
            let mut event_end = 0;
            let mut pos = 0;
            while let Some(nl) = find_newline(&data[pos..]) {
                let end = pos + nl;
                let line = strip_cr(&data[line_start..end]);
                pos = end + 1;
                if line.is_empty() {
                    event_end = pos;
                } else if on_line(line) == Flow::Stop {
                    if event_end > 0 {
                        out.push_back(data.slice(..event_end));
                    }
                    return Flow::Stop;
                }
                line_start = pos;
            }
            if event_end > 0 {
                out.push_back(data.split_to(event_end));
            }
            self.held.extend_from_slice(&data);
            self.line_start = line_start - event_end;
        } else {
            let scan_from = self.held.len();
            self.held.extend_from_slice(&data);
            let mut event_end = 0;
            let mut pos = scan_from;
            while let Some(nl) = find_newline(&self.held[pos..]) {
                let end = pos + nl;
                let line = strip_cr(&self.held[self.line_start..end]);
                pos = end + 1;
                if line.is_empty() {
                    event_end = pos;
                } else if on_line(line) == Flow::Stop {
                    if event_end > 0 {
                        out.push_back(self.held.split_to(event_end).freeze());
                    }
                    self.held.clear();
                    self.line_start = 0;
                    return Flow::Stop;
                }
                self.line_start = pos;
            }
            if event_end > 0 {
                out.push_back(self.held.split_to(event_end).freeze());
                self.line_start -= event_end;
            }
        }
        if self.held.len() > self.cap {
            // Too long to hold: send it on and stop reading this event.
            self.skip_line_blank = strip_cr(&self.held[self.line_start..]).is_empty()
                && self.held.len() - self.line_start <= 1;
            out.push_back(self.held.split().freeze());
            self.line_start = 0;
            self.skipping = true;
        }
        Flow::Continue
    }

    /// The stream ended: its last, unterminated event (if any) is read and sent.
    pub fn finish(
        &mut self,
        out: &mut VecDeque<Bytes>,
        on_line: &mut impl FnMut(&[u8]) -> Flow,
    ) -> Flow {
        if self.held.is_empty() {
            return Flow::Continue;
        }
        let line = strip_cr(&self.held[self.line_start..]);
        if !line.is_empty() && on_line(line) == Flow::Stop {
            self.held.clear();
            return Flow::Stop;
        }
        out.push_back(self.held.split().freeze());
        self.line_start = 0;
        Flow::Continue
    }

    /// While skipping: the offset just past the blank line that ends the event, if in `data`.
    fn skip(&mut self, data: &[u8]) -> Option<usize> {
        for (i, &b) in data.iter().enumerate() {
            match b {
                b'\n' if self.skip_line_blank => return Some(i + 1),
                b'\n' => self.skip_line_blank = true,
                b'\r' => {}
                _ => self.skip_line_blank = false,
            }
        }
        None
    }
}

/// The first `\n` in `b`, eight bytes at a time: events are a few hundred bytes of JSON with
/// one line ending, and a byte-at-a-time search was most of the framer's cost.
fn find_newline(b: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut words = b.chunks_exact(8);
    let mut at = 0;
    for word in words.by_ref() {
        let w = u64::from_le_bytes(word.try_into().expect("8 bytes")) ^ (ONES * u64::from(b'\n'));
        // The lowest flagged byte is a real zero (a false flag only follows a real one).
        let zeros = w.wrapping_sub(ONES) & !w & HIGHS;
        if zeros != 0 {
            return Some(at + (zeros.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&c| c == b'\n')
        .map(|i| at + i)
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Whether `data` ends with an empty line, so that a stream cut after it is cut between
/// events as [`Framer`] reads lines (split at `\n`, a `\r` before it dropped).
///
/// ```
/// use portcullis_core::sse::ends_event;
/// assert!(ends_event(b"data: 1\n\n") && ends_event(b"data: 1\r\n\r\n"));
/// assert!(!ends_event(b"data: 1\n") && !ends_event(b"data: 1\r\n\r") && !ends_event(b""));
/// ```
pub fn ends_event(data: &[u8]) -> bool {
    data.ends_with(b"\n\n") || data.ends_with(b"\n\r\n")
}

/// The JSON payload of a `data:` line, if it is one.
pub fn data_payload(line: &[u8]) -> Option<&[u8]> {
    let payload = line.strip_prefix(b"data:")?;
    Some(payload.strip_prefix(b" ").unwrap_or(payload))
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_events_have_each_apis_shape() {
        let data = |event: &Bytes| -> serde_json::Value {
            let text = std::str::from_utf8(event).unwrap();
            assert!(text.ends_with("\n\n"), "{text:?}");
            let line = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
            serde_json::from_str(line).unwrap()
        };
        let chat = error_event(Api::ChatCompletions, "c", "k", "m");
        assert!(chat.starts_with(b"data: "));
        assert_eq!(
            data(&chat),
            serde_json::json!({"error": {"message": "m", "type": "k", "code": "c"}})
        );
        let msgs = error_event(Api::Messages, "c", "k", "m");
        assert!(msgs.starts_with(b"event: error\n"));
        assert_eq!(
            data(&msgs),
            serde_json::json!({"type": "error", "error": {"type": "k", "message": "m"}})
        );
        let resp = error_event(Api::Responses, "c", "k", "m");
        let text = std::str::from_utf8(&resp).unwrap();
        let (failed, error) = text.split_once("\n\n").unwrap();
        assert!(failed.starts_with("event: response.failed\n"), "{text}");
        assert_eq!(
            data(&Bytes::from(format!("{failed}\n\n"))),
            serde_json::json!({"type": "response.failed", "response": {"object": "response",
                "status": "failed", "output": [], "error": {"code": "c", "message": "m"}}})
        );
        assert!(error.starts_with("event: error\n"), "{text}");
        assert_eq!(
            data(&Bytes::from(error.to_owned())),
            serde_json::json!({"type": "error", "code": "c", "message": "m", "param": null})
        );
    }

    use super::*;

    fn run(pieces: &[&[u8]], stop_on: &[u8], cap: usize) -> (Vec<u8>, Vec<Vec<u8>>, Flow) {
        let mut f = Framer::new(cap);
        let mut out = VecDeque::new();
        let mut lines = Vec::new();
        let mut on_line = |l: &[u8]| {
            lines.push(l.to_vec());
            if l == stop_on {
                Flow::Stop
            } else {
                Flow::Continue
            }
        };
        let mut flow = Flow::Continue;
        for p in pieces {
            flow = f.feed(Bytes::copy_from_slice(p), &mut out, &mut on_line);
            if flow == Flow::Stop {
                break;
            }
        }
        if flow == Flow::Continue {
            flow = f.finish(&mut out, &mut on_line);
        }
        (out.iter().flat_map(|b| b.to_vec()).collect(), lines, flow)
    }

    #[test]
    fn find_newline_is_position() {
        for len in 0..40 {
            for at in 0..=len {
                let mut b: Vec<u8> = (0..len)
                    .map(|i| [b'a', 0x0b, 0x09, 0x8a, 0xff][i % 5])
                    .collect();
                if at < len {
                    b[at] = b'\n';
                    if at + 1 < len {
                        b[at + 1] = b'\n';
                    }
                }
                assert_eq!(
                    find_newline(&b),
                    b.iter().position(|&c| c == b'\n'),
                    "{len} {at}"
                );
            }
        }
    }

    const STREAM: &[u8] = b"event: a\r\ndata: 1\r\n\r\ndata: 2\n\ndata: 3\n\n";

    #[test]
    fn every_split_forwards_the_same_bytes_and_lines() {
        let whole = run(&[STREAM], b"-", 1 << 20);
        assert_eq!(whole.0, STREAM);
        assert_eq!(whole.1.len(), 4);
        for i in 0..STREAM.len() {
            for j in i..STREAM.len() {
                let got = run(&[&STREAM[..i], &STREAM[i..j], &STREAM[j..]], b"-", 1 << 20);
                assert_eq!(got, whole, "{i} {j}");
                let stopped = run(
                    &[&STREAM[..i], &STREAM[i..j], &STREAM[j..]],
                    b"data: 2",
                    1 << 20,
                );
                assert_eq!(stopped.0, b"event: a\r\ndata: 1\r\n\r\n", "{i} {j}");
                assert_eq!(stopped.2, Flow::Stop);
            }
        }
    }

    #[test]
    fn an_unterminated_last_event_is_read_and_sent() {
        let (out, lines, _) = run(&[b"data: 1\n\ndata: 2"], b"-", 64);
        assert_eq!(out, b"data: 1\n\ndata: 2");
        assert_eq!(lines, [b"data: 1".to_vec(), b"data: 2".to_vec()]);
        let (out, _, flow) = run(&[b"data: 1\n\ndata: 2"], b"data: 2", 64);
        assert_eq!((out.as_slice(), flow), (&b"data: 1\n\n"[..], Flow::Stop));
    }

    #[test]
    fn an_event_over_the_cap_passes_unread_and_reading_resumes_after_it() {
        let big = format!("data: {}\r\n", "x".repeat(100));
        let stream = format!("data: 1\n\n{big}{big}\r\ndata: 3\n\n");
        for split in 1..stream.len() {
            let (a, b) = stream.as_bytes().split_at(split);
            let (out, lines, _) = run(&[a, b], b"-", 50);
            assert_eq!(out, stream.as_bytes(), "{split}");
            assert!(lines.contains(&b"data: 3".to_vec()), "{split}");
            assert!(lines.len() <= 4);
        }
        let mut f = Framer::new(50);
        let mut out = VecDeque::new();
        f.feed(Bytes::from(big.repeat(10)), &mut out, &mut |_| {
            Flow::Continue
        });
        assert_eq!(f.held(), 0, "nothing over the cap is held");
    }

    proptest::proptest! {
        /// Stand-in for the `sse_usage` fuzz target (fuzz/), run by `cargo test`: whatever
        /// bytes an upstream sends, in whatever pieces, the framer holds at most its cap, sends
        /// a prefix of the stream (all of it at the end), and reads every line when the stream
        /// fits under the cap.
        #[test]
        fn arbitrary_bytes_in_arbitrary_pieces(
            body in proptest::collection::vec(
                proptest::sample::select(b"data: {}\r\nx:\n\n\n".to_vec()),
                0..400,
            ),
            cuts in proptest::collection::vec(0..400usize, 0..12),
            small_cap in proptest::prelude::any::<bool>(),
        ) {
            let cap = if small_cap { 16 } else { 1 << 20 };
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
            points.sort_unstable();
            points.dedup();
            let mut f = Framer::new(cap);
            let mut out = VecDeque::new();
            let mut sent = Vec::new();
            let mut lines = Vec::new();
            let (mut at, mut fed) = (0, 0);
            for p in points.into_iter().chain([body.len()]) {
                fed += p - at;
                f.feed(Bytes::copy_from_slice(&body[at..p]), &mut out, &mut |l| {
                    lines.push(l.to_vec());
                    Flow::Continue
                });
                at = p;
                sent.extend(out.drain(..).flat_map(|b| b.to_vec()));
                proptest::prop_assert!(body.starts_with(&sent));
                proptest::prop_assert!(fed - sent.len() <= cap);
            }
            f.finish(&mut out, &mut |l| {
                lines.push(l.to_vec());
                Flow::Continue
            });
            sent.extend(out.drain(..).flat_map(|b| b.to_vec()));
            proptest::prop_assert_eq!(&sent, &body);
            if body.len() <= cap {
                let want: Vec<Vec<u8>> = body
                    .split(|&b| b == b'\n')
                    .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
                    .filter(|l| !l.is_empty())
                    .collect();
                proptest::prop_assert_eq!(lines, want);
            }
        }
    }
}
