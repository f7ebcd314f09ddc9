//! Stepping over JSON without reading it: where a value starts and ends, strings skipped
//! eight bytes at a time, no tree, no allocation.
//!
//! An LLM answer is mostly what a layer does not need (choices, their text, logprobs around
//! the few members it reads). These helpers find the members and the raw bytes of their
//! values; the caller reads the few it wants (often with serde, on tens of bytes instead of
//! the whole answer).
//!
//! # Not a validator
//!
//! The skim checks the structure it walks (matched brackets, quotes, colons and commas of
//! the objects it is asked to walk) and nothing inside the values it steps over: an invalid
//! number or escape deep inside a skipped value goes unnoticed. A caller that must refuse
//! what serde refuses keeps serde for the cases it must be exact about (see
//! [`crate::usage`]); [`string_stop`] is also the inner loop of the loop-detection layer's
//! validating scan.

/// The first index at or after `i` that is not JSON whitespace.
pub fn ws(b: &[u8], mut i: usize) -> usize {
    // Most calls find a token at once: every JSON whitespace byte is at most a space.
    while let Some(&c) = b.get(i) {
        if c > b' ' || !matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
            break;
        }
        i += 1;
    }
    i
}

/// The first byte at or after `i` that is `"`, `\` or a control character (or `b.len()`),
/// eight bytes at a time.
#[inline]
pub fn string_stop(b: &[u8], i: usize) -> usize {
    first_stop::<true>(b, i)
}

/// The first byte at or after `i` that is `"` or `\` (or `b.len()`), eight bytes at a time:
/// [`string_stop`] without the control characters, for finding a string's end (one test less
/// per word; [`string_end`] steps over a control character anyway).
#[inline]
pub fn quote_or_backslash(b: &[u8], i: usize) -> usize {
    first_stop::<false>(b, i)
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `w` that equals `c`. The lowest flagged byte is always a real
/// one (a false flag only follows a real one), which is all the scans below read.
const fn bytes_equal(w: u64, c: u8) -> u64 {
    let x = w ^ (ONES * c as u64);
    x.wrapping_sub(ONES) & !x & HIGHS
}

/// The first `"` or `\`, and with `CONTROLS` the first control character too.
#[inline(always)]
fn first_stop<const CONTROLS: bool>(b: &[u8], mut i: usize) -> usize {
    while let Some(word) = b.get(i..).and_then(<[u8]>::first_chunk::<8>) {
        let w = u64::from_le_bytes(*word);
        let mut stops = bytes_equal(w, b'"') | bytes_equal(w, b'\\');
        if CONTROLS {
            stops |= w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
        }
        if stops != 0 {
            return i + (stops.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || (CONTROLS && c < 0x20) {
            break;
        }
        i += 1;
    }
    i
}

/// Two object keys' order (byte order, as `str` and `[u8]` compare), decided by their first
/// bytes where those differ: keys of one object mostly differ there (`role` and `content`,
/// `model` and `messages`), and the comparison is then no call to `memcmp`.
///
/// ```
/// use portcullis_core::json_skim::key_order;
/// use std::cmp::Ordering;
///
/// for (a, b) in [("role", "content"), ("tool_calls", "tool_call_id"), ("a", "ab"), ("", "a")] {
///     assert_eq!(key_order(a.as_bytes(), b.as_bytes()), a.cmp(b), "{a:?} {b:?}");
///     assert_eq!(key_order(b.as_bytes(), a.as_bytes()), b.cmp(a), "{b:?} {a:?}");
/// }
/// assert_eq!(key_order(b"same", b"same"), Ordering::Equal);
/// ```
#[inline]
pub fn key_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    match (a.first(), b.first()) {
        (Some(x), Some(y)) if x != y => x.cmp(y),
        _ => a.cmp(b),
    }
}

/// A JSON number at `b[i]` that serde reads as an integer and prints back byte for byte: at
/// most 18 digits (so it fits an `i64` either way), no leading zero, no `-0`, no fraction or
/// exponent. Its value and the index just past it; `None` for any other number (and for what
/// is no number), which the caller leaves to serde.
///
/// ```
/// use portcullis_core::json_skim::plain_integer;
///
/// assert_eq!(plain_integer(b"[-42,", 1), Some((-42, 4)));
/// assert_eq!(plain_integer(b"0}", 0), Some((0, 1)));
/// for other in [&b"-0"[..], b"01", b"1.5", b"2e3", b"1234567890123456789", b"-", b"x"] {
///     assert_eq!(plain_integer(other, 0), None);
/// }
/// ```
pub fn plain_integer(b: &[u8], i: usize) -> Option<(i64, usize)> {
    let negative = *b.get(i)? == b'-';
    let digits = i + usize::from(negative);
    let mut end = digits;
    let mut n: i64 = 0;
    while let Some(&d @ b'0'..=b'9') = b.get(end) {
        if end - digits == 18 {
            return None;
        }
        n = n * 10 + i64::from(d - b'0');
        end += 1;
    }
    let count = end - digits;
    let plain = count >= 1 && (b[digits] != b'0' || (count == 1 && !negative));
    let whole = !matches!(b.get(end), Some(b'.' | b'e' | b'E'));
    (plain && whole).then_some((if negative { -n } else { n }, end))
}

/// The index just past the number-like run at `b[i]` (digits, signs, points, exponents): the
/// bytes to hand serde for a number [`plain_integer`] does not take.
pub fn number_end(b: &[u8], mut i: usize) -> usize {
    while let Some(b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') = b.get(i) {
        i += 1;
    }
    i
}

/// The character a short escape stands for: `n` (of `\n`) is a newline, `"` a quote, and so
/// on for `\` `/` `b` `f` `r` `t`; `None` for `u` (four hex digits follow) and for what is
/// no escape.
pub fn short_escape(after_backslash: u8) -> Option<char> {
    Some(match after_backslash {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        _ => return None,
    })
}

/// The most values (array items and object members, at any depth) a layer builds a tree of
/// from a request: far above what a provider serves but a body of token ids (OpenAI caps a
/// request at 300,000 tokens), and a few MB of any tree. A 10 MB body can hold five million
/// values (`0,0,0,…`), and a tree of them takes 25–30 times the body's size.
pub const MAX_VALUES: usize = 1 << 18;

/// Whether the JSON text `b` holds more than `n` values (array items and object members at
/// any depth; the document itself not counted): the commas outside strings and the
/// containers that are not empty, counted until there are more than `n`. For a caller about
/// to build a tree of a body (`serde_json::Value`, whose nodes are 32 bytes or more), which
/// can say no first. Text that is not JSON gets some count; the parse after it says what is
/// wrong.
///
/// ```
/// use portcullis_core::json_skim::more_values_than;
///
/// let b = br#"{"model":"m","input":[1,2,3],"x":{},"s":"a,b,[c"}"#;
/// assert!(!more_values_than(b, 7)); // four members, three items
/// assert!(more_values_than(b, 6));
/// ```
pub fn more_values_than(b: &[u8], n: usize) -> bool {
    let mut count = 0usize;
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'"' => match string_end::<false>(b, i) {
                Some(end) => {
                    i = end;
                    continue;
                }
                None => return false,
            },
            b',' => count += 1,
            b'[' | b'{' if !matches!(b.get(ws(b, i + 1)), Some(b']' | b'}')) => count += 1,
            _ => {}
        }
        if count > n {
            return true;
        }
        i += 1;
    }
    false
}

/// The index just past the string whose opening quote is at `i` (`None`: it does not end).
/// `NO_ESCAPES`: also `None` for a string with an escape in it (a key serde would unescape
/// before matching it).
pub fn string_end<const NO_ESCAPES: bool>(b: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    loop {
        // A control character is not JSON, but not the skim's to judge: it is stepped over.
        i = quote_or_backslash(b, i);
        match *b.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' if NO_ESCAPES => return None,
            // The escaped byte (`\"`, `\\`, or the `u` of `\uXXXX`) is not an end.
            _ => i += 2,
        }
    }
}

/// The index just past the value that starts at `b[i]`: strings by their quotes, containers
/// by their brackets (matched, nested up to 64 deep), scalars by the byte that ends them.
/// `None` where the value does not end or nests deeper.
pub fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => string_end::<false>(b, i),
        open @ (b'{' | b'[') => {
            // One bit per open container: 1 for an object.
            let mut stack: u64 = u64::from(open == b'{');
            let mut depth = 1u32;
            let mut i = i + 1;
            loop {
                match *b.get(i)? {
                    b'"' => i = string_end::<false>(b, i)?,
                    c @ (b'{' | b'[') => {
                        if depth == 64 {
                            return None;
                        }
                        stack = (stack << 1) | u64::from(c == b'{');
                        depth += 1;
                        i += 1;
                    }
                    c @ (b'}' | b']') => {
                        if (stack & 1 == 1) != (c == b'}') {
                            return None;
                        }
                        stack >>= 1;
                        depth -= 1;
                        i += 1;
                        if depth == 0 {
                            return Some(i);
                        }
                    }
                    _ => i += 1,
                }
            }
        }
        b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
            let mut i = i + 1;
            while let Some(c) = b.get(i) {
                if matches!(c, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t') {
                    break;
                }
                i += 1;
            }
            Some(i)
        }
        _ => None,
    }
}

/// Walks the JSON object that starts at `b[i]`, handing each member's key (without its
/// quotes, never with an escape) and raw value (no surrounding whitespace) to `each`; the
/// index just past the object. `None` where the object is not whole, a key has an escape,
/// or `each` says so.
///
/// ```
/// use portcullis_core::json_skim::object;
///
/// let b = br#"{"choices":[{"text":"}"}], "usage" : {"prompt_tokens":3}}"#;
/// let mut usage = None;
/// let end = object(b, 0, |key, value| {
///     if key == b"usage" {
///         usage = Some(value);
///     }
///     Some(())
/// });
/// assert_eq!(end, Some(b.len()));
/// assert_eq!(usage, Some(&br#"{"prompt_tokens":3}"#[..]));
/// ```
pub fn object<'a>(
    b: &'a [u8],
    i: usize,
    mut each: impl FnMut(&'a [u8], &'a [u8]) -> Option<()>,
) -> Option<usize> {
    object_reading(b, i, |key, start| {
        let end = skip_value(b, start)?;
        each(key, &b[start..end])?;
        Some(end)
    })
}

/// [`object`] for a caller that reads some values itself, so that they are walked once:
/// `each` gets each key and the index where its value starts (after whitespace), and gives
/// back the index just past the value (reading it, or with [`skip_value`]).
pub fn object_reading<'a>(
    b: &'a [u8],
    mut i: usize,
    mut each: impl FnMut(&'a [u8], usize) -> Option<usize>,
) -> Option<usize> {
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return Some(i + 1);
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let end = string_end::<true>(b, i)?;
        let key = &b[i + 1..end - 1];
        i = ws(b, end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = each(key, ws(b, i + 1))?;
        i = ws(b, i);
        match b.get(i) {
            Some(b',') => i = ws(b, i + 1),
            Some(b'}') => return Some(i + 1),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values of a document as serde reads it: items and members at any depth.
    fn values(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::Array(a) => a.len() + a.iter().map(values).sum::<usize>(),
            serde_json::Value::Object(o) => o.len() + o.values().map(values).sum::<usize>(),
            _ => 0,
        }
    }

    #[test]
    fn more_values_than_counts_what_serde_reads() {
        for doc in [
            &br#"{}"#[..],
            br#"[]"#,
            br#"0"#,
            br#" [ ] "#,
            br#"[{},[],{ },[ ]]"#,
            br#"{"a":[1,2,{"b":[3,{"c":"d,e[f{"}]}],"g":"\",[{"}"#,
            br#"{"k,":"v\\","[":{"}":[]}}"#,
            b"[\n 1 ,\n [ 2 , 3 ] ,{\"x\" : null}\n]",
        ] {
            let n = values(&serde_json::from_slice(doc).unwrap());
            let text = String::from_utf8_lossy(doc);
            assert!(!more_values_than(doc, n), "{text}: {n}");
            if n > 0 {
                assert!(more_values_than(doc, n - 1), "{text}: {n}");
            }
        }
        // A string that does not end: no count past it.
        assert!(!more_values_than(br#"[1,"2,3,4,5,6"#, 2));
    }

    #[test]
    fn string_stop_finds_the_first_stop_in_every_position() {
        for len in 0..24 {
            for at in 0..=len {
                for stop in [b'"', b'\\', 0x00, 0x1f] {
                    let mut b = vec![b'a'; len];
                    // High bytes and 0x20 next to the stop must not hide it.
                    for (j, x) in b.iter_mut().enumerate() {
                        *x = [b'a', 0xff, 0x20, 0x80][j % 4];
                    }
                    if at < len {
                        b[at] = stop;
                    }
                    assert_eq!(string_stop(&b, 0), at, "{len} {at} {stop}");
                }
            }
        }
    }

    #[test]
    fn quote_or_backslash_finds_the_first_in_every_position_and_steps_over_the_rest() {
        for len in 0..24 {
            for at in 0..=len {
                for stop in [b'"', b'\\'] {
                    // Control characters, high bytes and spaces are not stops.
                    let mut b: Vec<u8> = (0..len)
                        .map(|j| [b'a', 0xff, 0x00, 0x1f, 0x80][j % 5])
                        .collect();
                    if at < len {
                        b[at] = stop;
                    }
                    assert_eq!(quote_or_backslash(&b, 0), at, "{len} {at} {stop}");
                }
            }
        }
    }

    proptest::proptest! {
        /// From any start, the first quote or backslash is the one a byte-by-byte search
        /// finds, whatever lies before the start.
        #[test]
        fn quote_or_backslash_agrees_with_bytewise_from_any_start(
            b in proptest::collection::vec(
                proptest::sample::select(vec![b'a', b'"', b'\\', 0x00, 0x1f, b' ', b'!', b']', 0x7f, 0xff]),
                0..40,
            ),
            start in 0usize..44,
        ) {
            let want = (start..b.len())
                .find(|&j| b[j] == b'"' || b[j] == b'\\')
                .unwrap_or(b.len().max(start));
            proptest::prop_assert_eq!(quote_or_backslash(&b, start), want);
        }

        /// The string end agrees with a byte-by-byte one, wherever the quotes, backslashes
        /// and control characters fall against the eight-byte words.
        #[test]
        fn string_ends_agree_with_bytewise(
            body in proptest::collection::vec(
                proptest::sample::select(vec![b'a', b'"', b'\\', 0xC3, b' ', 0x7F, 0x01]),
                0..40,
            ),
        ) {
            let mut b = vec![b'"'];
            b.extend_from_slice(&body);
            let mut want = None;
            let mut i = 1;
            while i < b.len() {
                match b[i] {
                    b'"' => {
                        want = Some(i + 1);
                        break;
                    }
                    b'\\' => i += 2,
                    _ => i += 1,
                }
            }
            proptest::prop_assert_eq!(string_end::<false>(&b, 0), want);
            let plain = want.filter(|&end| !b[1..end].contains(&b'\\'));
            proptest::prop_assert_eq!(string_end::<true>(&b, 0), plain);
        }

        /// From any start, the first stop is the one a byte-by-byte search finds, whatever
        /// lies before the start.
        #[test]
        fn string_stop_agrees_with_bytewise_from_any_start(
            b in proptest::collection::vec(
                proptest::sample::select(
                    vec![b'a', b'"', b'\\', 0x00, 0x01, 0x1f, b' ', b'!', b'#', b']', 0x7f, 0xff],
                ),
                0..40,
            ),
            start in 0usize..44,
        ) {
            let want = (start..b.len())
                .find(|&j| b[j] == b'"' || b[j] == b'\\' || b[j] < 0x20)
                .unwrap_or(b.len().max(start));
            proptest::prop_assert_eq!(string_stop(&b, start), want);
        }

        /// Whatever the bytes (an upstream chose them), no panic, and an end is never past
        /// them.
        #[test]
        fn any_bytes_are_skimmed_without_panic(
            b in proptest::collection::vec(
                proptest::sample::select(b"{}[]\",:\\ 0a-nul\xff".to_vec()),
                0..64,
            ),
            at in 0usize..64,
        ) {
            let at = at.min(b.len());
            for end in [
                skip_value(&b, at),
                string_end::<false>(&b, at),
                string_end::<true>(&b, at),
                object(&b, at, |_, _| Some(())),
            ]
            .into_iter()
            .flatten()
            {
                proptest::prop_assert!(end <= b.len());
            }
            proptest::prop_assert!(ws(&b, at) <= b.len());
        }

        /// The count of any valid JSON value, written compact or pretty, is serde's: not more
        /// than its values, more than one fewer.
        #[test]
        fn more_values_than_is_serdes_count(value in json_value(), pretty in proptest::bool::ANY) {
            let v: serde_json::Value = serde_json::from_str(&value).unwrap();
            let text = match pretty {
                true => serde_json::to_string_pretty(&v).unwrap(),
                false => value,
            };
            let n = values(&v);
            proptest::prop_assert!(!more_values_than(text.as_bytes(), n), "{} {}", text, n);
            if n > 0 {
                proptest::prop_assert!(more_values_than(text.as_bytes(), n - 1), "{} {}", text, n);
            }
        }

        /// Any valid JSON value is stepped over to its exact end, whatever follows it.
        #[test]
        fn skip_value_ends_where_serde_ends(value in json_value(), tail in "[ ,}\\]]{0,2}") {
            let text = format!("{value}{tail}");
            proptest::prop_assert_eq!(skip_value(text.as_bytes(), 0), Some(value.len()));
        }
    }

    /// Valid JSON values (through serde_json, so escapes and numbers are as real ones are).
    fn json_value() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            (-1e9f64..1e9).prop_map(serde_json::Value::from),
            "[a-z\"\\\\{}\\[\\]\u{0}-\u{1f}é🦀 ]{0,20}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                prop::collection::btree_map("[a-z\"{}]{0,6}", inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
        .prop_map(|v| v.to_string())
    }

    #[test]
    fn objects_are_walked_and_broken_ones_refused() {
        let mut seen = Vec::new();
        let b = br#" { "a" : [1, {"b": "]"}] , "c":"\"" ,"d":-1.5e3,"e":{}} "#;
        let end = object(b, 1, |k, v| {
            seen.push((k.to_vec(), v.to_vec()));
            Some(())
        });
        assert_eq!(end, Some(b.len() - 1));
        assert_eq!(
            seen,
            [
                (b"a".to_vec(), br#"[1, {"b": "]"}]"#.to_vec()),
                (b"c".to_vec(), br#""\"""#.to_vec()),
                (b"d".to_vec(), b"-1.5e3".to_vec()),
                (b"e".to_vec(), b"{}".to_vec()),
            ]
        );
        for broken in [
            &b"{"[..],
            br#"{"a":1"#,
            br#"{"a":[}"#,
            br#"{"a" 1}"#,
            br#"{"a":1,}"#,
            br#"{"\u0061":1}"#,
            br#"{"a":"}"#,
            b"[1]",
        ] {
            assert_eq!(
                object(broken, 0, |_, _| Some(())),
                None,
                "{}",
                String::from_utf8_lossy(broken)
            );
        }
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert_eq!(skip_value(deep.as_bytes(), 0), None);
        let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert_eq!(skip_value(ok.as_bytes(), 0), Some(ok.len()));
    }
}
