//! The state kept while one answer is watched: a detector per choice.

use std::sync::Arc;

use crate::{api, scan::Texts, Api, Config, Detection, LoopDetector};

/// Chat completions may stream several choices (`n > 1`) at once, each its own text. Choices
/// past this many are not watched (bounded memory per answer).
const MAX_CHOICES: usize = 8;

#[derive(Debug)]
pub(crate) struct Watch {
    pub(crate) api: Api,
    config: Arc<Config>,
    /// Made on first text, so answers without text cost nothing.
    detectors: Vec<(u32, LoopDetector)>,
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
                self.detectors
                    .push((choice, LoopDetector::new(&self.config)));
                self.detectors.len() - 1
            }
            None => return,
        };
        self.found = self.detectors[i].1.push_str(text);
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
