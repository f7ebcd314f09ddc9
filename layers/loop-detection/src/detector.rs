//! The repetition detector: is the text seen so far ending in one pattern repeated
//! `min_repetitions` times in a row?
//!
//! # Algorithm
//!
//! For every candidate period `p` in `1..=max_pattern_length` the detector keeps `run[p]`: how
//! many characters in a row, ending at the newest one, equal the character `p` places before
//! them. Appending a character `c` updates each counter in O(1): `run[p] + 1` if `c` equals the
//! character `p` back, else `0`. The last `m` characters have period `p` exactly when
//! `run[p] >= m - p`, so `min_repetitions` (`R`) copies of a pattern of length `L` end the text
//! exactly when `run[L] >= L * (R - 1)`.
//!
//! A hit is only a loop when the repeated block's *own* shortest period is at least
//! `min_pattern_length`: two hundred `=` or `}\n}\n...` have period 1 or 2, and would otherwise
//! count as a 50-character pattern repeated four times. The short periods' counters give the
//! longest suffix with a period below the minimum (`max(run[p] + p)`); a hit at `L` counts only
//! when `L * R` is longer than that (by Fine and Wilf's theorem, a block with periods `L` and
//! `p < L` whose length is at least `L + p` also has period `gcd(L, p) < min`).
//!
//! # Why this and not a periodic search
//!
//! Each character costs `max_pattern_length` counter updates over two contiguous arrays (the
//! compiler vectorises the loop), so the total work is linear in the text, detection happens at
//! the exact character that completes the last repetition (the decision does not depend on how
//! the text was chunked), and nothing is rescanned. Searching the whole window for periods
//! every few characters would also be linear but would decide later, or need care to not miss a
//! loop that stops between two checks.
//!
//! # Memory
//!
//! Only the last `max_pattern_length` characters are ever compared, so the window is a buffer
//! of `2 * max_pattern_length` `u32`s, compacted when full (a copy of `max_pattern_length`
//! values every `max_pattern_length` characters: O(1) amortised), plus one `u32` counter per
//! period: about 12 bytes per unit of `max_pattern_length` (6 KB at the default 500), whatever
//! the answer's length.

use crate::Config;

/// `u32::MAX` is no Unicode scalar value: the window's padding never equals a character.
const PAD: u32 = u32::MAX;

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
    /// The last `max..=2 * max` characters; starts as `max` pads.
    window: Vec<u32>,
    /// `runs[j]` is the run length for period `max - j` (so `runs` lines up with the last
    /// `max` window entries).
    runs: Vec<u32>,
    /// `thresholds[j]` is `(max - j) * (reps - 1)` for periods in range, `u32::MAX` below.
    thresholds: Vec<u32>,
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
        let thresholds = (0..max)
            .map(|j| {
                let p = max - j;
                if p >= min {
                    u32::try_from(p * (reps - 1)).unwrap_or(u32::MAX)
                } else {
                    u32::MAX
                }
            })
            .collect();
        let mut window = Vec::with_capacity(2 * max);
        window.resize(max, PAD);
        Self {
            min,
            max,
            reps,
            window,
            runs: vec![0; max],
            thresholds,
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
        if self.found.is_none() {
            for c in text.chars() {
                if self.push(c).is_some() {
                    break;
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
            let keep = self.window.len() - self.max;
            self.window.copy_within(keep.., 0);
            self.window.truncate(self.max);
        }
        let len = self.window.len();
        let prev = &self.window[len - self.max..];
        let mut hit = false;
        for ((run, &q), &t) in self.runs.iter_mut().zip(prev).zip(&self.thresholds) {
            // Wrapping: after 4G equal characters a counter restarts; it never panics.
            *run = if q == c { run.wrapping_add(1) } else { 0 };
            hit |= *run >= t;
        }
        self.window.push(c);
        self.seen += 1;
        if hit {
            self.found = self.confirm();
        }
        self.found
    }

    /// A counter passed its threshold: the shortest period in range whose repeated block has
    /// no period below `min` (see the module docs).
    fn confirm(&self) -> Option<Detection> {
        let short_extent = (self.max - self.min + 1..self.max)
            .map(|j| u64::from(self.runs[j]) + (self.max - j) as u64)
            .max()
            .unwrap_or(0);
        (0..=self.max - self.min)
            .rev() // shortest period first
            .find(|&j| {
                let p = (self.max - j) as u64;
                self.runs[j] >= self.thresholds[j] && short_extent < p * self.reps as u64
            })
            .map(|j| Detection {
                pattern_length: self.max - j,
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
        assert!(d.window.capacity() <= 1000);
        assert_eq!(d.chars_seen(), 200_000);
    }
}
