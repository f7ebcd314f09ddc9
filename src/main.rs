//! The `portcullis` binary: parse the command line and hand over to the library.

use clap::Parser;

// glibc malloc serialises the many small allocations of a proxy's request path across worker
// threads (lock waits showed in perf); mimalloc keeps them per thread. Measured with
// benches/load.sh (see README).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    portcullis::cli::run(portcullis::cli::Cli::parse())
}
