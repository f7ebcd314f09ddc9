//! The `portcullis` binary: parse the command line and hand over to the library.

use clap::Parser;

// glibc malloc serialises the many small allocations of a proxy's request path across worker
// threads (lock waits showed in perf); mimalloc keeps them per thread. Measured with
// benches/load.sh (see README).
#[global_allocator]
static GLOBAL: allocator::MiMalloc = allocator::MiMalloc;

fn main() -> std::process::ExitCode {
    portcullis::cli::run(portcullis::cli::Cli::parse())
}

/// mimalloc, asked for alignment only when a layout needs more than every block already has.
///
/// The `mimalloc` crate sends every allocation through `mi_malloc_aligned`. mimalloc 3 serves
/// that from its fast path only up to 1 KiB; above, any size whose block is not a power of two
/// is over-allocated by the alignment and aligned by hand (~200 instructions, against ~50). A
/// request through the gateway makes about 20 such allocations (boxed futures) out of ~110.
/// Every mimalloc block is a whole number of words from a word-aligned start, so a layout
/// aligned to a word or less takes the plain entry points, as std's `System` does with malloc;
/// anything more aligned keeps the aligned ones. Measured with benches/instructions.sh.
#[allow(unsafe_code)]
mod allocator {
    use std::alloc::{GlobalAlloc, Layout};
    use std::ffi::c_void;

    use libmimalloc_sys as mi;

    /// The alignment of every mimalloc block: blocks are whole words.
    const WORD: usize = std::mem::size_of::<usize>();

    /// The global allocator of the binary.
    #[derive(Debug)]
    pub(crate) struct MiMalloc;

    /// Whether a block from the plain entry points is aligned enough for `align`.
    fn plain(align: usize) -> bool {
        align <= WORD
    }

    // SAFETY: each method hands the layout's size (and alignment where the plain entry points
    // would not give it) to mimalloc, which returns null or a block at least that large and that
    // aligned; blocks are freed and resized only by mimalloc.
    unsafe impl GlobalAlloc for MiMalloc {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: mimalloc's allocation functions accept any size and power-of-two alignment.
            unsafe {
                if plain(layout.align()) {
                    mi::mi_malloc(layout.size()).cast()
                } else {
                    mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
                }
            }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            // SAFETY: as for `alloc`.
            unsafe {
                if plain(layout.align()) {
                    mi::mi_zalloc(layout.size()).cast()
                } else {
                    mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
                }
            }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
            // SAFETY: `ptr` came from this allocator, so from mimalloc; `mi_free` frees a block
            // of any alignment.
            unsafe { mi::mi_free(ptr.cast::<c_void>()) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: `ptr` came from this allocator with `layout`; the new block keeps the
            // alignment the layout needs (plain blocks are word-aligned).
            unsafe {
                if plain(layout.align()) {
                    mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
                } else {
                    mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
                }
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// Every size and alignment a program asks for comes back aligned, holds what was
        /// written, and keeps it across a resize, through both the plain and aligned paths.
        #[test]
        fn blocks_are_aligned_and_hold_their_bytes() {
            let a = MiMalloc;
            for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
                for size in [
                    1, 3, 8, 16, 24, 100, 1000, 1100, 1500, 3000, 20_000, 300_000,
                ] {
                    let Ok(layout) = Layout::from_size_align(size, align) else {
                        continue;
                    };
                    // SAFETY: a non-zero layout; the block is written within its size, resized
                    // with the same layout and freed once.
                    unsafe {
                        let p = a.alloc(layout);
                        assert!(!p.is_null());
                        assert_eq!(p as usize % align, 0, "size {size} align {align}");
                        p.write_bytes(0xA5, size);
                        let bigger = size * 3 + 5;
                        let q = a.realloc(p, layout, bigger);
                        assert!(!q.is_null());
                        assert_eq!(q as usize % align, 0, "resized {size} align {align}");
                        assert!((0..size).all(|i| *q.add(i) == 0xA5));
                        a.dealloc(q, Layout::from_size_align_unchecked(bigger, align));

                        let z = a.alloc_zeroed(layout);
                        assert_eq!(z as usize % align, 0, "zeroed {size} align {align}");
                        assert!((0..size).all(|i| *z.add(i) == 0));
                        a.dealloc(z, layout);
                    }
                }
            }
        }
    }
}
