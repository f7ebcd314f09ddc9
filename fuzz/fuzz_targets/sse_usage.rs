//! The SSE framer (`portcullis_core::sse::Framer`) and the usage scanner
//! (`portcullis_core::usage::Sniffer`) on bytes an upstream chose, cut into arbitrary pieces.
//!
//! Invariants checked, beyond "no panic":
//! - the framer never holds more than its cap (what was fed and not yet sent is at most `cap`);
//! - what it sends is always a prefix of what it was fed, and all of it once the stream ends;
//! - every line it reports is non-empty and has no `\n`; when the whole stream fits under the
//!   cap, the lines are exactly the stream's lines, however it was cut;
//! - a `Stop` sends nothing of the stopping line's event: what was sent ends at an event
//!   boundary before that line;
//! - the usage scanner finds the same, fed whole or in the same pieces (SSE and JSON).
#![no_main]

use std::collections::VecDeque;

use bytes::Bytes;
use libfuzzer_sys::{
    arbitrary::{self, Arbitrary},
    fuzz_target,
};
use portcullis_core::{
    sse::{Flow, Framer},
    usage::Sniffer,
};

#[derive(Debug, Arbitrary)]
struct Input {
    /// A small cap (events over it pass unread) or one that holds every input.
    small_cap: bool,
    /// Stop on the first line whose bytes sum to 0 modulo this (0: never stop).
    stop_modulus: u8,
    /// Where to cut the stream (offsets, taken modulo its length).
    cuts: Vec<u16>,
    body: Vec<u8>,
}

/// The stream's lines as the framer must report them: split on `\n` (the last, unterminated
/// piece too), one trailing `\r` stripped, empty lines dropped; with each line's offset.
fn reference_lines(body: &[u8]) -> Vec<(usize, &[u8])> {
    let mut out = Vec::new();
    let mut start = 0;
    for piece in body.split(|&b| b == b'\n') {
        let line = piece.strip_suffix(b"\r").unwrap_or(piece);
        if !line.is_empty() {
            out.push((start, line));
        }
        start += piece.len() + 1;
    }
    out
}

fn pieces<'a>(body: &'a [u8], cuts: &[u16]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|&c| usize::from(c) % (body.len() + 1))
        .collect();
    points.sort_unstable();
    points.dedup();
    let mut out = Vec::new();
    let mut at = 0;
    for p in points {
        out.push(&body[at..p]);
        at = p;
    }
    out.push(&body[at..]);
    out
}

fn framer(input: &Input, pieces: &[&[u8]]) {
    let body = &input.body;
    let cap = if input.small_cap { 64 } else { 1 << 20 };
    let mut f = Framer::new(cap);
    let mut queue = VecDeque::new();
    let mut sent: Vec<u8> = Vec::new();
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let stop_on = |line: &[u8]| {
        input.stop_modulus != 0
            && line.iter().map(|&b| u32::from(b)).sum::<u32>() % u32::from(input.stop_modulus) == 0
    };
    let mut on_line = |line: &[u8]| {
        assert!(!line.is_empty() && !line.contains(&b'\n'), "{line:?}");
        lines.push(line.to_vec());
        if stop_on(line) {
            Flow::Stop
        } else {
            Flow::Continue
        }
    };
    let mut fed = 0;
    let mut flow = Flow::Continue;
    for p in pieces {
        fed += p.len();
        flow = f.feed(Bytes::copy_from_slice(p), &mut queue, &mut on_line);
        sent.extend(queue.drain(..).flat_map(|b| b.to_vec()));
        assert!(
            body.starts_with(&sent),
            "sent bytes are a prefix of the stream"
        );
        if flow == Flow::Stop {
            break;
        }
        assert!(
            fed - sent.len() <= cap,
            "held {} > cap {cap}",
            fed - sent.len()
        );
    }
    if flow == Flow::Continue {
        flow = f.finish(&mut queue, &mut on_line);
        sent.extend(queue.drain(..).flat_map(|b| b.to_vec()));
        assert!(body.starts_with(&sent));
    }
    if flow == Flow::Continue {
        assert_eq!(sent, *body, "an unstopped stream is sent whole");
    }
    if body.len() <= cap {
        // Nothing was over the cap: every line was read, in order, whatever the cuts.
        let want = reference_lines(body);
        assert!(lines.len() <= want.len());
        for (got, (_, line)) in lines.iter().zip(&want) {
            assert_eq!(got.as_slice(), *line);
        }
        if flow == Flow::Stop {
            let (offset, _) = want[lines.len() - 1];
            assert!(
                sent.len() <= offset,
                "the stopping line's event was not sent"
            );
            // What was sent ends with a blank line (an event boundary), or is nothing.
            if !sent.is_empty() {
                let without_nl = sent.strip_suffix(b"\n").expect("ends at a line end");
                let last = without_nl
                    .rsplit(|&b| b == b'\n')
                    .next()
                    .unwrap_or_default();
                assert!(
                    last.is_empty() || last == b"\r",
                    "ends at an event boundary"
                );
            }
        } else {
            assert_eq!(lines.len(), want.len());
        }
    }
}

fn sniffer(content_type: &str) -> Sniffer {
    let mut h = http::HeaderMap::new();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_str(content_type).unwrap(),
    );
    Sniffer::for_response(http::StatusCode::OK, &h).expect("a readable content type")
}

fn usage(input: &Input, pieces: &[&[u8]]) {
    for ct in ["text/event-stream", "application/json"] {
        let mut whole = sniffer(ct);
        whole.feed(&input.body);
        let mut cut = sniffer(ct);
        for p in pieces {
            cut.feed(p);
        }
        // Fuzz inputs are far below the scanner's caps (1 MiB lines, 2 MiB JSON), where the
        // cut may not matter.
        assert_eq!(whole.finish(), cut.finish(), "{ct}");
    }
}

fuzz_target!(|input: Input| {
    let pieces = pieces(&input.body, &input.cuts);
    framer(&input, &pieces);
    usage(&input, &pieces);
});
