//! Extensions with room for what the layers add.
//!
//! `http::Extensions` is a hash map that starts empty and grows one rehash at a time (4, 8,
//! 16, 32 buckets), each a new table with every entry moved into it; it has no
//! `with_capacity`. A request through every layer gathers about twenty extensions (the
//! peer, the request id, the route, the caller, the key, the memory user, the audit slot…),
//! so it paid three or four rehashes before the upstream saw it, and its response two more.
//! [`with_room`] swaps the map for an empty one that already has room.

use std::sync::LazyLock;

use http::Extensions;

/// An empty map with room for [`ROOM`] entries: a map grown to that size, then cleared (a
/// cleared map keeps its table, and a clone of it has a table of the same size).
static ROOMY: LazyLock<Extensions> = LazyLock::new(|| {
    #[derive(Clone)]
    struct Slot<const N: usize>;
    let mut e = Extensions::new();
    macro_rules! grow {
        ($($n:literal)*) => { $( e.insert(Slot::<$n>); )* };
    }
    // 15 entries need a table of 32 buckets, which holds 28.
    grow!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14);
    e.clear();
    e
});

/// Entries a map from [`with_room`] holds before it grows.
pub const ROOM: usize = 28;

/// Give `extensions` room for [`ROOM`] entries, keeping what it holds: one table allocated
/// at its full size instead of four grown one after the other.
///
/// ```
/// use portcullis_core::extensions::with_room;
///
/// let mut e = http::Extensions::new();
/// e.insert(7u8);
/// with_room(&mut e);
/// assert_eq!(e.get::<u8>(), Some(&7));
/// ```
pub fn with_room(extensions: &mut Extensions) {
    let held = std::mem::replace(extensions, ROOMY.clone());
    extensions.extend(held);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct Held(&'static str);

    #[test]
    fn keeps_every_entry_and_takes_more() {
        let mut e = Extensions::new();
        e.insert(Held("peer"));
        e.insert(3u32);
        with_room(&mut e);
        assert_eq!(e.get::<Held>(), Some(&Held("peer")));
        assert_eq!(e.get::<u32>(), Some(&3));
        assert_eq!(e.len(), 2);
        e.insert(4u64);
        assert_eq!(e.len(), 3);
        // The shared empty map stays empty: nothing inserted here reaches the next request.
        let mut next = Extensions::new();
        with_room(&mut next);
        assert!(next.is_empty());
        assert_eq!(next.get::<u32>(), None);
    }

    #[test]
    fn an_empty_map_gets_room_too() {
        let mut e = Extensions::new();
        with_room(&mut e);
        assert!(e.is_empty());
        e.insert(Held("x"));
        assert_eq!(e.get::<Held>(), Some(&Held("x")));
    }
}
