//! The layer's configuration: which header carries the id upstream, how a client names its own
//! id, and the patterns that pick an id from the request's headers.

use http::HeaderName;
use portcullis_core::ConfigProblem;
use serde::{Deserialize, Serialize};

use crate::router;

/// Longest user id accepted, from the config or from a client's explicit header, in bytes.
pub const MAX_USER_ID_LEN: usize = 256;

/// Most patterns a config may have. Every request is matched against all of them (in one
/// pass per header with a `RegexSet`), so their number bounds the work a request costs.
pub const MAX_PATTERNS: usize = 100;

/// Configuration of the memory-routing layer.
///
/// Defaults are those of `[memory_routing]` in portcullis' interface. The binary's `enabled`
/// switch is not here: a disabled layer is simply not stacked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Header set on the upstream request to the chosen user id (`x-sm-user-id`).
    pub upstream_header: String,
    /// Header a client may send to name its user id explicitly (`x-memory-user-id`).
    /// It is removed before the request goes upstream.
    pub client_header: String,
    /// User id used when the client names none and no pattern matches (`default`).
    pub default_user_id: String,
    /// Patterns tried in order; the first whose regex matches its header's value wins.
    /// At most [`MAX_PATTERNS`].
    pub patterns: Vec<Pattern>,
    /// Whether a client may name its own user id (`true`, the default): `client_header`, or
    /// an `upstream_header` it already sends. `false`: both are ignored, and dropped (the
    /// upstream header is replaced by the decided id), so a client cannot pick the id that
    /// rate limits and the dedup key use. A [`BoundUserId`](portcullis_core::BoundUserId)
    /// (a gateway key's `user_id`) wins over both either way.
    pub trust_client_header: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            upstream_header: "x-sm-user-id".to_owned(),
            client_header: "x-memory-user-id".to_owned(),
            default_user_id: "default".to_owned(),
            patterns: Vec::new(),
            trust_client_header: true,
        }
    }
}

/// One routing rule: when `header`'s value matches `pattern`, the user id is `user_id`.
///
/// Header names are case-insensitive; the regex is matched case-insensitively and unanchored
/// (`OpenAIClientImpl/Java` matches anywhere in the value; use `^`/`$` to anchor). A `.` is
/// any character: write `api\.openai\.com` (in TOML: `'api\.openai\.com'`) for a literal dot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pattern {
    /// Request header whose value is matched, e.g. `user-agent`.
    pub header: String,
    /// Regular expression (Rust `regex` syntax), matched case-insensitively.
    pub pattern: String,
    /// User id given to requests this pattern matches.
    pub user_id: String,
}

impl Config {
    /// Every problem that stops this config from loading, each with its key path relative to
    /// the section (`patterns[3].pattern: invalid regex: unclosed group`).
    ///
    /// Regexes are compiled exactly as [`MemoryRouter`](crate::MemoryRouter) compiles them,
    /// so a config that validates also loads.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        check_header_name(&mut problems, "upstream_header", &self.upstream_header);
        check_header_name(&mut problems, "client_header", &self.client_header);
        check_user_id(&mut problems, "default_user_id", &self.default_user_id);
        if self.patterns.len() > MAX_PATTERNS {
            problems.push(ConfigProblem::new(
                "patterns",
                format!(
                    "{} patterns: at most {MAX_PATTERNS} (each request is matched against all of them)",
                    self.patterns.len()
                ),
            ));
        }
        for (i, p) in self.patterns.iter().enumerate() {
            check_header_name(&mut problems, &format!("patterns[{i}].header"), &p.header);
            if let Err(e) = router::build_regex(&p.pattern) {
                problems.push(ConfigProblem::new(
                    format!("patterns[{i}].pattern"),
                    format!("invalid regex: {}", one_line(&e)),
                ));
            }
            check_user_id(&mut problems, &format!("patterns[{i}].user_id"), &p.user_id);
        }
        problems
    }

    /// Things that load but are almost certainly not what the user meant.
    ///
    /// - A pattern that can never win because an earlier pattern on the same header always
    ///   matches (it matches the empty string with no anchors, like `.*`, `""`, `.*?`, `a*`;
    ///   or it is `^`, `$`, `^.*`, `.*$`, `^.*$`), or is an exact duplicate of an earlier one.
    /// - An unescaped `.` between two letters (`api.openai.com`): it matches any character,
    ///   so `apixopenai.com` matches too. Only letter-dot-letter is flagged: dots in versions
    ///   (`claude-cli/1.0`) are left alone because over-matching a digit there is harmless and
    ///   warning about every version number would be noise.
    pub fn warnings(&self) -> Vec<ConfigProblem> {
        let mut warnings = Vec::new();
        for (i, p) in self.patterns.iter().enumerate() {
            let path = format!("patterns[{i}].pattern");
            let header = p.header.trim();
            let shadow = self.patterns[..i]
                .iter()
                .enumerate()
                .filter(|(_, q)| q.header.trim().eq_ignore_ascii_case(header))
                .find_map(|(j, q)| {
                    if always_matches(&q.pattern) {
                        Some(format!(
                            "can never match: patterns[{j}] (same header, pattern {:?}) always matches first",
                            q.pattern
                        ))
                    } else if q.pattern == p.pattern {
                        Some(format!(
                            "can never match: patterns[{j}] has the same header and pattern and comes first"
                        ))
                    } else {
                        None
                    }
                });
            if let Some(message) = shadow {
                warnings.push(ConfigProblem::new(path.clone(), message));
            }
            if let Some(fixed) = escape_domain_dots(&p.pattern) {
                warnings.push(ConfigProblem::new(
                    path,
                    format!(
                        "unescaped \".\" matches any character, not just a dot; for a literal \
                         dot write '{fixed}' (a TOML literal string keeps the backslashes)"
                    ),
                ));
            }
        }
        warnings
    }
}

fn check_header_name(problems: &mut Vec<ConfigProblem>, path: &str, name: &str) {
    if name.is_empty() {
        problems.push(ConfigProblem::new(path, "must not be empty"));
    } else if HeaderName::from_bytes(name.as_bytes()).is_err() {
        problems.push(ConfigProblem::new(
            path,
            format!("{name:?} is not a valid header name"),
        ));
    }
}

fn check_user_id(problems: &mut Vec<ConfigProblem>, path: &str, id: &str) {
    if id.is_empty() {
        problems.push(ConfigProblem::new(path, "must not be empty"));
    } else if !is_valid_user_id(id) {
        problems.push(ConfigProblem::new(
            path,
            format!(
                "{id:?} is not a valid header value: use printable ASCII without leading or \
                 trailing spaces, at most {MAX_USER_ID_LEN} bytes"
            ),
        ));
    }
}

/// A user id that can be sent as a header value as-is and shown in logs and JSON safely:
/// 1 to [`MAX_USER_ID_LEN`] bytes of printable ASCII, no leading or trailing space.
pub(crate) fn is_valid_user_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_USER_ID_LEN
        && id.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !id.starts_with(' ')
        && !id.ends_with(' ')
}

/// The regex crate's errors span several lines (pattern, caret, message); `check` prints one
/// problem per line, so keep the message (and where it points) only.
fn one_line(e: &regex::Error) -> String {
    match e {
        regex::Error::Syntax(s) => {
            let lines: Vec<&str> = s.lines().collect();
            let message = lines
                .iter()
                .find_map(|l| l.trim().strip_prefix("error:"))
                .map(str::trim);
            let caret = lines.iter().find_map(|l| {
                let t = l.trim_start();
                t.starts_with('^').then(|| l.len() - t.len())
            });
            match (message, caret) {
                // The pattern line above the caret is indented by 4 spaces.
                (Some(m), Some(col)) if col >= 4 => format!("{m} (at byte {})", col - 4),
                (Some(m), _) => m.to_owned(),
                _ => lines
                    .iter()
                    .map(|l| l.trim())
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
                    .join(" "),
            }
        }
        regex::Error::CompiledTooBig(limit) => {
            format!("compiled regex is too big (size limit {limit} bytes)")
        }
        other => other.to_string().replace('\n', " "),
    }
}

/// Whether a regex matches every header value, so no later pattern on its header can win.
///
/// Cheap and conservative: a regex whose shortest match is empty and that has no look-around
/// matches at offset 0 of any haystack; so does one whose only assertions are start-of-text
/// (or only end-of-text). `^.*$` needs a special case: `.` does not match `\n`, but header
/// values never contain one.
pub(crate) fn always_matches(pattern: &str) -> bool {
    let trimmed = pattern
        .strip_prefix('^')
        .and_then(|p| p.strip_suffix('$'))
        .unwrap_or("");
    if matches!(
        trimmed,
        ".*" | ".*?" | "(.*)" | "(.*?)" | "(?s).*" | "(?s:.*)"
    ) {
        return true;
    }
    let Ok(hir) = regex_syntax::ParserBuilder::new()
        .case_insensitive(true)
        .build()
        .parse(pattern)
    else {
        return false;
    };
    let props = hir.properties();
    if props.minimum_len() != Some(0) {
        return false;
    }
    use regex_syntax::hir::{Look, LookSet};
    let looks = props.look_set();
    let starts = LookSet::empty().insert(Look::Start).insert(Look::StartLF);
    let ends = LookSet::empty().insert(Look::End).insert(Look::EndLF);
    // Only start assertions, or only end assertions (an empty set is both).
    looks.subtract(starts).is_empty() || looks.subtract(ends).is_empty()
}

/// If `pattern` has an unescaped `.` between two ASCII letters outside a character class
/// (`api.openai.com`), the pattern with those dots escaped; otherwise `None`.
fn escape_domain_dots(pattern: &str) -> Option<String> {
    let bytes = pattern.as_bytes();
    let mut flagged = Vec::new();
    let mut in_class = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1, // skip the escaped byte
            b'[' if !in_class => in_class = true,
            b']' if in_class => in_class = false,
            b'.' if !in_class
                && i > 0
                && bytes[i - 1].is_ascii_alphabetic()
                // a letter preceded by `\` is an escape like `\w.`, not a word
                && !(i > 1 && bytes[i - 2] == b'\\')
                && bytes.get(i + 1).is_some_and(u8::is_ascii_alphabetic) =>
            {
                flagged.push(i);
            }
            _ => {}
        }
        i += 1;
    }
    if flagged.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(pattern.len() + flagged.len());
    let mut last = 0;
    for at in flagged {
        out.push_str(&pattern[last..at]);
        out.push_str("\\.");
        last = at + 1;
    }
    out.push_str(&pattern[last..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(header: &str, pattern: &str, user_id: &str) -> Pattern {
        Pattern {
            header: header.into(),
            pattern: pattern.into(),
            user_id: user_id.into(),
        }
    }

    fn paths(problems: &[ConfigProblem]) -> Vec<String> {
        problems.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn defaults_match_the_interface() {
        let c = Config::default();
        assert_eq!(c.upstream_header, "x-sm-user-id");
        assert_eq!(c.client_header, "x-memory-user-id");
        assert_eq!(c.default_user_id, "default");
        assert!(c.patterns.is_empty());
        assert!(c.validate().is_empty());
        assert!(c.warnings().is_empty());
    }

    #[test]
    fn deserializes_with_defaults_and_rejects_unknown_keys() {
        let c: Config = serde_json::from_str(
            r#"{"patterns":[{"header":"user-agent","pattern":"OpenAIClientImpl/Java","user_id":"pycharm-ai"}]}"#,
        )
        .unwrap();
        assert_eq!(c.upstream_header, "x-sm-user-id");
        assert_eq!(c.patterns.len(), 1);
        let e = serde_json::from_str::<Config>(r#"{"patern":[]}"#).unwrap_err();
        assert!(e.to_string().contains("patern"), "{e}");
        let e = serde_json::from_str::<Config>(
            r#"{"patterns":[{"header":"a","pattern":"b","user_id":"c","userid":"d"}]}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("userid"), "{e}");
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let c = Config {
            upstream_header: "bad header".into(),
            client_header: String::new(),
            default_user_id: String::new(),
            patterns: vec![
                pat("user-agent", "ok", "a"),
                pat("x(y", "fine", "b"),
                pat("user-agent", "fine", ""),
                pat("user-agent", "api.(openai", "c"),
                pat("user-agent", "[z-a]", "d\u{e9}"),
            ],
            trust_client_header: true,
        };
        let got = paths(&c.validate());
        assert_eq!(got.len(), 8, "{got:#?}");
        assert!(got[0].starts_with("upstream_header: \"bad header\" is not a valid header name"));
        assert_eq!(got[1], "client_header: must not be empty");
        assert_eq!(got[2], "default_user_id: must not be empty");
        assert!(got[3].starts_with("patterns[1].header: "), "{}", got[3]);
        assert_eq!(got[4], "patterns[2].user_id: must not be empty");
        assert_eq!(
            got[5],
            "patterns[3].pattern: invalid regex: unclosed group (at byte 4)"
        );
        assert!(
            got[6].starts_with("patterns[4].pattern: invalid regex: invalid character class range"),
            "{}",
            got[6]
        );
        // A pattern with two problems reports both.
        assert!(got[7].starts_with("patterns[4].user_id: "), "{}", got[7]);
    }

    #[test]
    fn bad_regex_message_is_one_line() {
        for bad in ["(", "a{2,1}", "[", "\\p{Nope}", "(?<n>a)(?<n>b)"] {
            let c = Config {
                patterns: vec![pat("user-agent", bad, "u")],
                ..Config::default()
            };
            let problems = c.validate();
            assert_eq!(problems.len(), 1, "{bad}: {problems:?}");
            assert_eq!(problems[0].path, "patterns[0].pattern");
            assert!(!problems[0].message.contains('\n'), "{:?}", problems[0]);
            assert!(problems[0].message.starts_with("invalid regex: "));
        }
    }

    #[test]
    fn huge_regex_is_a_problem_not_a_hang() {
        let c = Config {
            patterns: vec![pat("user-agent", r"\w{1000}\w{1000}", "u")],
            ..Config::default()
        };
        let problems = c.validate();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].message.contains("size limit"), "{problems:?}");
    }

    #[test]
    fn user_ids_must_be_header_safe() {
        assert!(is_valid_user_id("pycharm-ai"));
        assert!(is_valid_user_id("a b"));
        assert!(!is_valid_user_id(""));
        assert!(!is_valid_user_id(" a"));
        assert!(!is_valid_user_id("a\t"));
        assert!(!is_valid_user_id("caf\u{e9}"));
        assert!(!is_valid_user_id("a\nb"));
        assert!(is_valid_user_id(&"x".repeat(MAX_USER_ID_LEN)));
        assert!(!is_valid_user_id(&"x".repeat(MAX_USER_ID_LEN + 1)));
    }

    #[test]
    fn always_matches_is_right_and_conservative() {
        for p in [
            "", ".*", ".*?", "^", "$", "^.*", ".*$", "^.*$", "(.*)", "a*", "(?:foo)?", "(?m)^",
            "^(.*)$", "^.*?$", "x*|y",
        ] {
            assert!(always_matches(p), "{p:?}");
            // Cross-check with the regex crate on a few haystacks.
            let re = crate::router::build_regex(p).unwrap();
            for h in ["", "abc", "OpenAIClientImpl/Java", "\u{fffd}"] {
                assert!(re.is_match(h), "{p:?} on {h:?}");
            }
        }
        for p in ["^$", ".+", "a", "^a*$", "\\b", "^|a$", "(", "a+"] {
            assert!(!always_matches(p), "{p:?}");
        }
    }

    #[test]
    fn warns_about_shadowed_patterns() {
        let c = Config {
            patterns: vec![
                pat("x-client", "ide", "a"),
                pat("User-Agent", ".*", "catch-all"),
                pat("user-agent", "Claude", "claude"),
                pat("x-client", "ide", "dup"),
                pat("x-other", "b", "b"),
            ],
            ..Config::default()
        };
        let got = paths(&c.warnings());
        assert_eq!(
            got,
            vec![
                "patterns[2].pattern: can never match: patterns[1] (same header, pattern \".*\") always matches first".to_owned(),
                "patterns[3].pattern: can never match: patterns[0] has the same header and pattern and comes first".to_owned(),
            ]
        );
        // A catch-all on another header does not shadow.
        let c = Config {
            patterns: vec![pat("x-client", "", "a"), pat("user-agent", "Claude", "b")],
            ..Config::default()
        };
        assert!(c.warnings().is_empty());
    }

    #[test]
    fn warns_about_domain_like_unescaped_dots_only() {
        assert_eq!(
            escape_domain_dots("api.openai.com").as_deref(),
            Some(r"api\.openai\.com")
        );
        for quiet in [
            r"api\.openai\.com",
            "claude-cli/1.0",
            "Claude.*",
            "[a.b]",
            r"\w.x",
            "OpenAIClientImpl/Java",
        ] {
            assert_eq!(escape_domain_dots(quiet), None, "{quiet}");
        }
        let c = Config {
            patterns: vec![pat("host", "api.openai.com", "a")],
            ..Config::default()
        };
        let w = paths(&c.warnings());
        assert_eq!(
            w,
            vec![
                r#"patterns[0].pattern: unescaped "." matches any character, not just a dot; for a literal dot write 'api\.openai\.com' (a TOML literal string keeps the backslashes)"#
            ]
        );
    }
}
