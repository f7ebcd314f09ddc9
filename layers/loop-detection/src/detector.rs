//! The repetition detector: is the text seen so far ending in one pattern repeated
//! `min_repetitions` times in a row?
//!
//! # Definitions
//!
//! For a period `p`, `run(p)` is how many characters in a row, ending at the newest one, equal
//! the character `p` places before them. The last `m` characters have period `p` exactly when
//! `run(p) >= m - p`, so `min_repetitions` (`R`) copies of a pattern of length `L` end the text
//! exactly when `run(L) >= L * (R - 1)` (the period's *threshold*).
//!
//! A hit is only a loop when the repeated block's *own* shortest period is at least
//! `min_pattern_length`: two hundred `=` or `}\n}\n...` have period 1 or 2, and would otherwise
//! count as a 50-character pattern repeated four times. The short periods' runs give the
//! longest suffix with a period below the minimum (`max(run(p) + p)`); a hit at `L` counts only
//! when `L * R` is longer than that (by Fine and Wilf's theorem, a block with periods `L` and
//! `p < L` whose length is at least `L + p` also has period `gcd(L, p) < min`).
//!
//! # Algorithm: live periods, found once per segment
//!
//! Keeping `run(p)` for every period costs `max_pattern_length` updates per character, almost
//! all of them on periods whose run is 0 or 1 in honest text. Only long runs matter: every
//! threshold is at least `T = min_pattern_length * (R - 1)`. So the text is cut into aligned
//! *segments* of `K = min(64, (T + 1) / 2)` characters, and when a segment completes, the
//! periods `p` at which the whole segment repeats (the segment equals the `K` characters `p`
//! back: a search for the segment in the preceding `max_pattern_length` characters, filtered
//! on three of its characters, then checked) become *live*, with their exact run (a live
//! one keeps its run; a new one's run is `K` plus the short run before the segment, which is
//! shorter than `K` or the period would have been live already). A live period is updated on
//! every character (`run + 1`, or it dies on a mismatch); a period that is not live has a run
//! that started after the last completed segment began, so at most `2K - 2 < T` long: it can
//! neither reach a threshold nor decide the short-period test (`2K - 2 + min - 1 < min * R`).
//! The live periods are therefore exactly the ones whose counters the decision reads, and the
//! detector decides at exactly the character the old all-periods counter version did.
//!
//! # Why this and not a per-character update of every period
//!
//! The first version kept `run(p)` for every period and updated all of them on every
//! character (a vectorised loop over `max_pattern_length` counters): simple, but about 0.25 ns
//! per period and character, 5 µs per 20-character SSE event at the defaults, more than the
//! rest of the gateway spends on that event. Honest text has no live period, so here a
//! character costs a store into the window and, once per `K` characters, one filtered search
//! over `max_pattern_length` positions (vectorised): about `max_pattern_length / K`
//! comparisons per character instead of `max_pattern_length`. The work stays linear in the
//! text, the decision stays at the exact character that completes the last repetition (so it
//! does not depend on how the text was chunked), and nothing is rescanned. Text that really is
//! periodic (a row of `=`, a loop) makes its periods live, at most `max_pattern_length` of
//! them: the worst case is the old cost.
//!
//! # Memory
//!
//! Only the last `max_pattern_length + 2K` characters are ever compared, so the window is a
//! buffer of `2 * (max_pattern_length + 2K)` `u32`s, compacted when full (O(1) amortised): 5 KB
//! at the default 500. The live periods and the search's scratch add nothing in honest text
//! and at most `max_pattern_length` entries each in periodic text (another 10 KB at 500),
//! whatever the answer's length.

use crate::Config;

/// `u32::MAX` is no Unicode scalar value: the window's padding never equals a character.
const PAD: u32 = u32::MAX;

/// The longest segment: past this, a longer segment saves little (the search per segment
/// costs the same) and delays nothing (the decision is per character anyway).
const MAX_SEGMENT: usize = 64;

/// A loop found in a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detection {
    /// Length of the repeated pattern, in characters.
    pub pattern_length: usize,
    /// How many times it was seen in a row (the configured `min_repetitions`).
    pub repetitions: usize,
    /// How many characters had been seen when it was found.
    pub at_char: u64,
}

/// Watches one text, fed in pieces, for a pattern repeated in a row at its end (see the module
/// docs for the algorithm).
///
/// ```
/// use portcullis_loop_detection::{Config, LoopDetector};
///
/// let mut d = LoopDetector::new(&Config::default());
/// let line = "I will now check the configuration file once more.\n"; // 51 characters
/// assert_eq!(d.push_str(&line.repeat(3)), None);
/// let found = d.push_str(line).expect("the fourth copy completes the loop");
/// assert_eq!(found.pattern_length, 51);
/// ```
#[derive(Debug, Clone)]
pub struct LoopDetector {
    min: usize,
    max: usize,
    reps: usize,
    /// The segment length `K`.
    segment: usize,
    /// Characters of the current, unfinished segment.
    filled: usize,
    /// The last `max + 2K ..= 2 * (max + 2K)` characters; starts as `max + 2K` pads.
    window: Vec<u32>,
    /// The live periods, ascending, with their runs (saturating: a run past every threshold
    /// has done its work).
    live: Vec<(u32, u32)>,
    /// Scratch for the periods a completed segment repeats at (kept to not allocate).
    found_periods: Vec<u32>,
    /// Scratch for the next live list (swapped with `live`).
    spare: Vec<(u32, u32)>,
    seen: u64,
    found: Option<Detection>,
}

impl LoopDetector {
    /// A detector for `config` (values out of range are clamped to the nearest valid ones:
    /// validate the config with [`Config::validate`]).
    pub fn new(config: &Config) -> Self {
        let min = config.min_pattern_length.max(1);
        let max = config
            .max_pattern_length
            .clamp(min, crate::config::MAX_PATTERN_LENGTH_LIMIT.max(min));
        let reps = config.min_repetitions.clamp(2, 1000);
        // 2K - 2 < T: a period that is not live can reach no threshold (see the module docs).
        let lowest_threshold = min.saturating_mul(reps - 1);
        let segment = (lowest_threshold.saturating_add(1) / 2).clamp(1, MAX_SEGMENT);
        let history = max + 2 * segment;
        let mut window = Vec::with_capacity(2 * history);
        window.resize(history, PAD);
        Self {
            min,
            max,
            reps,
            segment,
            filled: 0,
            window,
            live: Vec::new(),
            found_periods: Vec::new(),
            spare: Vec::new(),
            seen: 0,
            found: None,
        }
    }

    /// What was found, if anything.
    pub fn detection(&self) -> Option<Detection> {
        self.found
    }

    /// Characters seen so far.
    pub fn chars_seen(&self) -> u64 {
        self.seen
    }

    /// Feed the next piece of text; the first loop found (then and for ever after).
    pub fn push_str(&mut self, text: &str) -> Option<Detection> {
        let mut chars = text.chars();
        while self.found.is_none() {
            if !self.live.is_empty() {
                // Live periods are followed a character at a time.
                match chars.next() {
                    Some(c) => self.push(c),
                    None => break,
                };
                continue;
            }
            // No live period (honest text): nothing to do but store characters up to the end
            // of the segment.
            let room = self.segment - self.filled;
            if self.window.len() + room > self.window.capacity() {
                self.compact();
            }
            let before = self.window.len();
            let rest = chars.as_str();
            let ascii = rest.len().min(room);
            if rest.as_bytes()[..ascii].is_ascii() {
                // Mostly ASCII text: one widening copy (vectorised) instead of decoding.
                self.window
                    .extend(rest.as_bytes()[..ascii].iter().map(|&b| u32::from(b)));
                chars = rest[ascii..].chars();
            } else {
                self.window.extend(chars.by_ref().take(room).map(u32::from));
            }
            let added = self.window.len() - before;
            if added == 0 {
                break;
            }
            self.seen += added as u64;
            self.filled += added;
            if self.filled == self.segment {
                self.filled = 0;
                if self.segment_done() {
                    self.found = self.confirm();
                }
            }
        }
        self.found
    }

    /// Feed one character; the loop it completes, if any.
    pub fn push(&mut self, c: char) -> Option<Detection> {
        if self.found.is_some() {
            return self.found;
        }
        let c = u32::from(c);
        if self.window.len() == self.window.capacity() {
            self.compact();
        }
        self.window.push(c);
        self.seen += 1;
        let mut hit = false;
        if !self.live.is_empty() {
            let newest = self.window.len() - 1;
            let (window, min, reps) = (&self.window, self.min as u64, self.reps as u64 - 1);
            self.live.retain_mut(|(p, run)| {
                if window[newest - *p as usize] != c {
                    return false;
                }
                *run = run.saturating_add(1);
                hit |= u64::from(*p) >= min && u64::from(*run) >= u64::from(*p) * reps;
                true
            });
        }
        self.filled += 1;
        if self.filled == self.segment {
            self.filled = 0;
            hit |= self.segment_done();
        }
        if hit {
            self.found = self.confirm();
        }
        self.found
    }

    /// Keep only the last `max + 2K` characters (all that is ever compared).
    fn compact(&mut self) {
        let keep = self.window.len() - (self.max + 2 * self.segment);
        self.window.copy_within(keep.., 0);
        self.window.truncate(self.window.len() - keep);
    }

    /// The newest segment is complete: the periods it repeats at become (or stay) live. Whether
    /// one of them reaches its threshold.
    #[inline(never)]
    fn segment_done(&mut self) -> bool {
        let (k, max) = (self.segment, self.max);
        let end = self.window.len();
        let start = end - k;
        let w = &self.window;
        let needle = &w[start..end];
        // Candidate `p = max - t` when the characters at three points of the segment (first,
        // middle, last) equal the ones `p` back: `w[start - p + o] == needle[o]`.
        let (m, l) = (k / 2, k - 1);
        let (first, middle, last) = (needle[0], needle[m], needle[l]);
        let heads = &w[start - max..start];
        let middles = &w[start - max + m..start + m];
        let tails = &w[start - max + l..start + l];
        self.found_periods.clear();
        const LANES: usize = 64;
        let chunks = heads
            .chunks(LANES)
            .zip(middles.chunks(LANES))
            .zip(tails.chunks(LANES));
        for (chunk, ((hs, ms), ts)) in chunks.enumerate() {
            // A branch-free test per chunk (vectorised); honest text rarely passes it.
            let any = hs
                .iter()
                .zip(ms)
                .zip(ts)
                .fold(false, |any, ((&h, &m), &t)| {
                    any | ((h == first) & (m == middle) & (t == last))
                });
            if !any {
                continue;
            }
            for i in 0..hs.len() {
                let p = max - (chunk * LANES + i);
                if hs[i] == first
                    && ms[i] == middle
                    && ts[i] == last
                    && w[start - p..end - p] == *needle
                {
                    self.found_periods.push(p as u32);
                }
            }
        }
        // `found_periods` is descending; every live period is among them (it matched each
        // character of the segment). Merge: the live keep their runs, the new ones count theirs.
        if self.found_periods.is_empty() {
            self.live.clear();
            return false;
        }
        let mut next = std::mem::take(&mut self.spare);
        next.clear();
        let mut old = self.live.iter().peekable();
        let mut hit = false;
        for &p in self.found_periods.iter().rev() {
            while old.next_if(|(q, _)| *q < p).is_some() {}
            let run = match old.next_if(|(q, _)| *q == p) {
                Some(&(_, run)) => run,
                None => {
                    // The run before the segment is shorter than K (else `p` would be live).
                    let p = p as usize;
                    let before = (1..k)
                        .take_while(|&d| {
                            let i = start - d;
                            w[i] != PAD && w[i] == w[i - p]
                        })
                        .count();
                    (k + before) as u32
                }
            };
            hit |=
                p as usize >= self.min && u64::from(run) >= u64::from(p) * (self.reps as u64 - 1);
            next.push((p, run));
        }
        self.spare = std::mem::replace(&mut self.live, next);
        hit
    }

    /// A live period passed its threshold: the shortest one in range whose repeated block has
    /// no period below `min` (see the module docs).
    fn confirm(&self) -> Option<Detection> {
        let min = self.min as u32;
        let short_extent = self
            .live
            .iter()
            .take_while(|(p, _)| *p < min)
            .map(|&(p, run)| u64::from(run) + u64::from(p))
            .max()
            .unwrap_or(0);
        let reps = self.reps as u64;
        self.live
            .iter()
            .filter(|(p, _)| *p >= min)
            .find(|&&(p, run)| {
                let p = u64::from(p);
                u64::from(run) >= p * (reps - 1) && short_extent < p * reps
            })
            .map(|&(p, _)| Detection {
                pattern_length: p as usize,
                repetitions: self.reps,
                at_char: self.seen,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(min: usize, max: usize, reps: usize) -> Config {
        Config {
            min_pattern_length: min,
            max_pattern_length: max,
            min_repetitions: reps,
        }
    }

    /// The definition, checked the slow way at every prefix.
    fn naive(text: &[char], c: &Config) -> Option<(usize, usize)> {
        for end in 1..=text.len() {
            let t = &text[..end];
            for l in c.min_pattern_length..=c.max_pattern_length {
                let m = l * c.min_repetitions;
                if m > t.len() {
                    break;
                }
                let s = &t[t.len() - m..];
                let periodic = (l..m).all(|i| s[i] == s[i - l]);
                let primitive_short =
                    (1..c.min_pattern_length).any(|p| (p..m).all(|i| s[i] == s[i - p]));
                if periodic && !primitive_short {
                    return Some((end, l));
                }
            }
        }
        None
    }

    #[test]
    fn agrees_with_the_definition_on_small_alphabets() {
        // A tiny deterministic generator: many near-loops over a 2-3 letter alphabet.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let c = config(3, 7, 3);
        for _ in 0..400 {
            let mut text = Vec::new();
            for _ in 0..60 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                text.push(char::from(b'a' + (x % 3) as u8));
            }
            let mut d = LoopDetector::new(&c);
            let got = text
                .iter()
                .find_map(|&ch| d.push(ch))
                .map(|f| (f.at_char as usize, f.pattern_length));
            assert_eq!(got, naive(&text, &c), "{}", text.iter().collect::<String>());
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Any small config (segments of 1 to a few characters), texts with planted repeats
        /// over 2-3 letters: the first detection is the definition's, character and period.
        #[test]
        fn agrees_with_the_definition_on_any_small_config(
            min in 1..9usize,
            extra in 0..14usize,
            reps in 2..6usize,
            letters in 2..5u8,
            cut in 1..50usize,
            parts in proptest::collection::vec(
                (proptest::collection::vec(0..4u8, 1..24), 1..7usize),
                1..12,
            ),
        ) {
            let c = config(min, min + extra, reps);
            let text: Vec<char> = parts
                .iter()
                .flat_map(|(p, n)| p.repeat(*n))
                // ASCII and not: both ways into the window.
                .map(|b| ['a', 'é', 'b', '😀'][usize::from(b % letters)])
                .collect();
            let mut d = LoopDetector::new(&c);
            let got = text
                .iter()
                .find_map(|&ch| d.push(ch))
                .map(|f| (f.at_char as usize, f.pattern_length));
            let want = naive(&text, &c);
            proptest::prop_assert_eq!(got, want);
            proptest::prop_assert!(d.live.len() <= c.max_pattern_length);
            // The same text in pieces (the fast path of `push_str`) decides the same.
            let mut d = LoopDetector::new(&c);
            let mut got = None;
            for piece in text.chunks(cut) {
                if let Some(f) = d.push_str(&piece.iter().collect::<String>()) {
                    got = Some((f.at_char as usize, f.pattern_length));
                    break;
                }
            }
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn short_periods_are_not_loops() {
        let mut d = LoopDetector::new(&Config::default());
        assert_eq!(d.push_str(&"=".repeat(5000)), None);
        assert_eq!(d.push_str(&"}\n".repeat(2000)), None);
        assert_eq!(d.push_str(&"ab".repeat(25).repeat(40)), None);
    }

    /// A deterministic pseudo-random text with no short period.
    fn noise(n: usize, seed: u64) -> String {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'a' + (x % 26) as u8)
            })
            .collect()
    }

    #[test]
    fn a_long_pattern_in_range() {
        let pattern = noise(500, 7);
        let mut d = LoopDetector::new(&Config::default());
        assert_eq!(d.push_str(&pattern.repeat(3)), None);
        assert_eq!(d.push_str(&pattern[..499]), None);
        let f = d.push_str(&pattern[499..]).unwrap();
        assert_eq!((f.at_char, f.pattern_length, f.repetitions), (2000, 500, 4));
    }

    #[test]
    fn a_loop_after_other_text_and_the_shortest_period_wins() {
        let mut d = LoopDetector::new(&Config::default());
        let pattern = noise(60, 3);
        d.push_str(&noise(3000, 11));
        // 60 * 4 = 240 characters: also a 120-character pattern twice, but that is not 4 times.
        let f = d.push_str(&pattern.repeat(4)).unwrap();
        assert_eq!(f.pattern_length, 60);
        assert_eq!(f.at_char, 3240);
    }

    #[test]
    fn memory_stays_bounded() {
        let mut d = LoopDetector::new(&Config::default());
        let text: String = (0..200_000u32)
            .map(|i| char::from_u32(0x4e00 + (i.wrapping_mul(2_654_435_761) % 20_000)).unwrap())
            .collect();
        assert_eq!(d.push_str(&text), None);
        assert!(d.window.capacity() <= 2 * (500 + 2 * 64));
        assert!(d.live.capacity() <= 500);
        assert_eq!(d.chars_seen(), 200_000);
    }
}
