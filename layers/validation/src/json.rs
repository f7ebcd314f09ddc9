//! A borrowed JSON tree in one arena: one parse per request, no allocation for a string value
//! (escaped or not, it is unescaped only when a rule reads it) or for a key without escapes,
//! and the containers' nodes in one [`Bump`] freed at once.
//!
//! # Why not `serde_json::Value`?
//!
//! `Value` owns every key and string, so a 100 KB chat request costs thousands of small
//! allocations and copies before a single rule runs. This tree borrows from the request bytes
//! instead ([`Text`]) and keeps objects as slices, which is faster to build than a map for
//! the handful of keys a request has. The bench `parse` group measures both.
//!
//! # Why an arena?
//!
//! A 100 KB conversation is ~1,100 arrays and objects. As vectors of their own they were
//! ~1,100 allocations made in a burst, the same freed in a burst by a walk over every node,
//! and jemalloc's thread cache overflowing both ways: ~18 % of the bare gateway's CPU at
//! `moderate` on such a body (benches/HISTORY.md, round 19). In a [`Bump`] a container's
//! nodes are one slice, copied in exactly sized when the container ends (its items wait on a
//! stack until then), and the tree holds nothing to drop (a node is `Copy`): the arena is
//! freed whole when the request's check is done.
//!
//! # Why a budget?
//!
//! A node is 24 bytes and a body can hold one value every two bytes (`0,0,0,…`): a 10 MB body
//! made a tree, and the stack it waits on, of ~270 MB, once per worker validating such a body
//! at the time. A tree holds at most [`MAX_VALUES`] values (~6 MB of nodes); past that the
//! walk stops and says so ([`Failure::TooManyValues`]), and the caller reads only what it must.

use std::{borrow::Cow, cell::Cell, fmt, io::Write as _};

use bumpalo::{collections::Vec as BumpVec, Bump};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

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

    fn of(n: &serde_json::Number) -> Option<Num> {
        n.as_u64()
            .map(Num::U)
            .or_else(|| n.as_i64().map(Num::I))
            .or_else(|| n.as_f64().map(Num::F))
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

/// A JSON string value, unescaped only when read: most of a request's text (messages, code,
/// tool results) is only ever type-checked, and unescaping it was most of the tree's cost.
/// Read with [`Text::text`]; equal when the unescaped texts are.
#[derive(Clone, Copy)]
pub(crate) struct Text<'a>(TextInner<'a>);

#[derive(Clone, Copy)]
enum TextInner<'a> {
    /// The text itself, unescaped already (by serde, into the arena).
    Plain(&'a str),
    /// The text itself, as written: without escapes (so also as `serde_json` writes it).
    Written(&'a str),
    /// The text between the quotes, whose escapes are all short ones (`\n`, `\"`…; never
    /// `\u`), unescaped on each read (rules read few strings, and seldom escaped ones).
    Escaped(&'a str),
}

impl<'a> Text<'a> {
    pub(crate) fn plain(s: &'a str) -> Self {
        Self(TextInner::Plain(s))
    }

    /// The text, unescaped.
    pub(crate) fn text(&self) -> Cow<'a, str> {
        match self.0 {
            TextInner::Plain(s) | TextInner::Written(s) => Cow::Borrowed(s),
            TextInner::Escaped(raw) => Cow::Owned(unescape_short(raw)),
        }
    }

    /// Whether the text is empty (without unescaping it: escaped text never is).
    pub(crate) fn is_empty(&self) -> bool {
        match self.0 {
            TextInner::Plain(s) | TextInner::Written(s) => s.is_empty(),
            TextInner::Escaped(_) => false,
        }
    }
}

/// `raw` with its short escapes replaced by what they stand for (the walk let no other kind
/// through; a lone backslash at the end cannot occur, the walk saw the closing quote after it).
fn unescape_short(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let after = rest.as_bytes().get(at + 1).copied().unwrap_or(b'\\');
        out.push(portcullis_core::json_skim::short_escape(after).unwrap_or('\\'));
        rest = rest.get(at + 2..).unwrap_or_default();
    }
    out.push_str(rest);
    out
}

impl PartialEq for Text<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.text() == other.text()
    }
}

impl PartialEq<str> for Text<'_> {
    fn eq(&self, other: &str) -> bool {
        self.text() == other
    }
}

impl fmt::Debug for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.text(), f)
    }
}

/// A parsed JSON value borrowing from the input and from the arena it was built in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Node<'a> {
    Null,
    Bool(bool),
    Num(Num),
    Str(Text<'a>),
    Arr(&'a [Node<'a>]),
    /// Keys in document order, duplicates kept (so strict mode can reject them).
    Obj(&'a [(&'a str, Node<'a>)]),
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
            // The first bytes compared before the rest: the keys of a request's objects are
            // often of one length (`role`, `name`, `type`, `text`), and telling them apart by
            // their first byte spares a call to compare the rest.
            Node::Obj(fields) => fields
                .iter()
                .rev()
                .find(|(k, _)| {
                    k.len() == key.len() && k.bytes().next() == key.bytes().next() && *k == key
                })
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

/// The canonical JSON form of a tree, the dedup key's (`portcullis_dedup_cache::canonical_json`
/// of the body it was parsed from, byte for byte; a property test holds the two together):
/// object members in key order at every depth (a stable sort, repeated keys kept in their
/// order), no whitespace, strings and numbers as `serde_json` writes them. Written from the
/// tree, it costs a fraction of a second walk over the body: the strings are known slices,
/// most of them copied as written. `body` is what the tree was parsed from.
pub(crate) fn write_canonical(node: &Node<'_>, body: &[u8], out: &mut Vec<u8>) {
    Canonical {
        out,
        order: Vec::new(),
        body,
    }
    .node(node);
}

/// Objects of at most this many members are sorted on the stack.
const SMALL: usize = 8;

/// [`write_canonical`]'s state.
struct Canonical<'o, 'b> {
    out: &'o mut Vec<u8>,
    /// The member order of the objects being written, each after those of the objects
    /// around it.
    order: Vec<usize>,
    /// The body the tree was parsed from. A key borrowed from it has no escape (both parsers
    /// borrow only those), so it is written as it is; a member whose key and text are both
    /// borrowed, with nothing but the colon between them (a compact body), is copied whole.
    body: &'b [u8],
}

impl Canonical<'_, '_> {
    fn node(&mut self, node: &Node<'_>) {
        let out = &mut *self.out;
        match *node {
            Node::Null => out.extend_from_slice(b"null"),
            Node::Bool(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
            Node::Num(n) => {
                // As serde writes what it read: integers by `Display`, the rest by `ryu`.
                let _ = match n {
                    Num::U(u) => write!(out, "{u}"),
                    Num::I(i) => write!(out, "{i}"),
                    Num::F(f) => {
                        serde_json::to_writer(&mut *out, &f).map_err(std::io::Error::other)
                    }
                };
            }
            Node::Str(t) => match as_written(&t) {
                Some(raw) => verbatim(out, raw),
                None => self.rewritten(&t),
            },
            Node::Arr(items) => {
                out.push(b'[');
                for (n, item) in items.iter().enumerate() {
                    if n > 0 {
                        self.out.push(b',');
                    }
                    self.node(item);
                }
                self.out.push(b']');
            }
            Node::Obj(members) => {
                out.push(b'{');
                if members.is_sorted_by(|a, b| key_order(a.0, b.0).is_le()) {
                    for (n, (key, value)) in members.iter().enumerate() {
                        self.member(n, key, value);
                    }
                } else if let [a, b] = members {
                    // Two out of order (most objects of a request: `role` before `content`,
                    // `type` before `text`): swapped, with no sort.
                    self.member(0, b.0, &b.1);
                    self.member(1, a.0, &a.1);
                } else if members.len() <= SMALL {
                    // A handful: sorted by insertion in an array on the stack.
                    let mut order = [0u8; SMALL];
                    for i in 1..members.len() {
                        let mut j = i;
                        while j > 0
                            && key_order(members[usize::from(order[j - 1])].0, members[i].0).is_gt()
                        {
                            order[j] = order[j - 1];
                            j -= 1;
                        }
                        order[j] = i as u8;
                    }
                    for (n, &at) in order[..members.len()].iter().enumerate() {
                        let (key, value) = &members[usize::from(at)];
                        self.member(n, key, value);
                    }
                } else {
                    let base = self.order.len();
                    self.order.extend(0..members.len());
                    self.order[base..].sort_by(|&a, &b| key_order(members[a].0, members[b].0));
                    for n in 0..members.len() {
                        let (key, value) = &members[self.order[base + n]];
                        self.member(n, key, value);
                    }
                    self.order.truncate(base);
                }
                self.out.push(b'}');
            }
        }
    }

    /// A text that is not written as it was: unescaped, and escaped again as serde does.
    fn rewritten(&mut self, t: &Text<'_>) {
        match t.0 {
            TextInner::Written(raw) | TextInner::Escaped(raw) => {
                portcullis_core::json_escape::write_str(self.out, &unescape_short(raw));
            }
            TextInner::Plain(s) => portcullis_core::json_escape::write_str(self.out, s),
        }
    }

    /// The `n`th member written of an object: its comma, key, colon and value.
    fn member(&mut self, n: usize, key: &str, value: &Node<'_>) {
        if n > 0 {
            self.out.push(b',');
        }
        let Some(k) = self.offset(key) else {
            // Unescaped into the arena: it may need escaping again.
            if portcullis_core::json_skim::string_stop(key.as_bytes(), 0) == key.len() {
                verbatim(self.out, key);
            } else {
                portcullis_core::json_escape::write_str(self.out, key);
            }
            self.out.push(b':');
            return self.node(value);
        };
        if let Node::Str(t) = value {
            if let Some(raw) = as_written(t) {
                // `"key":"text"`: the text starts three bytes after the key's end (its
                // quote, the colon, the text's quote) only when the body has nothing else
                // between them.
                let whole = self
                    .offset(raw)
                    .filter(|&v| v == k + key.len() + 3)
                    .and_then(|v| self.body.get(k.checked_sub(1)?..v + raw.len() + 1));
                match whole {
                    Some(run) => self.out.extend_from_slice(run),
                    None => {
                        verbatim(self.out, key);
                        self.out.push(b':');
                        verbatim(self.out, raw);
                    }
                }
                return;
            }
        }
        verbatim(self.out, key);
        self.out.push(b':');
        self.node(value);
    }

    /// Where `s` starts in the body, if it was borrowed from it.
    fn offset(&self, s: &str) -> Option<usize> {
        let at = s.as_ptr().addr().checked_sub(self.body.as_ptr().addr())?;
        (at < self.body.len()).then_some(at)
    }
}

/// A text as it is written in the body, when that is how serde writes it (most of a
/// request's text): with no escape, or with short ones only, which are the ones serde writes
/// except `\/` (serde writes `/`). A text with `\/` in it (or `\\/`, a backslash and a
/// slash, which is as written) is written again. One search for the pair (vectorised), not one
/// for a slash and then another for the pair: code, which most long escaped texts are, has
/// slashes.
#[inline]
fn as_written<'a>(t: &Text<'a>) -> Option<&'a str> {
    match t.0 {
        TextInner::Written(raw) => Some(raw),
        TextInner::Escaped(raw) if !portcullis_core::holds!(raw.as_bytes(), b"\\/") => Some(raw),
        _ => None,
    }
}

/// A string's text as written, in quotes.
fn verbatim(out: &mut Vec<u8>, raw: &str) {
    out.reserve(raw.len() + 2);
    out.push(b'"');
    out.extend_from_slice(raw.as_bytes());
    out.push(b'"');
}

/// Two keys' order (as `str`'s), mostly without a call to compare them.
#[inline]
fn key_order(a: &str, b: &str) -> std::cmp::Ordering {
    portcullis_core::json_skim::key_order(a.as_bytes(), b.as_bytes())
}

/// The most values (array items and object members, at any depth) a tree holds: ~6 MB of
/// nodes. See the [module](self) for why.
pub(crate) use portcullis_core::json_skim::MAX_VALUES;

/// Why [`parse`] gave no tree.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Not JSON: serde's error.
    Json(serde_json::Error),
    /// More than the budget's values: the walk stopped there, and nothing says whether the
    /// rest is JSON.
    TooManyValues,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Json(e) => fmt::Display::fmt(e, f),
            Failure::TooManyValues => write!(f, "more than {MAX_VALUES} values"),
        }
    }
}

/// Parse `body` as one JSON value (serde_json's syntax, depth limit and error messages),
/// building the tree in `arena`, of at most [`MAX_VALUES`] values.
///
/// The tree is built by [`fast::document`] where it can be, and by serde otherwise: serde's
/// visitor costs about 28 instructions a byte on an agent's 100 KB conversation (most of it
/// spent on strings, checked for UTF-8 one at a time), the walk below a fraction of that.
/// What serde refuses, the walk leaves to serde too, so every error is serde's own.
pub(crate) fn parse<'a>(body: &'a [u8], arena: &'a Bump) -> Result<Node<'a>, Failure> {
    parse_within(body, arena, MAX_VALUES)
}

/// [`parse`] with a tree of at most `budget` values.
pub(crate) fn parse_within<'a>(
    body: &'a [u8],
    arena: &'a Bump,
    budget: usize,
) -> Result<Node<'a>, Failure> {
    match fast::document(body, arena, budget) {
        Ok(node) => Ok(node),
        Err(fast::Stop::Budget) => Err(Failure::TooManyValues),
        Err(fast::Stop::Unsure) => parse_by_serde(body, arena, budget),
    }
}

/// [`parse`], except that an object at the top keeps only the members named in `keep` (each
/// other member is checked as [`parse`] checks it, and stepped over): for a caller that reads
/// a few members of what may be a large body. Accepts and refuses exactly what [`parse`]
/// does, with the same errors (a document the walk leaves to serde is read by serde the same
/// way: the kept members built, the others checked).
/// The members kept count against the same budget as [`parse`]'s tree.
pub(crate) fn parse_members<'a>(
    body: &'a [u8],
    keep: &[&str],
    arena: &'a Bump,
) -> Result<Node<'a>, Failure> {
    parse_members_within(body, keep, arena, MAX_VALUES)
}

/// [`parse_members`] with at most `budget` values kept.
pub(crate) fn parse_members_within<'a>(
    body: &'a [u8],
    keep: &[&str],
    arena: &'a Bump,
    budget: usize,
) -> Result<Node<'a>, Failure> {
    match fast::members(body, keep, arena, budget) {
        Ok(node) => Ok(node),
        Err(fast::Stop::Budget) => Err(Failure::TooManyValues),
        Err(fast::Stop::Unsure) => match body.get(portcullis_core::json_skim::ws(body, 0)) {
            Some(b'{') => {
                let left = Budget::new(budget);
                by_serde(
                    body,
                    &left,
                    Members {
                        arena,
                        left: &left,
                        keep,
                    },
                )
            }
            _ => parse_by_serde(body, arena, budget),
        },
    }
}

/// [`parse`] by serde alone: the tree the fast walk must build, of at most `budget` values.
fn parse_by_serde<'a>(body: &'a [u8], arena: &'a Bump, budget: usize) -> Result<Node<'a>, Failure> {
    let left = Budget::new(budget);
    by_serde(body, &left, Seed(arena, &left))
}

/// `body` read by serde with `seed`, which counts its values in `left`.
fn by_serde<'a, S: DeserializeSeed<'a, Value = Node<'a>>>(
    body: &'a [u8],
    left: &Budget,
    seed: S,
) -> Result<Node<'a>, Failure> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = seed.deserialize(&mut de).and_then(|node| {
        de.end()?;
        Ok(node)
    });
    match parsed {
        Ok(node) => Ok(node),
        Err(_) if left.spent.get() => Err(Failure::TooManyValues),
        Err(e) => Err(Failure::Json(e)),
    }
}

/// The values a tree may still hold, for the walk and for serde's reading alike.
struct Budget {
    left: Cell<usize>,
    /// Set when a value was refused for want of budget.
    spent: Cell<bool>,
}

impl Budget {
    fn new(values: usize) -> Self {
        Self {
            left: Cell::new(values),
            spent: Cell::new(false),
        }
    }

    /// One value more, if there is room; `false` (and [`Budget::spent`] set) once there is
    /// none.
    #[inline(always)]
    fn take(&self) -> bool {
        match self.left.get().checked_sub(1) {
            Some(left) => {
                self.left.set(left);
                true
            }
            None => {
                self.spent.set(true);
                false
            }
        }
    }

    /// [`Budget::take`] as serde's error.
    fn spend<E: de::Error>(&self) -> Result<(), E> {
        match self.take() {
            true => Ok(()),
            false => Err(E::custom("too many values")),
        }
    }
}

/// The tree of a document made of what request bodies are made of, in one walk: string
/// values borrowed as written when their escapes are the short ones (`\n`, `\"`…), keys
/// unescaped here; integers of up to 18 digits; literals; arrays and objects. A `\u` escape
/// or a number in another form is read by serde, as the few bytes it is. Anything it is
/// unsure of (nesting deeper than [`fast::MAX_DEPTH`], a byte out of place, a control
/// character in a string) gives `None`, and serde reads the whole document: the walk never
/// decides what is JSON, and the tree it builds is serde's (a property test holds the two
/// together).
///
/// The same walk checks a value without building it ([`fast::Check`]): [`parse_members`]
/// builds only the top-level members a caller reads and steps over the rest, with every
/// check the tree's walk makes, so it accepts exactly what [`parse`] accepts.
mod fast {
    use bumpalo::{collections::String as BumpString, Bump};
    use portcullis_core::json_skim::{number_end, plain_integer, short_escape, string_stop, ws};

    use super::{Budget, Node, Num, Text, TextInner};

    /// Deeper than this, serde decides (its own limit is 127).
    pub(super) const MAX_DEPTH: u32 = 64;

    /// What the walk makes of an object's members: the tree's ([`Tree`]), nothing
    /// ([`Check`]), or only the named ones ([`Members`]). Every one makes the same checks;
    /// only what is kept differs.
    pub(super) trait Fields<'a> {
        type Value;
        /// A key as kept.
        type Key;
        /// Where an object's members start.
        type Fields;

        fn fields(&mut self) -> Self::Fields;
        /// The key whose quote is at `i`, and where it ends.
        fn key(&mut self, t: &'a str, i: usize) -> Option<(Self::Key, usize)>;
        /// Read the value of the member `name` at `at`; where it ends.
        fn member(&mut self, name: Self::Key, t: &'a str, at: usize, depth: u32) -> Option<usize>;
        /// The object whose members started at `fields`.
        fn object(&mut self, fields: Self::Fields) -> Self::Value;
    }

    /// What the walk makes of any value: [`Fields`] for objects, and the rest.
    pub(super) trait Build<'a>: Fields<'a> {
        /// Where an array's items start.
        type Items;

        fn items(&mut self) -> Self::Items;
        /// A scalar's value (read already by the walk: `Check` drops it unbuilt).
        fn scalar(node: Node<'a>) -> Self::Value;
        /// The string value whose quote is at `i`, and where it ends.
        fn string(&mut self, t: &'a str, i: usize) -> Option<(Self::Value, usize)>;
        /// Read the item at `at`; where it ends.
        fn item(&mut self, t: &'a str, at: usize, depth: u32) -> Option<usize>;
        /// The array whose items started at `items`.
        fn array(&mut self, items: Self::Items) -> Self::Value;
    }

    /// Builds the tree: the items and members of the containers being read wait on two
    /// stacks, and each container is copied into the arena, exactly sized, when it ends (a
    /// vector growing in the arena would leave its old buffers there).
    pub(super) struct Tree<'a> {
        arena: &'a Bump,
        items: Vec<Node<'a>>,
        fields: Vec<(&'a str, Node<'a>)>,
        /// The values (items and members) it may still hold.
        budget: Budget,
    }

    impl<'a> Tree<'a> {
        pub(super) fn new(arena: &'a Bump, budget: usize) -> Self {
            Self {
                arena,
                items: Vec::new(),
                fields: Vec::new(),
                budget: Budget::new(budget),
            }
        }

        /// One value more, if the budget has room (it is taken before the value is read, so
        /// no container grows past it).
        #[inline(always)]
        fn spend(&mut self) -> Option<()> {
            self.budget.take().then_some(())
        }
    }

    /// Why the walk gave no tree.
    pub(super) enum Stop {
        /// Serde decides (see [`document`]).
        Unsure,
        /// The budget ran out.
        Budget,
    }

    impl Stop {
        fn of(tree: &Tree<'_>) -> Self {
            match tree.budget.spent.get() {
                true => Stop::Budget,
                false => Stop::Unsure,
            }
        }
    }

    /// The entries of `stack` from `start` on, moved into the arena exactly sized.
    #[inline(always)]
    fn pop_into<'a, T: Copy>(arena: &'a Bump, stack: &mut Vec<T>, start: usize) -> &'a [T] {
        let slice = arena.alloc_slice_copy(stack.get(start..).unwrap_or_default());
        stack.truncate(start);
        slice
    }

    /// Checks, and keeps nothing.
    pub(super) struct Check;

    /// The object at the top, with only the members named here built (all of them, in
    /// order, duplicates too); the others are checked.
    pub(super) struct Members<'a, 'k>(Tree<'a>, &'k [&'k str]);

    impl<'a> Fields<'a> for Tree<'a> {
        type Value = Node<'a>;
        type Key = &'a str;
        type Fields = usize;

        #[inline(always)]
        fn fields(&mut self) -> usize {
            self.fields.len()
        }

        #[inline(always)]
        fn key(&mut self, t: &'a str, i: usize) -> Option<(&'a str, usize)> {
            key(t, i, self.arena)
        }

        #[inline(always)]
        fn member(&mut self, name: &'a str, t: &'a str, at: usize, depth: u32) -> Option<usize> {
            self.spend()?;
            let (v, end) = value(self, t, at, depth)?;
            self.fields.push((name, v));
            Some(end)
        }

        #[inline(always)]
        fn object(&mut self, start: usize) -> Node<'a> {
            Node::Obj(pop_into(self.arena, &mut self.fields, start))
        }
    }

    impl<'a> Build<'a> for Tree<'a> {
        type Items = usize;

        #[inline(always)]
        fn items(&mut self) -> usize {
            self.items.len()
        }

        #[inline(always)]
        fn scalar(node: Node<'a>) -> Node<'a> {
            node
        }

        #[inline(always)]
        fn string(&mut self, t: &'a str, i: usize) -> Option<(Node<'a>, usize)> {
            text(t, i, self.arena).map(|(s, end)| (Node::Str(s), end))
        }

        #[inline(always)]
        fn item(&mut self, t: &'a str, at: usize, depth: u32) -> Option<usize> {
            self.spend()?;
            let (item, end) = value(self, t, at, depth)?;
            self.items.push(item);
            Some(end)
        }

        #[inline(always)]
        fn array(&mut self, start: usize) -> Node<'a> {
            Node::Arr(pop_into(self.arena, &mut self.items, start))
        }
    }

    impl<'a> Fields<'a> for Check {
        type Value = ();
        type Key = ();
        type Fields = ();

        #[inline(always)]
        fn fields(&mut self) {}

        #[inline(always)]
        fn key(&mut self, t: &'a str, i: usize) -> Option<((), usize)> {
            string_end(t, i).map(|end| ((), end))
        }

        #[inline(always)]
        fn member(&mut self, (): (), t: &'a str, at: usize, depth: u32) -> Option<usize> {
            value(self, t, at, depth).map(|((), end)| end)
        }

        #[inline(always)]
        fn object(&mut self, (): ()) {}
    }

    impl<'a> Build<'a> for Check {
        type Items = ();

        #[inline(always)]
        fn items(&mut self) {}

        #[inline(always)]
        fn scalar(_: Node<'a>) {}

        #[inline(always)]
        fn string(&mut self, t: &'a str, i: usize) -> Option<((), usize)> {
            string_end(t, i).map(|end| ((), end))
        }

        #[inline(always)]
        fn item(&mut self, t: &'a str, at: usize, depth: u32) -> Option<usize> {
            value(self, t, at, depth).map(|((), end)| end)
        }

        #[inline(always)]
        fn array(&mut self, (): ()) {}
    }

    impl<'a> Fields<'a> for Members<'a, '_> {
        type Value = Node<'a>;
        type Key = &'a str;
        type Fields = usize;

        fn fields(&mut self) -> usize {
            self.0.fields()
        }

        fn key(&mut self, t: &'a str, i: usize) -> Option<(&'a str, usize)> {
            self.0.key(t, i)
        }

        fn member(&mut self, name: &'a str, t: &'a str, at: usize, depth: u32) -> Option<usize> {
            match self.1.contains(&name) {
                true => self.0.member(name, t, at, depth),
                false => Check.member((), t, at, depth),
            }
        }

        fn object(&mut self, start: usize) -> Node<'a> {
            self.0.object(start)
        }
    }

    /// The tree of `b`, of at most `budget` values.
    pub(super) fn document<'a>(
        b: &'a [u8],
        arena: &'a Bump,
        budget: usize,
    ) -> Result<Node<'a>, Stop> {
        let mut tree = Tree::new(arena, budget);
        whole(b, |t, i| value(&mut tree, t, i, 0)).ok_or_else(|| Stop::of(&tree))
    }

    /// The document as [`document`] reads it, but an object at the top keeps only the
    /// members `keep` names (see [`Members`]), at most `budget` values in them. Any other
    /// document is built whole.
    pub(super) fn members<'a>(
        b: &'a [u8],
        keep: &[&str],
        arena: &'a Bump,
        budget: usize,
    ) -> Result<Node<'a>, Stop> {
        match b.get(ws(b, 0)) {
            Some(b'{') => {
                let mut some = Members(Tree::new(arena, budget), keep);
                whole(b, |t, i| object(&mut some, t, i, 1)).ok_or_else(|| Stop::of(&some.0))
            }
            _ => document(b, arena, budget),
        }
    }

    /// The one value that is all of `b` (but whitespace), as `read` reads it from its
    /// first byte.
    fn whole<'a, V>(
        b: &'a [u8],
        read: impl FnOnce(&'a str, usize) -> Option<(V, usize)>,
    ) -> Option<V> {
        // UTF-8 checked once for every string (JSON text is UTF-8 throughout).
        let text = std::str::from_utf8(b).ok()?;
        let (v, end) = read(text, ws(b, 0))?;
        (ws(b, end) == b.len()).then_some(v)
    }

    fn value<'a, B: Build<'a>>(
        build: &mut B,
        t: &'a str,
        i: usize,
        depth: u32,
    ) -> Option<(B::Value, usize)> {
        let b = t.as_bytes();
        let scalar = |(node, end)| (B::scalar(node), end);
        match *b.get(i)? {
            b'"' => build.string(t, i),
            b'{' => object(build, t, i, depth + 1),
            b'[' => array(build, t, i, depth + 1),
            b't' => literal(b, i, b"true", Node::Bool(true)).map(scalar),
            b'f' => literal(b, i, b"false", Node::Bool(false)).map(scalar),
            b'n' => literal(b, i, b"null", Node::Null).map(scalar),
            b'-' | b'0'..=b'9' => number(t, i).map(scalar),
            _ => None,
        }
    }

    fn literal<'a>(b: &[u8], i: usize, word: &[u8], node: Node<'a>) -> Option<(Node<'a>, usize)> {
        let end = i + word.len();
        (b.get(i..end)? == word).then_some((node, end))
    }

    /// The key whose quote is at `i`: borrowed when it has no escapes, unescaped into the
    /// arena when they are all short ones, serde's (copied into the arena) when one is `\u`.
    #[inline(always)]
    fn key<'a>(t: &'a str, i: usize, arena: &'a Bump) -> Option<(&'a str, usize)> {
        let b = t.as_bytes();
        let stop = string_stop(b, i + 1);
        match *b.get(stop)? {
            b'"' => return Some((between(t, i + 1, stop)?, stop + 1)),
            b'\\' => {}
            _ => return None, // a control character: not JSON
        }
        // Sized once to the escaped text, which the unescaped never outgrows.
        let escaped_end = portcullis_core::json_skim::string_end::<false>(b, i)?;
        let mut owned = BumpString::with_capacity_in(escaped_end - i, arena);
        owned.push_str(t.get(i + 1..stop)?);
        let mut j = stop;
        loop {
            // `b[j]` is a backslash.
            let Some(short) = short_escape(*b.get(j + 1)?) else {
                return serde_string(t, i, arena);
            };
            owned.push(short);
            let run = j + 2;
            j = string_stop(b, run);
            owned.push_str(t.get(run..j)?);
            match *b.get(j)? {
                b'"' => return Some((owned.into_bump_str(), j + 1)),
                b'\\' => {}
                _ => return None,
            }
        }
    }

    /// A string value: borrowed, and when it has escapes (all short ones) kept as it is
    /// written, to be unescaped if a rule ever reads it; serde's (copied into the arena)
    /// when one is `\u`.
    #[inline(always)]
    fn text<'a>(t: &'a str, i: usize, arena: &'a Bump) -> Option<(Text<'a>, usize)> {
        let b = t.as_bytes();
        let mut j = string_stop(b, i + 1);
        let mut escaped = false;
        loop {
            match *b.get(j)? {
                b'"' => break,
                b'\\' if short_escape(*b.get(j + 1)?).is_some() => {
                    escaped = true;
                    j = string_stop(b, j + 2);
                }
                b'\\' => {
                    let (s, end) = serde_string(t, i, arena)?;
                    return Some((Text::plain(s), end));
                }
                _ => return None, // a control character: not JSON
            }
        }
        let raw = between(t, i + 1, j)?;
        let text = Text(match escaped {
            false => TextInner::Written(raw),
            true => TextInner::Escaped(raw),
        });
        Some((text, j + 1))
    }

    /// `t[from..to]`, the text of a string between its quotes (always on character
    /// boundaries: the bytes around are ASCII).
    #[inline(always)]
    fn between(t: &str, from: usize, to: usize) -> Option<&str> {
        let (head, _) = t.split_at_checked(to)?;
        Some(head.split_at_checked(from)?.1)
    }

    /// Where the string whose quote is at `i` ends, checked as [`text`] and [`key`] check
    /// it (the same escapes pass), and nothing kept.
    fn string_end(t: &str, i: usize) -> Option<usize> {
        let b = t.as_bytes();
        let mut j = string_stop(b, i + 1);
        loop {
            match *b.get(j)? {
                b'"' => return Some(j + 1),
                b'\\' if short_escape(*b.get(j + 1)?).is_some() => j = string_stop(b, j + 2),
                b'\\' => return serde_unescaped(t, i).map(|(_, end)| end),
                _ => return None, // a control character: not JSON
            }
        }
    }

    /// The string whose quote is at `i`, as serde reads it (for one with a `\u` escape), and
    /// where it ends.
    fn serde_unescaped(t: &str, i: usize) -> Option<(String, usize)> {
        let end = portcullis_core::json_skim::string_end::<false>(t.as_bytes(), i)?;
        let s: String = serde_json::from_str(t.get(i..end)?).ok()?;
        Some((s, end))
    }

    /// [`serde_unescaped`], copied into the arena.
    fn serde_string<'a>(t: &'a str, i: usize, arena: &'a Bump) -> Option<(&'a str, usize)> {
        serde_unescaped(t, i).map(|(s, end)| (&*arena.alloc_str(&s), end))
    }

    /// An integer of at most 18 digits without a sign on zero is read here (it fits serde's
    /// u64 or i64); any other number is serde's.
    fn number<'a>(t: &str, i: usize) -> Option<(Node<'a>, usize)> {
        let b = t.as_bytes();
        if let Some((n, end)) = plain_integer(b, i) {
            let num = u64::try_from(n).map_or(Num::I(n), Num::U);
            return Some((Node::Num(num), end));
        }
        let end = number_end(b, i);
        let n: serde_json::Number = serde_json::from_str(t.get(i..end)?).ok()?;
        Some((Node::Num(Num::of(&n)?), end))
    }

    /// The array whose `[` is at `i`, nested `depth` deep.
    fn array<'a, B: Build<'a>>(
        build: &mut B,
        t: &'a str,
        i: usize,
        depth: u32,
    ) -> Option<(B::Value, usize)> {
        if depth > MAX_DEPTH {
            return None;
        }
        let b = t.as_bytes();
        let items = build.items();
        let mut i = ws(b, i + 1);
        if b.get(i) == Some(&b']') {
            return Some((build.array(items), i + 1));
        }
        loop {
            i = ws(b, build.item(t, i, depth)?);
            match *b.get(i)? {
                b',' => i = ws(b, i + 1),
                b']' => return Some((build.array(items), i + 1)),
                _ => return None,
            }
        }
    }

    /// The object whose `{` is at `i`, nested `depth` deep.
    fn object<'a, B: Fields<'a>>(
        build: &mut B,
        t: &'a str,
        i: usize,
        depth: u32,
    ) -> Option<(B::Value, usize)> {
        if depth > MAX_DEPTH {
            return None;
        }
        let b = t.as_bytes();
        let fields = build.fields();
        let mut i = ws(b, i + 1);
        if b.get(i) == Some(&b'}') {
            return Some((build.object(fields), i + 1));
        }
        loop {
            if b.get(i) != Some(&b'"') {
                return None;
            }
            let (name, end) = build.key(t, i)?;
            i = ws(b, end);
            if b.get(i) != Some(&b':') {
                return None;
            }
            i = ws(b, build.member(name, t, ws(b, i + 1), depth)?);
            match *b.get(i)? {
                b',' => i = ws(b, i + 1),
                b'}' => return Some((build.object(fields), i + 1)),
                _ => return None,
            }
        }
    }
}

/// serde's reading of a value into the arena: for what the fast walk leaves to serde.
#[derive(Clone, Copy)]
struct Seed<'a, 'b>(&'a Bump, &'b Budget);

impl<'de> DeserializeSeed<'de> for Seed<'de, '_> {
    type Value = Node<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Node<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'de, '_> {
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
        Ok(Node::Str(Text::plain(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Node::Str(Text::plain(self.0.alloc_str(v))))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Node::Null)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = BumpVec::with_capacity_in(seq.size_hint().unwrap_or(0).min(64), self.0);
        while let Some(item) = seq.next_element_seed(self)? {
            self.1.spend()?;
            items.push(item);
        }
        Ok(Node::Arr(items.into_bump_slice()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = BumpVec::with_capacity_in(map.size_hint().unwrap_or(0).min(64), self.0);
        while let Some(k) = map.next_key_seed(KeySeed(self.0))? {
            self.1.spend()?;
            fields.push((k, map.next_value_seed(self)?));
        }
        Ok(Node::Obj(fields.into_bump_slice()))
    }
}

/// serde's reading of the object at the top of a document, keeping only the members `keep`
/// names (in order, repeated ones too) and checking the others as [`Seed`] reads them (the
/// same recursion limit and errors: serde's own `IgnoredAny` has no recursion limit), for
/// [`parse_members`].
struct Members<'a, 'b, 'k> {
    arena: &'a Bump,
    left: &'b Budget,
    keep: &'k [&'k str],
}

impl<'de> DeserializeSeed<'de> for Members<'de, '_, '_> {
    type Value = Node<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Node<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Members<'de, '_, '_> {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = BumpVec::new_in(self.arena);
        while let Some(k) = map.next_key_seed(KeySeed(self.arena))? {
            match self.keep.contains(&k) {
                true => {
                    let v = map.next_value_seed(Seed(self.arena, self.left))?;
                    self.left.spend()?;
                    fields.push((k, v));
                }
                false => map.next_value_seed(Checked)?,
            }
        }
        Ok(Node::Obj(fields.into_bump_slice()))
    }
}

/// serde's reading of a value that is checked and not kept: the way [`Seed`] reads it
/// (`deserialize_any`, so the same errors and recursion limit), nothing built.
#[derive(Clone, Copy)]
struct Checked;

impl<'de> DeserializeSeed<'de> for Checked {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Checked {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(self)?.is_some() {
            map.next_value_seed(self)?;
        }
        Ok(())
    }
}

/// An object key: borrowed when it has no escapes, copied into the arena otherwise.
#[derive(Clone, Copy)]
struct KeySeed<'a>(&'a Bump);

impl<'de> DeserializeSeed<'de> for KeySeed<'de> {
    type Value = &'de str;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<&'de str, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'de> {
    type Value = &'de str;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.alloc_str(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_serde_json_and_borrows_plain_strings() {
        let arena = Bump::new();
        let body = br#"{"a":[1,-2,3.5,true,null,"x"],"b\n":"y\"z","a":{}}"#;
        let n = parse(body, &arena).unwrap();
        let Node::Obj(fields) = &n else {
            panic!("not an object: {n:?}")
        };
        assert_eq!(fields.len(), 3);
        // A key without escapes is the body's own bytes; an escaped one is unescaped.
        let in_body = |k: &str| body.as_ptr_range().contains(&k.as_ptr());
        assert!(fields[0].0 == "a" && in_body(fields[0].0));
        assert!(fields[1].0 == "b\n" && !in_body(fields[1].0));
        assert_eq!(fields[1].1, Node::Str(Text::plain("y\"z")));
        assert_eq!(
            fields[0].1,
            Node::Arr(&[
                Node::Num(Num::U(1)),
                Node::Num(Num::I(-2)),
                Node::Num(Num::F(3.5)),
                Node::Bool(true),
                Node::Null,
                Node::Str(Text::plain("x")),
            ])
        );
        // The last duplicate wins, as in serde_json::Value.
        assert_eq!(n.get("a"), Some(&Node::Obj(&[])));
    }

    #[test]
    fn escaped_text_is_kept_as_written_and_reads_unescaped() {
        let arena = Bump::new();
        let n = parse(
            br#"{"content":"line\nquote\" slash\/ tab\t","role":"plain"}"#,
            &arena,
        )
        .unwrap();
        let Some(Node::Str(content)) = n.get("content") else {
            panic!("{n:?}")
        };
        assert!(matches!(content.0, TextInner::Escaped(..)));
        assert!(!content.is_empty());
        assert_eq!(content.text(), "line\nquote\" slash/ tab\t");
        assert_eq!(
            format!("{content:?}"),
            format!("{:?}", "line\nquote\" slash/ tab\t")
        );
        assert!(matches!(
            n.get("role"),
            Some(Node::Str(Text(TextInner::Written("plain"))))
        ));
        let n = parse(br#"["line\nquote\""]"#, &arena).unwrap();
        assert!(matches!(
            n,
            Node::Arr([Node::Str(Text(TextInner::Escaped(..)))])
        ));
        // A `\u` escape is serde's to read.
        let n = parse(br#"["\u00e9\n"]"#, &arena).unwrap();
        assert_eq!(n, Node::Arr(&[Node::Str(Text::plain("é\n"))]));
    }

    #[test]
    fn numbers_keep_integer_ness() {
        let arena = Bump::new();
        assert_eq!(Num::U(3).as_int(), Some(3));
        assert_eq!(Num::I(-3).as_int(), Some(-3));
        assert_eq!(Num::F(3.0).as_int(), None);
        let big = parse(b"100000000000000000000", &arena).unwrap();
        assert!(matches!(big, Node::Num(Num::F(_))));
    }

    #[test]
    fn syntax_errors_carry_position_and_depth_is_limited() {
        let arena = Bump::new();
        let e = parse(b"{\"a\": }", &arena).unwrap_err();
        assert!(e.to_string().contains("line 1 column 7"), "{e}");
        let deep = "[".repeat(10_000);
        let e = parse(deep.as_bytes(), &arena).unwrap_err();
        assert!(e.to_string().contains("recursion limit"), "{e}");
        assert!(parse(b"{} x", &arena).is_err());
        assert!(parse(b"\"\xff\"", &arena).is_err());
    }

    /// The fast walk's answer is serde's: the same tree, or (where serde refuses) serde's error.
    fn same_as_serde(doc: &[u8]) {
        let arena = Bump::new();
        match (parse(doc, &arena), parse_by_serde(doc, &arena, MAX_VALUES)) {
            (Ok(fast), Ok(serde)) => assert_eq!(fast, serde, "{}", String::from_utf8_lossy(doc)),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            (a, b) => panic!("{}: {a:?} / {b:?}", String::from_utf8_lossy(doc)),
        }
    }

    #[test]
    fn the_fast_walk_builds_serdes_tree() {
        for doc in [
            &br#"{"model":"m","messages":[{"role":"user","content":"line\nbreak \"q\" \\ \/ \t\r\b\f"}]}"#[..],
            br#"{"u":"\u00e9\ud83e\udd80","n":[0,-1,7,123456789012345678,-123456789012345678,1234567890123456789,-0,0.0,1e2,-2.5E-3,18446744073709551616]}"#,
            br#" [ true , false , null , { } , [ ] , "" ] "#,
            br#"{"a":1,"a":2}"#,
            "{\"é\":\"🦀\"}".as_bytes(),
            b"[01]",
            b"[1,]",
            b"[-]",
            b"[1.]",
            b"{\"a\" 1}",
            b"{\"a\":1,}",
            b"[\"\\x\"]",
            b"[\"\\ud800\"]",
            b"\"ctl\x01\"",
            b"\"\xff\"",
            b"[nul]",
            b"[1]x",
            b"",
        ] {
            same_as_serde(doc);
        }
        for depth in [MAX_DEPTH - 1, MAX_DEPTH, 127, 128] {
            let d = depth as usize;
            same_as_serde(format!("{}{}", "[".repeat(d), "]".repeat(d)).as_bytes());
            same_as_serde(format!("{}0{}", "{\"k\":".repeat(d), "}".repeat(d)).as_bytes());
        }
    }

    /// [`parse_members`] answers as [`parse`] does: the same errors, the same kind of root,
    /// and in an object the same named members (the others left out).
    /// What the tree of `doc` writes as its canonical form is what the dedup key's own
    /// walk writes for `doc`, byte for byte (for each document the walk accepts).
    fn canonical_as_dedup(doc: &[u8]) {
        let arena = Bump::new();
        if let Ok(tree) = parse(doc, &arena) {
            let mut out = Vec::new();
            write_canonical(&tree, doc, &mut out);
            let dedup = portcullis_dedup_cache::canonical_json(doc);
            assert_eq!(
                Some(String::from_utf8_lossy(&out)),
                dedup.as_deref().map(String::from_utf8_lossy),
                "{}",
                String::from_utf8_lossy(doc)
            );
        }
    }

    #[test]
    fn the_canonical_form_is_the_dedup_keys() {
        for doc in [
            &br#"{"model":"m","messages":[{"role":"user","content":"line\nbreak \"q\" \\ \/ \t\r\b\f"}]}"#[..],
            br#"{"b":[1,-2,3.50,1e3,-0,12345678901234567890,1E-7],"a":{"y":null,"x":true},"a":false}"#,
            br#"{"\u0062":1,"a":"\u00e9\u001f","c\/d":"x\\/y"}"#,
            br#" [ { "z" : "\"" , "" : 0 } , "\ud83e\udd80" ] "#,
            br#"{"model":1,"messages":2,"ab":3,"a":4}"#,
            // Keys unescaped into the arena that must be escaped again.
            br#"{"q\"uote":1,"back\\slash":2,"tab\tbed":3,"nul\u0000":4,"plain":5}"#,
            b"\"text\"",
            b"-0.0",
        ] {
            canonical_as_dedup(doc);
        }
    }

    fn members_as_parse(doc: &[u8], keep: &[&str]) {
        let arena = Bump::new();
        type Kept<'a> = Result<Vec<(&'a str, Node<'a>)>, Node<'a>>;
        fn kept<'a>(n: &Node<'a>, keep: &[&str]) -> Kept<'a> {
            match n {
                Node::Obj(fields) => Ok(fields
                    .iter()
                    .filter(|(k, _)| keep.contains(k))
                    .copied()
                    .collect()),
                other => Err(*other),
            }
        }
        match (parse_members(doc, keep, &arena), parse(doc, &arena)) {
            (Ok(some), Ok(all)) => {
                assert_eq!(
                    kept(&some, keep),
                    kept(&all, keep),
                    "{}",
                    String::from_utf8_lossy(doc)
                );
            }
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            (a, b) => panic!("{}: {a:?} / {b:?}", String::from_utf8_lossy(doc)),
        }
    }

    #[test]
    fn members_are_built_only_at_the_top_and_the_rest_is_still_checked() {
        let arena = Bump::new();
        let keep = ["model", "stream"];
        let doc = br#"{"model":"a","messages":[{"model":"nested","x":[1,{"y":null}]}],"stream":true,"model":"b"}"#;
        let n = parse_members(doc, &keep, &arena).unwrap();
        assert_eq!(
            n,
            Node::Obj(&[
                ("model", Node::Str(Text::plain("a"))),
                ("stream", Node::Bool(true)),
                ("model", Node::Str(Text::plain("b"))),
            ])
        );
        assert_eq!(n.get("model"), Some(&Node::Str(Text::plain("b"))));
        // A key spelled with an escape is the key it stands for.
        let n = parse_members(br#"{"mod\u0065l":"m","m\/":1}"#, &keep, &arena).unwrap();
        assert_eq!(n.get("model"), Some(&Node::Str(Text::plain("m"))));
        // What is not JSON in a member nobody reads is still not JSON, with serde's message.
        for bad in [
            &br#"{"model":"m","messages":[{"content":"\u12"}]}"#[..],
            b"{\"model\":\"m\",\"x\":\"raw\ttab\"}",
            br#"{"model":"m","x":[1,]}"#,
            br#"{"model":"m","x":{"a" 1}}"#,
            br#"{"model":"m","x":01}"#,
            br#"{"model":"m","x":tru}"#,
            br#"{"model":"m"} {}"#,
        ] {
            members_as_parse(bad, &keep);
            assert!(
                parse_members(bad, &keep, &arena).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // Any other document comes back whole.
        assert_eq!(
            parse_members(b"[1]", &keep, &arena).unwrap(),
            Node::Arr(&[Node::Num(Num::U(1))])
        );
        for depth in [MAX_DEPTH - 1, MAX_DEPTH, 127, 128] {
            let d = depth as usize;
            let doc = format!("{{\"x\":{}0{}}}", "[".repeat(d), "]".repeat(d));
            members_as_parse(doc.as_bytes(), &keep);
        }
    }

    use fast::MAX_DEPTH;

    /// A tree holds at most its budget's values, at any depth, by either parser; past it the
    /// walk stops (whatever comes after), and the arena holds no more than the budget's nodes.
    #[test]
    fn a_tree_holds_at_most_its_budget() {
        let too_many = |r: Result<Node<'_>, Failure>| matches!(r, Err(Failure::TooManyValues));
        // Five values: three items, two members (the root is not counted).
        let doc = br#"[1,{"a":2,"b":[]},3]"#;
        let arena = Bump::new();
        assert!(parse_within(doc, &arena, 5).is_ok());
        assert!(too_many(parse_within(doc, &arena, 4)));
        assert!(parse_by_serde(doc, &arena, 5).is_ok());
        assert!(too_many(parse_by_serde(doc, &arena, 4)));
        // Nested deeper than the walk goes: serde's reading counts the same.
        let deep = format!("{}[1,2]{}", "[".repeat(80), "]".repeat(80));
        assert!(parse_within(deep.as_bytes(), &arena, 82).is_ok());
        assert!(too_many(parse_within(deep.as_bytes(), &arena, 81)));
        // What comes after the budget ran out is not read: not even a mistake.
        assert!(too_many(parse_within(b"[1,2,3,x", &arena, 2)));
        assert!(too_many(parse_by_serde(b"[[1,2,3],x", &arena, 2)));
        // Members count only what they keep, whichever parser reads them (the nesting sends
        // the second document to serde).
        let keep = ["model", "stream"];
        let doc = br#"{"model":"m","messages":[1,2,3,4,5,6],"stream":[true]}"#;
        assert!(parse_members_within(doc, &keep, &arena, 3).is_ok());
        assert!(too_many(parse_members_within(doc, &keep, &arena, 2)));
        let doc = format!(
            r#"{{"model":"m","messages":{}1,2,3{},"stream":[true]}}"#,
            "[".repeat(80),
            "]".repeat(80)
        );
        let n = parse_members_within(doc.as_bytes(), &keep, &arena, 3).unwrap();
        assert_eq!(n.get("stream"), Some(&Node::Arr(&[Node::Bool(true)])));
        assert!(too_many(parse_members_within(
            doc.as_bytes(),
            &keep,
            &arena,
            2
        )));
        // Two million values: the arena stops at the budget's nodes.
        let big = format!("[{}0]", "0,".repeat(2_000_000));
        let arena = Bump::new();
        assert!(too_many(parse(big.as_bytes(), &arena)));
        let nodes = MAX_VALUES * std::mem::size_of::<Node<'_>>();
        assert!(
            arena.allocated_bytes() <= nodes,
            "{} bytes",
            arena.allocated_bytes()
        );
        assert!(parse_within(big.as_bytes(), &Bump::new(), 3_000_000).is_ok());
    }

    mod soup {
        use super::{canonical_as_dedup, members_as_parse, same_as_serde};
        use proptest::prelude::*;

        /// Documents strung together from JSON's tokens, a few spelled oddly: most are not
        /// JSON, some are, and each says where the walk and serde could part.
        fn tokens() -> impl Strategy<Value = Vec<u8>> {
            prop::collection::vec(token(), 0..24).prop_map(|t| t.concat().into_bytes())
        }

        fn token() -> impl Strategy<Value = &'static str> {
            prop::sample::select(vec![
                "{",
                "}",
                "[",
                "]",
                ",",
                ":",
                " ",
                "\n",
                "\"k\"",
                "\"model\"",
                "\"a\\nb\"",
                "\"q\\\"\"",
                "\"\\u0041\"",
                "\"\\/\"",
                "\"\\x\"",
                "\"é\"",
                "0",
                "-0",
                "12",
                "-7",
                "1.5",
                "1e3",
                "01",
                "123456789012345678",
                "9999999999999999999",
                "true",
                "null",
                "nul",
                "\"\u{1}\"",
            ])
        }

        /// A valid document as the value of a member nobody reads, with a token put in
        /// somewhere: what the walk steps over must still be JSON.
        fn damaged_members() -> impl Strategy<Value = Vec<u8>> {
            (documents(), any::<prop::sample::Index>(), token()).prop_map(|(doc, at, token)| {
                let at = at.index(doc.len() + 1);
                let mut out = br#"{"model":"m","x":"#.to_vec();
                out.extend_from_slice(&doc[..at]);
                out.extend_from_slice(token.as_bytes());
                out.extend_from_slice(&doc[at..]);
                out.push(b'}');
                out
            })
        }

        /// Valid documents, printed by serde with and without indentation.
        fn documents() -> impl Strategy<Value = Vec<u8>> {
            let leaf = prop_oneof![
                any::<bool>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<u64>().prop_map(serde_json::Value::from),
                (-1e6f64..1e6).prop_map(serde_json::Value::from),
                ".{0,12}".prop_map(serde_json::Value::from),
                Just(serde_json::Value::Null),
            ];
            let value = leaf.prop_recursive(4, 40, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..5).prop_map(serde_json::Value::from),
                    prop::collection::vec(("[a-c]{0,2}", inner), 0..5)
                        .prop_map(|m| { serde_json::Value::Object(m.into_iter().collect()) }),
                ]
            });
            (value, any::<bool>()).prop_map(|(v, pretty)| match pretty {
                true => serde_json::to_vec_pretty(&v).unwrap_or_default(),
                false => serde_json::to_vec(&v).unwrap_or_default(),
            })
        }

        /// Documents whose objects have their members in any order, repeated keys and
        /// whitespace here and there, with strings and numbers spelled many ways.
        fn unordered() -> impl Strategy<Value = Vec<u8>> {
            let ws = prop::sample::select(vec!["", "", " ", "\n "]);
            let leaf = prop::sample::select(vec![
                "\"x\"",
                "\"a\\nb\\\"c\"",
                "\"\\/\\t\"",
                "\"\\u00e9\\\\\"",
                "\"é\"",
                "0",
                "-0",
                "-12",
                "1.50",
                "2e3",
                "12345678901234567890",
                "true",
                "null",
            ])
            .prop_map(str::to_owned);
            leaf.prop_recursive(4, 40, 5, move |inner| {
                // Keys of chat requests, some starting alike; one empty, one escaped.
                let key = prop::sample::select(vec![
                    "\"role\"",
                    "\"content\"",
                    "\"tool_calls\"",
                    "\"tool_call_id\"",
                    "\"type\"",
                    "\"\"",
                    "\"t\\u006fol\"",
                ]);
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4)
                        .prop_map(|items| format!("[{}]", items.join(","))),
                    prop::collection::vec((key, inner, ws.clone()), 0..5).prop_map(|members| {
                        let body: Vec<String> = members
                            .into_iter()
                            .map(|(k, v, w)| format!("{w}{k}{w}:{w}{v}"))
                            .collect();
                        format!("{{{}}}", body.join(","))
                    }),
                ]
            })
            .prop_map(String::into_bytes)
        }

        proptest! {
            #[test]
            fn unordered_canonical_is_the_dedup_keys(doc in unordered()) {
                canonical_as_dedup(&doc);
            }

            #[test]
            fn token_soup_reads_as_serde_reads_it(doc in tokens()) {
                same_as_serde(&doc);
            }

            #[test]
            fn documents_read_as_serde_reads_them(doc in documents()) {
                same_as_serde(&doc);
            }

            #[test]
            fn token_soup_members_read_as_parse_reads_them(doc in tokens()) {
                members_as_parse(&doc, &["model"]);
            }

            #[test]
            fn documents_members_read_as_parse_reads_them(doc in documents()) {
                members_as_parse(&doc, &["a", "b"]);
            }

            #[test]
            fn damaged_members_read_as_parse_reads_them(doc in damaged_members()) {
                members_as_parse(&doc, &["model"]);
            }

            #[test]
            fn token_soup_canonical_is_the_dedup_keys(doc in tokens()) {
                canonical_as_dedup(&doc);
            }

            #[test]
            fn documents_canonical_is_the_dedup_keys(doc in documents()) {
                canonical_as_dedup(&doc);
            }
        }
    }
}
