//! The state kept while one answer is watched: a detector per choice.

use std::sync::Arc;

use crate::{api, scan::Texts, Api, Config, Detection, LoopDetector};

/// Chat completions may stream several choices (`n > 1`) at once, each its own text. Choices
/// past this many are not watched (bounded memory per answer).
const MAX_CHOICES: usize = 8;

/// A choice's text is kept, instead of a detector built, while shorter than the shortest loop,
/// but never past this many bytes (a detector's own window is ~5 KB at the defaults; a config
/// whose shortest loop is megabytes long gets its detector at 4 KB).
const MAX_PENDING: usize = 4096;

#[derive(Debug)]
enum Slot {
    /// The text so far, shorter than the shortest loop.
    Pending(String),
    Live(LoopDetector),
}

#[derive(Debug)]
pub(crate) struct Watch {
    pub(crate) api: Api,
    config: Arc<Config>,
    /// Per choice: its text until it is long enough to hold a loop, then its detector. So
    /// answers without text, and short ones (most JSON answers), build no detector.
    detectors: Vec<(u32, Slot)>,
    pub(crate) found: Option<Detection>,
    /// The texts of the current event (its buffers reused from event to event).
    texts: Texts,
}

impl Watch {
    pub(crate) fn new(api: Api, config: Arc<Config>) -> Self {
        Self {
            api,
            config,
            detectors: Vec::new(),
            found: None,
            texts: Texts::default(),
        }
    }

    pub(crate) fn text(&mut self, choice: u32, text: &str) {
        if self.found.is_some() || text.is_empty() {
            return;
        }
        let i = match self.detectors.iter().position(|(c, _)| *c == choice) {
            Some(i) => i,
            None if self.detectors.len() < MAX_CHOICES => {
                self.detectors.push((choice, Slot::Pending(String::new())));
                self.detectors.len() - 1
            }
            None => return,
        };
        let slot = &mut self.detectors[i].1;
        if let Slot::Pending(pending) = slot {
            // A loop is `min_repetitions` copies of at least `min_pattern_length` characters
            // (each at least a byte): a shorter text holds none, and the detector decides
            // the same whether its text comes at once or in pieces.
            if pending.len() + text.len() < self.config.shortest_loop().min(MAX_PENDING) {
                pending.push_str(text);
                return;
            }
            let mut detector = LoopDetector::new(&self.config);
            let found = detector.push_str(pending);
            *slot = Slot::Live(detector);
            if found.is_some() {
                self.found = found;
                return;
            }
        }
        if let Slot::Live(detector) = slot {
            self.found = detector.push_str(text);
        }
    }

    /// One SSE `data:` line's payload.
    pub(crate) fn sse_payload(&mut self, payload: &[u8]) {
        let api = self.api;
        let mut texts = std::mem::take(&mut self.texts);
        api::stream_text(api, payload, &mut texts, &mut |i, t| self.text(i, t));
        self.texts = texts;
    }

    /// A whole JSON answer.
    pub(crate) fn json(&mut self, body: &[u8]) {
        let api = self.api;
        api::json_text(api, body, &mut |i, t| self.text(i, t));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Arc<Config> {
        Arc::new(Config {
            min_pattern_length: 5,
            max_pattern_length: 40,
            min_repetitions: 3,
        })
    }

    #[test]
    fn short_texts_build_no_detector_and_pieces_decide_as_one_text() {
        let looping = format!("intro {}", "round and round ".repeat(6));
        let mut whole = LoopDetector::new(&config());
        let expected = whole.push_str(&looping);
        assert!(expected.is_some());
        for piece_len in [1, 2, 7, 14, 15, 16, 200] {
            let mut w = Watch::new(Api::ChatCompletions, config());
            let chars: Vec<char> = looping.chars().collect();
            for piece in chars.chunks(piece_len) {
                let piece: String = piece.iter().collect();
                w.text(0, &piece);
                if w.found.is_some() {
                    break;
                }
            }
            assert_eq!(w.found, expected, "pieces of {piece_len}");
        }
        // Shorter than a loop: only the text is kept.
        let mut w = Watch::new(Api::ChatCompletions, config());
        w.text(0, "0123456789abcd");
        assert!(matches!(w.detectors[0].1, Slot::Pending(ref p) if p.len() == 14));
        w.text(0, "e");
        assert!(matches!(w.detectors[0].1, Slot::Live(_)));
        // A huge shortest loop keeps at most MAX_PENDING bytes before building the detector.
        let huge = Arc::new(Config {
            min_pattern_length: 100_000,
            max_pattern_length: 100_000,
            min_repetitions: 1000,
        });
        let mut w = Watch::new(Api::ChatCompletions, huge);
        for _ in 0..MAX_PENDING / 100 {
            w.text(0, &"x".repeat(100));
        }
        assert!(matches!(w.detectors[0].1, Slot::Pending(ref p) if p.len() < MAX_PENDING));
        w.text(0, &"x".repeat(100));
        assert!(matches!(w.detectors[0].1, Slot::Live(_)));
    }
}
