//! JSON strings written by hand, byte for byte as serde_json writes a `str`, so a line or a
//! key written without serde reads exactly as serde's would. Runs of bytes that need no escape
//! (most of any string) are found eight at a time ([`json_skim::string_stop`]) and passed on
//! whole; serde_json looks at each byte.
//!
//! [`json_skim::string_stop`]: crate::json_skim::string_stop

use crate::json_skim::string_stop;

/// The inside of `s` as a JSON string, passed to `emit` in pieces: runs of `s` that need no
/// escape, and escapes. As serde_json writes it: `"` and `\` after a backslash, `\b` `\t` `\n`
/// `\f` `\r` in their short forms, the other control characters as `\u00xx` (lower-case hex),
/// everything else as it is.
pub fn escape(s: &str, mut emit: impl FnMut(&str)) {
    let bytes = s.as_bytes();
    let mut start = 0;
    loop {
        let i = string_stop(bytes, start);
        // `i` is at an ASCII byte or the end: a character boundary.
        if i > start {
            emit(&s[start..i]);
        }
        let Some(&b) = bytes.get(i) else {
            return;
        };
        let mut unicode = *b"\\u00xx";
        emit(match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            b'\t' => "\\t",
            b'\n' => "\\n",
            0x0C => "\\f",
            b'\r' => "\\r",
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                unicode[4] = HEX[usize::from(b >> 4)];
                unicode[5] = HEX[usize::from(b & 0x0F)];
                // Always ASCII.
                std::str::from_utf8(&unicode).unwrap_or_default()
            }
        });
        start = i + 1;
    }
}

/// `s` as a JSON string, quotes included: the bytes `serde_json::to_writer(out, s)` writes.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    escape(s, |piece| out.extend_from_slice(piece.as_bytes()));
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        write_str(&mut out, s);
        out
    }

    #[test]
    fn every_ascii_character_at_every_offset_is_written_as_serde_writes_it() {
        // Both word positions and the tail, among plain and multi-byte neighbours.
        for c in (0u8..0x80)
            .map(char::from)
            .chain(['é', '🦀', '\u{80}', '\u{2028}'])
        {
            for at in 0..17 {
                for fill in ['a', 'é'] {
                    let mut s: String = std::iter::repeat_n(fill, 17).collect();
                    let byte_at = s.char_indices().nth(at).map_or(s.len(), |(i, _)| i);
                    s.insert(byte_at, c);
                    assert_eq!(written(&s), serde_json::to_vec(&s).unwrap(), "{s:?}");
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn any_string_is_written_as_serde_writes_it(
            s in proptest::string::string_regex("(\\PC|[\\x00-\\x1f\"\\\\\\x7f])*").unwrap(),
        ) {
            proptest::prop_assert_eq!(written(&s), serde_json::to_vec(&s).unwrap());
        }
    }
}
