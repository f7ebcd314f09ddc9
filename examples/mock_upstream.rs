//! Run with: cargo run --example mock_upstream
//!
//! Runs the project's mock OpenAI/Anthropic upstream standalone (e.g. as the baseline of a load
//! benchmark, or to point the gateway at by hand) until Ctrl-C:
//!
//! ```text
//! cargo run --example mock_upstream -- [--listen 127.0.0.1:9000] [--chunk-delay 10ms]
//! ```
//!
//! Requests are counted but not recorded, so a long load test does not grow memory.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use portcullis_mock::MockUpstream;

const USAGE: &str = "usage: mock_upstream [--listen ADDR] [--chunk-delay DURATION]

  --listen ADDR            address to listen on (default 127.0.0.1:9000; port 0 picks one)
  --chunk-delay DURATION   gap between streamed SSE events, e.g. 10ms (default 0s)";

struct Args {
    listen: SocketAddr,
    chunk_delay: Duration,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 9000)),
        chunk_delay: Duration::ZERO,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        // Both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (arg, None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "--listen" => {
                let v = value("--listen")?;
                args.listen = v
                    .parse()
                    .map_err(|e| format!("--listen {v:?}: {e} (expected e.g. 127.0.0.1:9000)"))?;
            }
            "--chunk-delay" => {
                let v = value("--chunk-delay")?;
                args.chunk_delay = humantime::parse_duration(&v)
                    .map_err(|e| format!("--chunk-delay {v:?}: {e} (expected e.g. 10ms)"))?;
            }
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Some(args))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mock = match MockUpstream::start_on(args.listen).await {
        Ok(mock) => mock,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    mock.set_recording(false);
    mock.set_chunk_delay(args.chunk_delay);
    println!("mock upstream listening on {}", mock.url());

    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("error: cannot wait for Ctrl-C: {e}");
        return ExitCode::FAILURE;
    }
    eprintln!("served {} requests", mock.request_count());
    ExitCode::SUCCESS
}
