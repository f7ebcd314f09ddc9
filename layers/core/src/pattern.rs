//! Model-name patterns: an exact name, `prefix*`, or `*`; exact names win, then the longest
//! prefix, then `*`.
//!
//! The rule the `[[models]]` table and per-model rate limits share, in one place.
//!
//! ```
//! use portcullis_core::pattern::PatternSet;
//!
//! let set: PatternSet<&str> = [("*", "openai"), ("claude-*", "anthropic"), ("claude-3-opus", "opus")]
//!     .into_iter()
//!     .collect();
//! assert_eq!(set.lookup("claude-3-opus"), Some(&"opus"));
//! assert_eq!(set.lookup("claude-3-haiku"), Some(&"anthropic"));
//! assert_eq!(set.lookup("gpt-4o"), Some(&"openai"));
//! ```

use std::{fmt, sync::Arc};

// Keys are config names; a request looks one up.
use foldhash::HashMap;

/// One model-name pattern. Only a trailing `*` is special: `gpt-*-mini` is an exact name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ModelPattern {
    /// Matches this name only.
    Exact(Arc<str>),
    /// `prefix*`: matches every name that starts with the prefix (held without the `*`).
    Prefix(Arc<str>),
    /// `*`: matches every name.
    Any,
}

impl ModelPattern {
    /// Read a pattern as written in a config file.
    pub fn parse(pattern: &str) -> Self {
        match pattern.strip_suffix('*') {
            Some("") => Self::Any,
            Some(prefix) => Self::Prefix(Arc::from(prefix)),
            None => Self::Exact(Arc::from(pattern)),
        }
    }

    /// Whether `model` matches.
    pub fn matches(&self, model: &str) -> bool {
        match self {
            Self::Exact(name) => &**name == model,
            Self::Prefix(prefix) => model.starts_with(&**prefix),
            Self::Any => true,
        }
    }
}

impl fmt::Display for ModelPattern {
    /// The pattern as written: `name`, `prefix*` or `*`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Prefix(prefix) => write!(f, "{prefix}*"),
            Self::Any => f.write_str("*"),
        }
    }
}

impl From<&str> for ModelPattern {
    fn from(pattern: &str) -> Self {
        Self::parse(pattern)
    }
}

/// Values keyed by [`ModelPattern`], looked up by model name: an exact entry wins, then the
/// entry with the longest matching prefix, then `*`.
///
/// Inserting a pattern that is already there replaces its value. Built once (from config),
/// read on every request: [`lookup`](Self::lookup) allocates nothing (one hash of the name,
/// then a scan of the prefixes, longest first).
#[derive(Clone)]
pub struct PatternSet<T> {
    /// In insertion order.
    entries: Vec<(ModelPattern, T)>,
    /// Exact names to their index in `entries`.
    exact: HashMap<Arc<str>, usize>,
    /// Indices of the `prefix*` entries, longest prefix first.
    prefixes: Vec<usize>,
    /// Index of the `*` entry.
    any: Option<usize>,
}

impl<T> Default for PatternSet<T> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            exact: HashMap::default(),
            prefixes: Vec::new(),
            any: None,
        }
    }
}

impl<T> PatternSet<T> {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `value` for `pattern`; if the pattern was already there, replace its value (the
    /// entry keeps its place) and return the old one.
    pub fn insert(&mut self, pattern: impl Into<ModelPattern>, value: T) -> Option<T> {
        let pattern = pattern.into();
        if let Some(i) = self.index_of(&pattern) {
            return Some(std::mem::replace(&mut self.entries[i].1, value));
        }
        let i = self.entries.len();
        self.entries.push((pattern, value));
        match &self.entries[i].0 {
            ModelPattern::Exact(name) => {
                self.exact.insert(name.clone(), i);
            }
            ModelPattern::Prefix(_) => {
                self.prefixes.push(i);
                let entries = &self.entries;
                self.prefixes
                    .sort_by_key(|&j| std::cmp::Reverse(pattern_len(&entries[j].0)));
            }
            ModelPattern::Any => self.any = Some(i),
        }
        None
    }

    /// The value for `model`: exact, else longest prefix, else `*`.
    pub fn lookup(&self, model: &str) -> Option<&T> {
        self.lookup_entry(model).map(|(_, v)| v)
    }

    /// The matching pattern and its value (e.g. to key state by the pattern).
    pub fn lookup_entry(&self, model: &str) -> Option<(&ModelPattern, &T)> {
        let i = self
            .exact
            .get(model)
            .copied()
            .or_else(|| {
                self.prefixes
                    .iter()
                    .copied()
                    .find(|&i| match &self.entries[i].0 {
                        ModelPattern::Prefix(p) => model.starts_with(&**p),
                        _ => false,
                    })
            })
            .or(self.any)?;
        let (p, v) = &self.entries[i];
        Some((p, v))
    }

    /// The value stored for exactly this pattern (not a lookup by model name).
    pub fn get(&self, pattern: &ModelPattern) -> Option<&T> {
        self.index_of(pattern).map(|i| &self.entries[i].1)
    }

    /// Entries in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&ModelPattern, &T)> {
        self.entries.iter().map(|(p, v)| (p, v))
    }

    /// Number of patterns.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no patterns.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn index_of(&self, pattern: &ModelPattern) -> Option<usize> {
        match pattern {
            ModelPattern::Exact(name) => self.exact.get(name).copied(),
            ModelPattern::Any => self.any,
            ModelPattern::Prefix(_) => self
                .prefixes
                .iter()
                .copied()
                .find(|&i| self.entries[i].0 == *pattern),
        }
    }
}

fn pattern_len(p: &ModelPattern) -> usize {
    match p {
        ModelPattern::Prefix(p) | ModelPattern::Exact(p) => p.len(),
        ModelPattern::Any => 0,
    }
}

impl<T: fmt::Debug> fmt::Debug for PatternSet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.entries.iter().map(|(p, v)| (p.to_string(), v)))
            .finish()
    }
}

impl<P: Into<ModelPattern>, T> FromIterator<(P, T)> for PatternSet<T> {
    /// Later entries for the same pattern replace earlier ones.
    fn from_iter<I: IntoIterator<Item = (P, T)>>(iter: I) -> Self {
        let mut set = Self::new();
        set.extend(iter);
        set
    }
}

impl<P: Into<ModelPattern>, T> Extend<(P, T)> for PatternSet<T> {
    fn extend<I: IntoIterator<Item = (P, T)>>(&mut self, iter: I) {
        for (p, v) in iter {
            self.insert(p, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_displays() {
        assert_eq!(ModelPattern::parse("*"), ModelPattern::Any);
        assert_eq!(
            ModelPattern::parse("gpt-*"),
            ModelPattern::Prefix("gpt-".into())
        );
        assert_eq!(
            ModelPattern::parse("gpt-4o"),
            ModelPattern::Exact("gpt-4o".into())
        );
        assert_eq!(
            ModelPattern::parse("a*b"),
            ModelPattern::Exact("a*b".into())
        );
        for s in ["*", "gpt-*", "gpt-4o", "a*b", ""] {
            assert_eq!(ModelPattern::parse(s).to_string(), s);
        }
        assert!(ModelPattern::parse("claude-*").matches("claude-3"));
        assert!(ModelPattern::parse("claude-*").matches("claude-"));
        assert!(!ModelPattern::parse("claude-*").matches("claud"));
        assert!(ModelPattern::Any.matches(""));
    }

    #[test]
    fn exact_then_longest_prefix_then_star() {
        let mut set: PatternSet<u32> = [
            ("*", 1),
            ("claude-*", 2),
            ("claude-3-*", 3),
            ("claude-3-opus", 4),
        ]
        .into_iter()
        .collect();
        assert_eq!(set.lookup("claude-3-opus"), Some(&4));
        assert_eq!(set.lookup("claude-3-haiku"), Some(&3));
        assert_eq!(set.lookup("claude-2"), Some(&2));
        assert_eq!(set.lookup("gpt-4o"), Some(&1));
        assert_eq!(
            set.insert("claude-3-opus", 5),
            Some(4),
            "the later setting wins"
        );
        assert_eq!(set.lookup("claude-3-opus"), Some(&5));
        assert_eq!(set.len(), 4);
        let (p, _) = set.lookup_entry("claude-3-x").unwrap();
        assert_eq!(p.to_string(), "claude-3-*");
        let order: Vec<String> = set.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(order, ["*", "claude-*", "claude-3-*", "claude-3-opus"]);
    }

    #[test]
    fn no_star_no_match() {
        let set: PatternSet<()> = [("gpt-4o", ())].into_iter().collect();
        assert!(set.lookup("gpt-4o-mini").is_none());
        assert!(PatternSet::<()>::new().lookup("x").is_none());
    }

    /// The rule, written as plainly as possible, to check the indexed version against.
    fn reference(patterns: &[(String, u32)], model: &str) -> Option<u32> {
        // Later duplicates replace earlier ones.
        let last = |p: &str| patterns.iter().rev().find(|(q, _)| q == p).map(|(_, v)| *v);
        if let Some(v) = patterns
            .iter()
            .find(|(p, _)| !p.ends_with('*') && p == model)
            .and(last(model))
        {
            return Some(v);
        }
        patterns
            .iter()
            .filter_map(|(p, _)| {
                let prefix = p.strip_suffix('*')?;
                model.starts_with(prefix).then(|| (prefix.len(), last(p)))
            })
            .max_by_key(|(len, _)| *len)
            .and_then(|(_, v)| v)
    }

    proptest! {
        #[test]
        fn lookup_agrees_with_the_rule(
            patterns in proptest::collection::vec(("[ab]{0,3}\\*?", 0u32..100), 0..8),
            model in "[ab]{0,4}",
        ) {
            let set: PatternSet<u32> = patterns.iter().map(|(p, v)| (p.as_str(), *v)).collect();
            prop_assert_eq!(set.lookup(&model).copied(), reference(&patterns, &model));
            if let Some((p, _)) = set.lookup_entry(&model) {
                prop_assert!(p.matches(&model));
            }
        }
    }
}
