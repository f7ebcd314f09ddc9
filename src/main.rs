//! The `portcullis` binary: parse the command line and hand over to the library.

use clap::Parser;

// jemalloc: glibc malloc serialised the many small allocations of a proxy's request path
// across worker threads (lock waits showed in perf). mimalloc, used before, was as fast only
// through its plain entry points, and the `mimalloc` crate sends every allocation through
// `mi_malloc_aligned`, which in mimalloc 3 over-allocates and aligns by hand any block above
// 1 KiB whose size class is not a power of two (~20 of a request's ~110 allocations). jemalloc
// matched mimalloc's plain path in instructions per request and requests/s, with about half the
// resident memory (1M requests, each its own rate-limit key: 29-32 MiB against 45-62 MiB).
// Measured with benches/instructions.sh and benches/load.sh (see round 4 in benches/HISTORY.md).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    portcullis::cli::run(portcullis::cli::Cli::parse())
}
