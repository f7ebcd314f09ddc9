//! A borrowed JSON tree: one parse per request, and no allocation for keys or strings that
//! have no escapes.
//!
//! # Why not `serde_json::Value`?
//!
//! `Value` owns every key and string, so a 100 KB chat request costs thousands of small
//! allocations and copies before a single rule runs. This tree borrows from the request bytes
//! instead (escaped strings, which serde_json must unescape, are the only copies) and keeps
//! objects as vectors, which is faster to build than a map for the handful of keys a request has.
//! The bench `parse` group measures both.

use std::{borrow::Cow, fmt};

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A JSON number as serde_json reports it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Num {
    /// A non-negative integer.
    U(u64),
    /// A negative integer.
    I(i64),
    /// Anything with a fraction or exponent, or an integer too large for 64 bits.
    F(f64),
}

impl Num {
    pub(crate) fn as_f64(self) -> f64 {
        match self {
            Num::U(u) => u as f64,
            Num::I(i) => i as f64,
            Num::F(f) => f,
        }
    }

    /// The value if it was written as an integer.
    pub(crate) fn as_int(self) -> Option<i128> {
        match self {
            Num::U(u) => Some(i128::from(u)),
            Num::I(i) => Some(i128::from(i)),
            Num::F(_) => None,
        }
    }
}

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Num::U(u) => write!(f, "{u}"),
            Num::I(i) => write!(f, "{i}"),
            // Debug keeps the ".0" so "must be an integer, got 100.0" makes sense.
            Num::F(x) => write!(f, "{x:?}"),
        }
    }
}

/// A parsed JSON value borrowing from the input.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Node<'a> {
    Null,
    Bool(bool),
    Num(Num),
    Str(Cow<'a, str>),
    Arr(Vec<Node<'a>>),
    /// Keys in document order, duplicates kept (so strict mode can reject them).
    Obj(Vec<(Cow<'a, str>, Node<'a>)>),
}

impl<'a> Node<'a> {
    /// How the type of this value is named in error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "a boolean",
            Node::Num(_) => "a number",
            Node::Str(_) => "a string",
            Node::Arr(_) => "an array",
            Node::Obj(_) => "an object",
        }
    }

    /// The value of `key` in an object; the last one wins if a key repeats, as with
    /// `serde_json::Value` and most JSON parsers upstream.
    pub(crate) fn get(&self, key: &str) -> Option<&Node<'a>> {
        match self {
            Node::Obj(fields) => fields.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Parse `body` as one JSON value (serde_json's syntax, depth limit and error messages).
pub(crate) fn parse(body: &[u8]) -> Result<Node<'_>, serde_json::Error> {
    serde_json::from_slice(body)
}

impl<'de> Deserialize<'de> for Node<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Node::Num(if v >= 0 { Num::U(v as u64) } else { Num::I(v) }))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Node::Num(Num::U(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Node::Num(Num::F(v)))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Node::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Node::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Node::Str(Cow::Owned(v)))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Node::Null)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Node::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Arr(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some(Key(k)) = map.next_key()? {
            fields.push((k, map.next_value()?));
        }
        Ok(Node::Obj(fields))
    }
}

/// An object key, borrowed when it has no escapes (`Cow<str>`'s own impl always copies).
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }

            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_serde_json_and_borrows_plain_strings() {
        let body = br#"{"a":[1,-2,3.5,true,null,"x"],"b\n":"y\"z","a":{}}"#;
        let n = parse(body).unwrap();
        let Node::Obj(fields) = &n else {
            panic!("not an object: {n:?}")
        };
        assert_eq!(fields.len(), 3);
        assert!(matches!(fields[0].0, Cow::Borrowed("a")));
        assert!(matches!(fields[1].0, Cow::Owned(ref k) if k == "b\n"));
        assert_eq!(fields[1].1, Node::Str(Cow::Owned("y\"z".into())));
        assert_eq!(
            fields[0].1,
            Node::Arr(vec![
                Node::Num(Num::U(1)),
                Node::Num(Num::I(-2)),
                Node::Num(Num::F(3.5)),
                Node::Bool(true),
                Node::Null,
                Node::Str(Cow::Borrowed("x")),
            ])
        );
        // The last duplicate wins, as in serde_json::Value.
        assert_eq!(n.get("a"), Some(&Node::Obj(vec![])));
    }

    #[test]
    fn numbers_keep_integer_ness() {
        assert_eq!(Num::U(3).as_int(), Some(3));
        assert_eq!(Num::I(-3).as_int(), Some(-3));
        assert_eq!(Num::F(3.0).as_int(), None);
        let big = parse(b"100000000000000000000").unwrap();
        assert!(matches!(big, Node::Num(Num::F(_))));
    }

    #[test]
    fn syntax_errors_carry_position_and_depth_is_limited() {
        let e = parse(b"{\"a\": }").unwrap_err();
        assert!(e.to_string().contains("line 1 column 7"), "{e}");
        let deep = "[".repeat(10_000);
        let e = parse(deep.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("recursion limit"), "{e}");
        assert!(parse(b"{} x").is_err());
        assert!(parse(b"\"\xff\"").is_err());
    }
}
