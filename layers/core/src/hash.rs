//! Hashing helpers shared by the layers: blake3 in derive-key mode without re-hashing the
//! context string on every call, and lowercase hex without the formatting machinery.

use std::sync::OnceLock;

use blake3::hazmat::{hash_derive_key_context, ContextKey, HasherExt as _};

/// A blake3 derive-key context, hashed once: [`DeriveKey::hasher`] starts a hasher from the
/// context's key, where `blake3::Hasher::new_derive_key(context)` compresses the context
/// string first, every time. The hashes are those of `new_derive_key`, byte for byte.
///
/// ```
/// use portcullis_core::hash::DeriveKey;
///
/// static CONTEXT: DeriveKey = DeriveKey::new("example context v1");
/// let mut h = CONTEXT.hasher();
/// h.update(b"input");
/// assert_eq!(h.finalize(), blake3::Hasher::new_derive_key("example context v1").update(b"input").finalize());
/// ```
#[derive(Debug)]
pub struct DeriveKey {
    context: &'static str,
    key: OnceLock<ContextKey>,
}

impl DeriveKey {
    /// The context `context` (a `static`: it is hashed on first use).
    pub const fn new(context: &'static str) -> Self {
        Self {
            context,
            key: OnceLock::new(),
        }
    }

    fn key(&self) -> &ContextKey {
        self.key
            .get_or_init(|| hash_derive_key_context(self.context))
    }

    /// A fresh hasher in this context.
    pub fn hasher(&self) -> blake3::Hasher {
        blake3::Hasher::new_from_context_key(self.key())
    }

    /// A fresh [`Framed`] hasher in this context.
    pub fn framed(&self) -> Framed {
        Framed {
            key: *self.key(),
            hasher: None,
            buf: [0; FRAMED_BUF],
            len: 0,
        }
    }
}

const FRAMED_BUF: usize = 192;

/// The last short input [`Framed::finalize_remembered`] hashed on a thread in one context,
/// with that context and its hash.
struct Remembered {
    key: ContextKey,
    buf: [u8; FRAMED_BUF],
    len: usize,
    hash: blake3::Hash,
}

/// How many contexts a thread remembers an input of (the gateway uses two: the caller's
/// identity and its API key's hash).
const REMEMBERED_CONTEXTS: usize = 4;

thread_local! {
    static LAST_SHORT: std::cell::RefCell<[Option<Box<Remembered>>; REMEMBERED_CONTEXTS]> =
        const { std::cell::RefCell::new([None, None, None, None]) };
}

/// A blake3 hasher fed through a small buffer: a hash of many short pieces (lengths, names,
/// ids) costs one `update` instead of one per piece, each of which has a fixed cost that
/// dwarfs a few bytes. The hash is that of the same bytes given to `update` one by one.
///
/// The hasher itself (about 2 KiB, most of it the stack of a long input's subtrees) is made
/// only once the pieces outgrow the buffer, and then on the heap: most keys (a caller, a
/// session) fit in the buffer, and a value this small moves for the price of its size.
#[derive(Debug, Clone)]
pub struct Framed {
    key: ContextKey,
    hasher: Option<Box<blake3::Hasher>>,
    buf: [u8; FRAMED_BUF],
    len: usize,
}

impl Framed {
    /// Hash `bytes` as they are.
    pub fn raw(&mut self, bytes: &[u8]) {
        if self.len + bytes.len() > FRAMED_BUF {
            let key = &self.key;
            let hasher = self
                .hasher
                .get_or_insert_with(|| Box::new(blake3::Hasher::new_from_context_key(key)));
            hasher.update(&self.buf[..self.len]);
            self.len = 0;
            if bytes.len() > FRAMED_BUF {
                hasher.update(bytes);
                return;
            }
        }
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Hash `n` as eight little-endian bytes.
    #[inline]
    pub fn count(&mut self, n: usize) {
        let bytes = (n as u64).to_le_bytes();
        // Most counts land in the buffer: an eight-byte store, not a call to copy a slice.
        match self.buf.get_mut(self.len..self.len + 8) {
            Some(room) => {
                room.copy_from_slice(&bytes);
                self.len += 8;
            }
            None => self.raw(&bytes),
        }
    }

    /// Hash `bytes` framed by their length (so that pieces cannot run into each other).
    #[inline]
    pub fn field(&mut self, bytes: &[u8]) {
        self.count(bytes.len());
        self.raw(bytes);
    }

    /// Hash `n` in LEB128 (seven bits a byte, low first; one byte below 128): a framing
    /// for lengths and counts that are mostly small.
    #[inline]
    pub fn varint(&mut self, n: usize) {
        let mut n = n as u64;
        let mut bytes = [0u8; 10];
        let mut len = 0;
        loop {
            let low = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                bytes[len] = low;
                len += 1;
                break;
            }
            bytes[len] = low | 0x80;
            len += 1;
        }
        self.raw(&bytes[..len]);
    }

    /// Hash `bytes` framed by their [`Self::varint`] length: [`Self::field`] in fewer bytes,
    /// so that more keys fit a block.
    #[inline]
    pub fn short_field(&mut self, bytes: &[u8]) {
        self.varint(bytes.len());
        self.raw(bytes);
    }

    /// The hash of everything given.
    pub fn finalize(self) -> blake3::Hash {
        let rest = &self.buf[..self.len];
        match self.hasher {
            Some(mut h) => h.update(rest).finalize(),
            None => hash_short(&self.key, rest),
        }
    }

    /// [`finalize`](Self::finalize), remembered: the last short input (one that fit the
    /// buffer) hashed this way on this thread in each context (up to four) is kept with its
    /// hash, and the same input in the same context again gets that hash without hashing. For inputs a
    /// thread sees again and again, request after request: a caller's credentials (its
    /// identity, its rate-limit key), where the hash was most of what deriving them cost.
    ///
    /// The input is compared in constant time (it holds credentials), and the hash is a
    /// function of the context and the input alone, so what comes back is what `finalize`
    /// would have made, whoever hashed before. The thread keeps a copy of the last input
    /// until the next one replaces it, as freed request buffers keep theirs.
    pub fn finalize_remembered(self) -> blake3::Hash {
        if self.hasher.is_some() {
            return self.finalize();
        }
        let input = &self.buf[..self.len];
        let hash_of = || hash_short(&self.key, input);
        // Hashed as `finalize` does where the entries cannot be had: a thread being torn down
        // (its locals gone), or a borrow already held (nothing here calls out while holding it).
        let remembered = LAST_SHORT.try_with(|slots| {
            let Ok(mut slots) = slots.try_borrow_mut() else {
                return hash_of();
            };
            // One entry per context (the contexts are public constants, compared plainly), so
            // that the contexts a request goes through in turn do not push each other out.
            let at = slots
                .iter()
                .position(|s| s.as_ref().is_some_and(|s| s.key == self.key))
                .or_else(|| slots.iter().position(Option::is_none))
                .unwrap_or(usize::from(self.key[0]) % REMEMBERED_CONTEXTS);
            if let Some(l) = slots[at].as_deref() {
                // Both compared whatever the first says (`&`, not `&&`): no early exit.
                if l.len == self.len
                    && constant_time_eq::constant_time_eq(&l.key, &self.key)
                        & constant_time_eq::constant_time_eq(&l.buf[..l.len], input)
                {
                    return l.hash;
                }
            }
            let hash = hash_of();
            let l = slots[at].get_or_insert_with(|| {
                Box::new(Remembered {
                    key: self.key,
                    buf: [0; FRAMED_BUF],
                    len: 0,
                    hash,
                })
            });
            l.key = self.key;
            l.buf[..self.len].copy_from_slice(input);
            l.len = self.len;
            l.hash = hash;
            hash
        });
        remembered.unwrap_or_else(|_| hash_of())
    }
}

/// The hash of an input that fit [`Framed`]'s buffer, in the context with this key: what
/// [`Framed::finalize`] makes of it, and [`Framed::finalize_remembered`] when it must hash.
fn hash_short(key: &ContextKey, input: &[u8]) -> blake3::Hash {
    blake3::Hasher::new_from_context_key(key)
        .update(input)
        .finalize()
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Append the lowercase hex of `bytes` to `out`.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    out.reserve(bytes.len() * 2);
    // Written into a buffer and appended a block at a time: a `String::push` per digit checks
    // the capacity and encodes a `char` each time (27 instructions a byte against ~8).
    for block in bytes.chunks(32) {
        let mut buf = [0u8; 64];
        for (&b, pair) in block.iter().zip(buf.chunks_exact_mut(2)) {
            pair[0] = HEX[usize::from(b >> 4)];
            pair[1] = HEX[usize::from(b & 0x0f)];
        }
        // Hex digits are ASCII: the check always passes.
        out.push_str(std::str::from_utf8(&buf[..block.len() * 2]).unwrap_or_default());
    }
}

/// The lowercase hex of `bytes`.
///
/// ```
/// assert_eq!(portcullis_core::hash::to_hex(&[0x00, 0xab, 0x7f]), "00ab7f");
/// ```
pub fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    push_hex(&mut s, bytes);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(context: &'static DeriveKey, input: &[u8]) -> Framed {
        let mut h = context.framed();
        h.raw(input);
        h
    }

    /// What is remembered is only ever the hash `finalize` makes of that context and input:
    /// the same input again, another input of the same length, the same input in another
    /// context, an input too long to remember, each against a plain `finalize`, in turns.
    #[test]
    fn remembered_hashes_are_the_hashes_of_their_own_context_and_input() {
        static A: DeriveKey = DeriveKey::new("portcullis test a");
        static B: DeriveKey = DeriveKey::new("portcullis test b");
        let long = vec![7u8; FRAMED_BUF + 1];
        let cases: [(&'static DeriveKey, &[u8]); 7] = [
            (&A, b"Bearer sk-one"),
            (&A, b"Bearer sk-one"),
            (&A, b"Bearer sk-two"),
            (&B, b"Bearer sk-two"),
            (&A, b"Bearer sk-two"),
            (&A, &long),
            (&A, b""),
        ];
        for round in 0..2 {
            for (i, (context, input)) in cases.iter().enumerate() {
                assert_eq!(
                    framed(context, input).finalize_remembered(),
                    framed(context, input).finalize(),
                    "round {round}, case {i}"
                );
            }
        }
        // More contexts than a thread remembers: entries are replaced, hashes stay right.
        static MANY: [DeriveKey; 6] = [
            DeriveKey::new("portcullis test 0"),
            DeriveKey::new("portcullis test 1"),
            DeriveKey::new("portcullis test 2"),
            DeriveKey::new("portcullis test 3"),
            DeriveKey::new("portcullis test 4"),
            DeriveKey::new("portcullis test 5"),
        ];
        for _ in 0..3 {
            for context in &MANY {
                for input in [&b"one"[..], b"two", b"one"] {
                    assert_eq!(
                        framed(context, input).finalize_remembered(),
                        framed(context, input).finalize()
                    );
                }
            }
        }
        // Each thread remembers its own: another thread's first hash is made, and right.
        std::thread::spawn(|| {
            assert_eq!(
                framed(&B, b"Bearer sk-one").finalize_remembered(),
                framed(&B, b"Bearer sk-one").finalize()
            );
        })
        .join()
        .unwrap();
    }

    /// A hash asked for while a thread's locals are being torn down (a value hashing a caller
    /// in its `Drop`) is made as `finalize` makes it, not a panic: the thread's entries are
    /// gone by then.
    #[test]
    fn a_hash_asked_for_at_thread_exit_is_still_made() {
        static E: DeriveKey = DeriveKey::new("portcullis test e");
        struct HashesOnDrop(std::sync::mpsc::Sender<bool>);
        impl Drop for HashesOnDrop {
            fn drop(&mut self) {
                let same = framed(&E, b"at exit").finalize_remembered()
                    == framed(&E, b"at exit").finalize();
                let _ = self.0.send(same);
            }
        }
        thread_local! {
            static PROBE: std::cell::RefCell<Option<HashesOnDrop>> =
                const { std::cell::RefCell::new(None) };
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Registered first, so torn down after the entries (destructors run last-first).
            PROBE.with(|p| *p.borrow_mut() = Some(HashesOnDrop(tx)));
            framed(&E, b"during").finalize_remembered();
        })
        .join()
        .unwrap();
        assert_eq!(rx.recv(), Ok(true));
    }

    /// The hash is remembered per context: two contexts used in turn (as a request uses its
    /// caller's identity, then its key's hash) each keep their entry.
    #[test]
    fn a_short_input_is_remembered_per_context_until_another_replaces_it() {
        static C: DeriveKey = DeriveKey::new("portcullis test c");
        static D: DeriveKey = DeriveKey::new("portcullis test d");
        let held = |context: &DeriveKey| {
            let key = *context.key();
            LAST_SHORT.with(|slots| {
                slots
                    .borrow()
                    .iter()
                    .flatten()
                    .find(|s| s.key == key)
                    .map(|s| (s.len, s.hash))
            })
        };
        let h = framed(&C, b"x-api-key sk-three").finalize_remembered();
        let d = framed(&D, b"Bearer sk-three").finalize_remembered();
        assert_eq!(held(&C), Some((18, h)));
        assert_eq!(held(&D), Some((15, d)));
        let g = framed(&C, b"other").finalize_remembered();
        assert_eq!(held(&C), Some((5, g)));
        assert_eq!(held(&D), Some((15, d)));
        // A long input is hashed as it is, and leaves the entry alone.
        framed(&C, &[1u8; FRAMED_BUF + 8]).finalize_remembered();
        assert_eq!(held(&C), Some((5, g)));
    }

    #[test]
    fn hex_matches_format() {
        let bytes: Vec<u8> = (0..=255).collect();
        let formatted: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(to_hex(&bytes), formatted);
    }

    #[test]
    fn framed_hashes_the_bytes_given() {
        static CTX: DeriveKey = DeriveKey::new("portcullis test framed");
        let big = vec![3u8; 1000];
        let pieces: [&[u8]; 6] = [b"k", &[1; 16], b"", &big, &[9; 190], b"tail"];
        let mut framed = CTX.framed();
        let mut plain = blake3::Hasher::new_derive_key("portcullis test framed");
        for p in pieces {
            framed.field(p);
            plain.update(&(p.len() as u64).to_le_bytes());
            plain.update(p);
            framed.raw(b"-");
            plain.update(b"-");
        }
        assert_eq!(framed.finalize(), plain.finalize());
    }

    #[test]
    fn varints_are_leb128() {
        static CTX: DeriveKey = DeriveKey::new("portcullis test varint");
        for (n, bytes) in [
            (0usize, &[0u8][..]),
            (1, &[1]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (16_384, &[0x80, 0x80, 0x01]),
            (
                usize::MAX,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ] {
            let mut framed = CTX.framed();
            framed.varint(n);
            let mut plain = blake3::Hasher::new_derive_key("portcullis test varint");
            plain.update(bytes);
            assert_eq!(framed.finalize(), plain.finalize(), "{n}");
        }
        let mut framed = CTX.framed();
        framed.short_field(b"abc");
        let mut plain = blake3::Hasher::new_derive_key("portcullis test varint");
        plain.update(&[3, b'a', b'b', b'c']);
        assert_eq!(framed.finalize(), plain.finalize());
    }

    #[test]
    fn framed_hashes_what_fits_its_buffer_the_same() {
        // Below, at and just past the buffer: the hasher is made at the end, or on the way.
        static CTX: DeriveKey = DeriveKey::new("portcullis test framed small");
        for n in [0, 1, 63, 64, 65, FRAMED_BUF - 8, FRAMED_BUF, FRAMED_BUF + 1] {
            let piece = vec![5u8; n];
            let mut framed = CTX.framed();
            framed.raw(&piece);
            let mut plain = blake3::Hasher::new_derive_key("portcullis test framed small");
            plain.update(&piece);
            assert_eq!(framed.finalize(), plain.finalize(), "{n} bytes");
        }
    }

    #[test]
    fn derive_key_copies_hash_like_new_derive_key() {
        static CTX: DeriveKey = DeriveKey::new("portcullis test context");
        for input in [&b""[..], b"a", &[7u8; 5000]] {
            let mut a = CTX.hasher();
            a.update(input);
            let mut b = blake3::Hasher::new_derive_key("portcullis test context");
            b.update(input);
            assert_eq!(a.finalize(), b.finalize());
        }
    }
}
