//! The compiled decision: which memory user id a request gets, and why.
//!
//! # Why a `RegexSet` per header, and not one set for all patterns
//!
//! Patterns look at different headers, so one set cannot be run over one haystack. Patterns
//! are grouped by header (in order of first appearance); each group with more than one
//! pattern gets a `RegexSet`, which answers "which of these match" in one pass over the value
//! instead of one pass per pattern. The first match in *config order* must win across
//! headers, so every group reports the lowest config index that matched, the lowest over all
//! groups wins, and groups whose first index is already beaten are skipped.

use std::{borrow::Cow, sync::Arc};

use http::{HeaderMap, HeaderName, HeaderValue};
use portcullis_core::{static_key, BoundUserId, ConfigProblem, UserId};
use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use serde::Serialize;

use crate::config::{is_valid_user_id, Config, Pattern};

/// Compiled size limit of one pattern, in bytes (the `regex` crate's default is 10 MiB).
/// Patterns are written by operators, but a typo like `\w{1000}` should fail at load with a
/// clear message rather than use megabytes per pattern.
pub const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// Bytes of a header value that patterns are matched against: the first 1 KiB.
///
/// # Why a prefix
///
/// A client chooses its header values; without a bound, 200 patterns against a 300 KB
/// `User-Agent` cost 959 ms per request (issue 14). The values patterns are written for
/// (user agents, client names, hosts) identify themselves in their first bytes, so an
/// unanchored pattern, or one anchored with `^`, sees everything it needs. A pattern anchored
/// with `$` matches the end of the first 1 KiB of a longer value. Together with
/// [`MAX_PATTERNS`](crate::MAX_PATTERNS) and [`MAX_MATCHED_VALUES`] this bounds a request's
/// matching work whatever the client sends.
pub const MAX_MATCHED_BYTES: usize = 1024;

/// Values of one header that patterns are matched against: the first 16 (a header sent more
/// often than that is not a user agent anyone wrote a pattern for).
pub const MAX_MATCHED_VALUES: usize = 16;

/// Compile one pattern exactly as the router does: case-insensitive, size-limited.
pub(crate) fn build_regex(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .case_insensitive(true)
        .size_limit(PATTERN_SIZE_LIMIT)
        .build()
}

/// The memory user id chosen for one request and why it was chosen.
///
/// It is inserted as a request extension by [`MemoryRouting`](crate::MemoryRouting) (next to a
/// [`portcullis_core::UserId`]) and serializes exactly as `GET /memory-routing/info` answers:
/// `{"user_id":..,"matched_pattern":{"header":..,"pattern":..,"user_id":..}|null,
/// "custom_header_present":bool,"is_default":bool}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The chosen user id.
    pub user_id: Arc<str>,
    /// The pattern that chose it, as configured; `None` for an explicit id or the default.
    pub matched_pattern: Option<Arc<Pattern>>,
    /// The id is the client's own: it sent the client header (or the upstream header) with a
    /// usable value. A value that was present but unusable (empty, not printable ASCII,
    /// longer than 256 bytes) was ignored, and this is `false`.
    pub custom_header_present: bool,
    /// Neither an explicit id nor any pattern applied: the configured default was used.
    pub is_default: bool,
    /// Index of `matched_pattern` in the config's `patterns`, for logs (not serialized).
    #[serde(skip)]
    pub pattern_index: Option<usize>,
    /// The id is the one bound to the caller's gateway key ([`BoundUserId`]); not serialized.
    #[serde(skip)]
    pub bound: bool,
    #[serde(skip)]
    header_value: HeaderValue,
}

impl Decision {
    /// The user id as the shared [`UserId`] extension type.
    pub fn user_id(&self) -> UserId {
        UserId(self.user_id.clone())
    }

    /// The value sent upstream in the upstream header.
    pub fn header_value(&self) -> &HeaderValue {
        &self.header_value
    }

    /// Where the id came from: `"bound"`, `"explicit"`, `"pattern"` or `"default"` (for logs
    /// and metrics).
    pub fn source(&self) -> &'static str {
        self.source_and_key().0
    }

    /// [`Self::source`] with its `portcullis_memory_routing_decisions_total` key, made at
    /// compile time ([`portcullis_core::counter`]).
    pub(crate) fn source_and_key(
        &self,
    ) -> (
        &'static str,
        &'static portcullis_core::counter::StaticCounter,
    ) {
        const DECISIONS: &str = "portcullis_memory_routing_decisions_total";
        if self.bound {
            ("bound", static_key!(DECISIONS, "source" => "bound"))
        } else if self.custom_header_present {
            ("explicit", static_key!(DECISIONS, "source" => "explicit"))
        } else if self.matched_pattern.is_some() {
            ("pattern", static_key!(DECISIONS, "source" => "pattern"))
        } else {
            ("default", static_key!(DECISIONS, "source" => "default"))
        }
    }
}

/// The compiled form of a [`Config`]: regexes built once at load, shared behind an `Arc` by
/// every clone of the layer and service.
#[derive(Debug)]
pub struct MemoryRouter {
    config: Config,
    upstream_header: HeaderName,
    client_header: HeaderName,
    default_id: Arc<str>,
    default_value: HeaderValue,
    patterns: Vec<Compiled>,
    groups: Vec<Group>,
}

#[derive(Debug)]
struct Compiled {
    pattern: Arc<Pattern>,
    user_id: Arc<str>,
    header_value: HeaderValue,
    regex: Regex,
}

/// The patterns on one header, config indices ascending.
#[derive(Debug)]
struct Group {
    header: HeaderName,
    indices: Vec<usize>,
    matcher: Matcher,
}

#[derive(Debug)]
enum Matcher {
    /// One pattern: its own regex.
    One,
    /// Several: one pass over the value finds all that match.
    Set(RegexSet),
    /// Several, but the set was too big to compile: try each regex in order.
    Each,
}

impl MemoryRouter {
    /// Compile `config`. Fails with every problem [`Config::validate`] reports.
    pub fn new(config: &Config) -> Result<Self, Vec<ConfigProblem>> {
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(problems);
        }
        // After validation these cannot fail; map errors instead of unwrapping anyway, so a
        // drift between `validate` and this function is a reported problem, not a panic.
        let header = |path: &str, name: &str| {
            HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| vec![ConfigProblem::new(path, e.to_string())])
        };
        let value = |path: &str, v: &str| {
            HeaderValue::from_str(v).map_err(|e| vec![ConfigProblem::new(path, e.to_string())])
        };
        let mut patterns = Vec::with_capacity(config.patterns.len());
        let mut groups: Vec<Group> = Vec::new();
        for (i, p) in config.patterns.iter().enumerate() {
            let name = header(&format!("patterns[{i}].header"), &p.header)?;
            let regex = build_regex(&p.pattern).map_err(|e| {
                vec![ConfigProblem::new(
                    format!("patterns[{i}].pattern"),
                    format!("invalid regex: {e}"),
                )]
            })?;
            patterns.push(Compiled {
                pattern: Arc::new(p.clone()),
                user_id: p.user_id.as_str().into(),
                header_value: value(&format!("patterns[{i}].user_id"), &p.user_id)?,
                regex,
            });
            match groups.iter_mut().find(|g| g.header == name) {
                Some(g) => g.indices.push(i),
                None => groups.push(Group {
                    header: name,
                    indices: vec![i],
                    matcher: Matcher::One,
                }),
            }
        }
        for g in &mut groups {
            if g.indices.len() > 1 {
                g.matcher = build_set(config, &g.indices);
            }
        }
        Ok(Self {
            upstream_header: header("upstream_header", &config.upstream_header)?,
            client_header: header("client_header", &config.client_header)?,
            default_id: config.default_user_id.as_str().into(),
            default_value: value("default_user_id", &config.default_user_id)?,
            config: config.clone(),
            patterns,
            groups,
        })
    }

    /// The config this router was compiled from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The header set on upstream requests.
    pub fn upstream_header(&self) -> &HeaderName {
        &self.upstream_header
    }

    /// The header a client may name its id in (removed before the request goes upstream).
    pub fn client_header(&self) -> &HeaderName {
        &self.client_header
    }

    /// Decide the user id for a request with these headers.
    ///
    /// In order: the client's explicit id (`client_header`, else `upstream_header`, trimmed;
    /// ignored unless 1 to 256 bytes of printable ASCII, and ignored altogether when
    /// `trust_client_header` is false); else the first pattern in config order whose regex
    /// matches its header (any of the header's first [`MAX_MATCHED_VALUES`] values, each
    /// matched on its first [`MAX_MATCHED_BYTES`], non-UTF-8 bytes matched as U+FFFD); else
    /// the default id. Never panics, whatever the header bytes.
    pub fn decide(&self, headers: &HeaderMap) -> Decision {
        self.decide_for(headers, None)
    }

    /// Like [`decide`](Self::decide), but a `bound` id (a gateway key's `user_id`, the
    /// request's [`BoundUserId`] extension) wins over everything else.
    pub fn decide_for(&self, headers: &HeaderMap, bound: Option<&BoundUserId>) -> Decision {
        if let Some(b) = bound {
            match HeaderValue::from_str(b.as_str()) {
                Ok(header_value) if is_valid_user_id(b.as_str()) => {
                    return Decision {
                        user_id: b.0.clone(),
                        matched_pattern: None,
                        custom_header_present: false,
                        is_default: false,
                        pattern_index: None,
                        bound: true,
                        header_value,
                    };
                }
                _ => tracing::warn!(
                    "ignoring a bound memory user id: not 1 to 256 bytes of printable ASCII"
                ),
            }
        }
        if self.config.trust_client_header {
            if let Some(d) = self.explicit(headers) {
                return d;
            }
        }
        match self.first_match(headers) {
            Some(i) => {
                let p = &self.patterns[i];
                Decision {
                    user_id: p.user_id.clone(),
                    matched_pattern: Some(p.pattern.clone()),
                    custom_header_present: false,
                    is_default: false,
                    pattern_index: Some(i),
                    bound: false,
                    header_value: p.header_value.clone(),
                }
            }
            None => Decision {
                user_id: self.default_id.clone(),
                matched_pattern: None,
                custom_header_present: false,
                is_default: true,
                pattern_index: None,
                bound: false,
                header_value: self.default_value.clone(),
            },
        }
    }

    /// Rewrite request headers for `decision`: the client header is removed (it is for the
    /// gateway, not the upstream) and the upstream header is set, replacing any value the
    /// client sent (trusted or not, only the decided id goes upstream).
    pub fn apply(&self, decision: &Decision, headers: &mut HeaderMap) {
        headers.remove(&self.client_header);
        headers.insert(self.upstream_header.clone(), decision.header_value.clone());
    }

    /// Distinct headers the patterns look at, in config order.
    pub fn pattern_headers(&self) -> impl Iterator<Item = &HeaderName> {
        self.groups.iter().map(|g| &g.header)
    }

    fn explicit(&self, headers: &HeaderMap) -> Option<Decision> {
        for name in [&self.client_header, &self.upstream_header] {
            let Some(raw) = headers.get(name) else {
                continue;
            };
            let id = std::str::from_utf8(raw.as_bytes())
                .ok()
                .map(|s| s.trim_matches([' ', '\t']))
                .filter(|s| is_valid_user_id(s));
            let Some(id) = id else {
                if !raw.as_bytes().iter().all(|b| *b == b' ' || *b == b'\t') {
                    tracing::debug!(
                        header = %name,
                        len = raw.len(),
                        "ignoring explicit memory user id: not 1 to 256 bytes of printable ASCII"
                    );
                }
                continue;
            };
            let header_value = if id.len() == raw.len() {
                raw.clone()
            } else {
                HeaderValue::from_str(id).ok()?
            };
            return Some(Decision {
                user_id: id.into(),
                matched_pattern: None,
                custom_header_present: true,
                is_default: false,
                pattern_index: None,
                bound: false,
                header_value,
            });
        }
        None
    }

    /// Lowest config index of a pattern that matches, if any.
    fn first_match(&self, headers: &HeaderMap) -> Option<usize> {
        let mut best: Option<usize> = None;
        for g in &self.groups {
            // Groups are in order of their first index: once one cannot beat `best`, none can.
            if best.is_some_and(|b| g.indices[0] > b) {
                break;
            }
            for value in headers.get_all(&g.header).iter().take(MAX_MATCHED_VALUES) {
                let hay = haystack(value);
                if let Some(i) = g.first_match(&self.patterns, &hay, best) {
                    best = Some(i);
                }
            }
        }
        best
    }
}

impl Group {
    /// Lowest config index in this group that matches `hay` and is below `bound`.
    fn first_match(&self, patterns: &[Compiled], hay: &str, bound: Option<usize>) -> Option<usize> {
        let below = |i: &usize| bound.is_none_or(|b| *i < b);
        match &self.matcher {
            Matcher::One => {
                let i = self.indices[0];
                (below(&i) && patterns[i].regex.is_match(hay)).then_some(i)
            }
            // `matches` yields set indices ascending, and set index k is `indices[k]`, which
            // ascends too: the first one is the lowest config index.
            // Most values match no pattern: `is_match` says so without the overlapping
            // search (and the allocation) `matches` makes.
            Matcher::Set(set) => set
                .is_match(hay)
                .then(|| set.matches(hay).iter().next())
                .flatten()
                .map(|k| self.indices[k])
                .filter(below),
            Matcher::Each => self
                .indices
                .iter()
                .copied()
                .take_while(below)
                .find(|&i| patterns[i].regex.is_match(hay)),
        }
    }
}

fn build_set(config: &Config, indices: &[usize]) -> Matcher {
    let exprs = indices.iter().map(|&i| config.patterns[i].pattern.as_str());
    match RegexSetBuilder::new(exprs)
        .case_insensitive(true)
        .size_limit(PATTERN_SIZE_LIMIT.saturating_mul(indices.len()))
        .build()
    {
        Ok(set) => Matcher::Set(set),
        Err(e) => {
            tracing::debug!(error = %e, "memory routing: regex set too big, matching patterns one by one");
            Matcher::Each
        }
    }
}

/// The first [`MAX_MATCHED_BYTES`] of a header value as text: as-is when it is UTF-8, else
/// with invalid bytes (a character cut at the limit included) as U+FFFD.
fn haystack(value: &HeaderValue) -> Cow<'_, str> {
    let bytes = &value.as_bytes()[..value.len().min(MAX_MATCHED_BYTES)];
    // The plain check first: the lossy walk costs twice as much on the common, valid case.
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The metric key of a decision is labelled with its source.
    fn counted_under_its_source(d: &Decision) {
        let (source, counter) = d.source_and_key();
        let key = counter.key();
        assert_eq!(key.name(), "portcullis_memory_routing_decisions_total");
        let labels: Vec<_> = key.labels().map(|l| (l.key(), l.value())).collect();
        assert_eq!(labels, [("source", source)]);
    }

    fn router(patterns: &[(&str, &str, &str)]) -> MemoryRouter {
        MemoryRouter::new(&Config {
            patterns: patterns
                .iter()
                .map(|(h, p, u)| Pattern {
                    header: (*h).into(),
                    pattern: (*p).into(),
                    user_id: (*u).into(),
                })
                .collect(),
            ..Config::default()
        })
        .unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn a_bound_id_is_counted_as_bound() {
        let r = router(&[("user-agent", "Java", "generic-java")]);
        let d = r.decide_for(
            &headers(&[("user-agent", "Java")]),
            Some(&BoundUserId::new("team-a")),
        );
        assert_eq!(d.source(), "bound");
        counted_under_its_source(&d);
    }

    #[test]
    fn first_pattern_in_config_order_wins_even_if_a_later_one_is_more_specific() {
        let r = router(&[
            ("user-agent", "Java", "generic-java"),
            ("user-agent", "^OpenAIClientImpl/Java$", "pycharm-ai"),
        ]);
        let d = r.decide(&headers(&[("user-agent", "OpenAIClientImpl/Java")]));
        assert_eq!(&*d.user_id, "generic-java");
        assert_eq!(d.pattern_index, Some(0));
        assert_eq!(d.source(), "pattern");
        counted_under_its_source(&d);
    }

    #[test]
    fn first_pattern_wins_across_headers() {
        let r = router(&[
            ("x-client", "zzz", "never"),
            ("user-agent", "claude", "claude-code"),
            ("x-client", "ide", "ide"),
        ]);
        let d = r.decide(&headers(&[
            ("x-client", "my-ide"),
            ("user-agent", "claude-cli/1.0"),
        ]));
        assert_eq!(&*d.user_id, "claude-code");
        assert_eq!(d.pattern_index, Some(1));
        // And the other way round: the x-client set is consulted after user-agent missed.
        let d = r.decide(&headers(&[
            ("x-client", "my-ide"),
            ("user-agent", "curl/8"),
        ]));
        assert_eq!(&*d.user_id, "ide");
        assert_eq!(d.pattern_index, Some(2));
    }

    #[test]
    fn header_names_and_regexes_are_case_insensitive() {
        let r = router(&[("User-Agent", "openaiclientimpl/JAVA", "pycharm-ai")]);
        let d = r.decide(&headers(&[("USER-AGENT", "OpenAIClientImpl/Java 17")]));
        assert_eq!(&*d.user_id, "pycharm-ai");
        assert_eq!(d.matched_pattern.as_ref().unwrap().header, "User-Agent");
    }

    #[test]
    fn any_value_of_a_repeated_header_may_match() {
        let r = router(&[("x-client", "^b$", "b"), ("x-client", "^a$", "a")]);
        let d = r.decide(&headers(&[("x-client", "a"), ("x-client", "b")]));
        assert_eq!(&*d.user_id, "b");
    }

    #[test]
    fn explicit_ids_win_and_client_header_beats_upstream_header() {
        let r = router(&[("user-agent", ".*", "pattern")]);
        let d = r.decide(&headers(&[("user-agent", "x"), ("x-sm-user-id", "sm")]));
        assert_eq!((&*d.user_id, d.custom_header_present), ("sm", true));
        let d = r.decide(&headers(&[
            ("user-agent", "x"),
            ("x-sm-user-id", "sm"),
            ("x-memory-user-id", "  alice "),
        ]));
        assert_eq!(&*d.user_id, "alice");
        assert_eq!(d.header_value(), "alice");
        assert!(d.custom_header_present && !d.is_default && d.matched_pattern.is_none());
        assert_eq!(d.source(), "explicit");
        counted_under_its_source(&d);
    }

    #[test]
    fn unusable_explicit_ids_fall_through() {
        let r = router(&[("user-agent", "java", "pycharm-ai")]);
        let long = "x".repeat(257);
        for bad in ["", "   ", long.as_str()] {
            let d = r.decide(&headers(&[
                ("x-memory-user-id", bad),
                ("user-agent", "Java"),
            ]));
            assert_eq!(&*d.user_id, "pycharm-ai", "{bad:?}");
            assert!(!d.custom_header_present);
        }
        let mut h = headers(&[]);
        h.insert(
            "x-memory-user-id",
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        let d = r.decide(&h);
        assert!(d.is_default && !d.custom_header_present);
    }

    #[test]
    fn default_when_nothing_matches() {
        let r = router(&[("user-agent", "java", "pycharm-ai")]);
        let d = r.decide(&headers(&[("user-agent", "curl/8")]));
        assert_eq!(&*d.user_id, "default");
        assert!(d.is_default && !d.custom_header_present && d.matched_pattern.is_none());
        assert_eq!(d.source(), "default");
        counted_under_its_source(&d);
        let d = r.decide(&HeaderMap::new());
        assert!(d.is_default);
    }

    #[test]
    fn non_utf8_values_match_on_the_lossy_string() {
        let r = router(&[
            ("user-agent", "^caf\u{fffd}x$", "lossy"),
            ("user-agent", "caf", "b"),
        ]);
        let mut h = HeaderMap::new();
        h.insert("user-agent", HeaderValue::from_bytes(b"caf\xffx").unwrap());
        assert_eq!(&*r.decide(&h).user_id, "lossy");
    }

    #[test]
    fn decision_serializes_as_the_info_endpoint() {
        let r = router(&[("user-agent", "OpenAIClientImpl/Java", "pycharm-ai")]);
        let d = r.decide(&headers(&[("user-agent", "OpenAIClientImpl/Java")]));
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"user_id":"pycharm-ai","matched_pattern":{"header":"user-agent","pattern":"OpenAIClientImpl/Java","user_id":"pycharm-ai"},"custom_header_present":false,"is_default":false}"#
        );
        let d = r.decide(&HeaderMap::new());
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"user_id":"default","matched_pattern":null,"custom_header_present":false,"is_default":true}"#
        );
    }

    #[test]
    fn set_too_big_falls_back_to_one_by_one() {
        let cfg = Config {
            patterns: vec![
                Pattern {
                    header: "x".into(),
                    pattern: "b".into(),
                    user_id: "b".into(),
                },
                Pattern {
                    header: "x".into(),
                    pattern: "a".into(),
                    user_id: "a".into(),
                },
            ],
            ..Config::default()
        };
        let mut r = MemoryRouter::new(&cfg).unwrap();
        assert!(matches!(r.groups[0].matcher, Matcher::Set(_)));
        r.groups[0].matcher = Matcher::Each;
        assert_eq!(&*r.decide(&headers(&[("x", "ab")])).user_id, "b");
        assert_eq!(&*r.decide(&headers(&[("x", "a")])).user_id, "a");
    }

    #[test]
    fn new_reports_every_problem() {
        let e = MemoryRouter::new(&Config {
            default_user_id: String::new(),
            patterns: vec![Pattern {
                header: "user-agent".into(),
                pattern: "(".into(),
                user_id: "u".into(),
            }],
            ..Config::default()
        })
        .unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
    }
}
