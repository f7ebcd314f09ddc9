//! The command line: `serve` (the default), `check`, `route` and `convert`.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, Overrides};

/// portcullis: an LLM API gateway built as a stack of tower layers.
#[derive(Debug, Parser)]
#[command(
    name = "portcullis",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `serve`'s flags, accepted without the subcommand too.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default).
    Serve(ServeArgs),
    /// Load and validate the configuration, print a summary or every problem.
    Check(ConfigArg),
    /// Print the memory-routing decision for the given headers, as GET /memory-routing/info would.
    Route(RouteArgs),
    /// Convert another gateway's config to portcullis TOML (stdout); settings without an
    /// equivalent are listed on stderr.
    Convert(ConvertArgs),
}

/// `convert` flags.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// The format of the file to convert.
    #[arg(long, value_enum)]
    pub from: ConvertFrom,
    /// The file (e.g. LiteLLM's config.yaml).
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
}

/// Formats `convert` reads.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ConvertFrom {
    /// A LiteLLM proxy config.yaml.
    Litellm,
}

/// `--config`
#[derive(Debug, Args, Default)]
pub struct ConfigArg {
    /// Config file (TOML or YAML); default: $PORTCULLIS_CONFIG, else ./portcullis.toml, else embedded defaults.
    #[arg(long, short = 'c', value_name = "PATH")]
    pub config: Option<PathBuf>,
}

/// `serve` flags.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    #[command(flatten)]
    /// `--config PATH`.
    pub config: ConfigArg,
    /// Listen address, overrides server.listen.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
}

/// `route` flags.
#[derive(Debug, Args)]
pub struct RouteArgs {
    /// A request header, `Name: value`; repeatable.
    #[arg(long = "header", short = 'H', value_name = "HEADER")]
    pub headers: Vec<String>,
    #[command(flatten)]
    /// `--config PATH`.
    pub config: ConfigArg,
}

/// Run the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(a)) => serve(a),
        Some(Command::Check(a)) => check(a),
        Some(Command::Route(a)) => route(a),
        Some(Command::Convert(a)) => convert(a),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let overrides = Overrides {
        listen: args.listen,
    };
    let loaded = match Config::load(args.config.config.as_deref(), &overrides) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: invalid configuration:");
            for p in &e.0 {
                eprintln!("  {p}");
            }
            return ExitCode::from(2);
        }
    };
    let rt = runtime();
    rt.block_on(async move {
        let telemetry = crate::telemetry::init(&loaded.config.telemetry);
        for w in &loaded.warnings {
            tracing::warn!(key = %w.path, "{}", w.message);
        }
        let grace = loaded.config.server.shutdown_grace;
        let threads = loaded.config.server.threads;
        let listen = loaded.config.server.listen_addr();
        let scheme = if loaded.config.server.tls_enabled() {
            "https"
        } else {
            "http"
        };
        let source = loaded.source.clone();
        // Reloads read the same sources again, with the same flags.
        let reloader =
            match crate::reload::Reloader::start(loaded.config, loaded.source, overrides).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "cannot build the gateway");
                    eprintln!("error: {e}");
                    return ExitCode::from(1);
                }
            };
        // SIGHUP: reopen the audit log (logrotate moved it) and reload the configuration.
        #[cfg(unix)]
        if let Err(e) = reloader.spawn_sighup() {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reload with POST /admin/reload");
        }
        crate::server::raise_nofile_limit();
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {listen}: {e}");
                return ExitCode::from(1);
            }
        };
        let addr = listener.local_addr().unwrap_or(listen);
        tracing::info!(config = %source, "portcullis listening on {scheme}://{addr}");
        let result = crate::server::serve_threads(
            listener,
            reloader.live(),
            crate::server::shutdown_signal(),
            grace,
            threads,
        )
        .await;
        drop(telemetry);
        match result {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: server failed: {e}");
                ExitCode::from(1)
            }
        }
    })
}

fn check(args: ConfigArg) -> ExitCode {
    match Config::load(args.config.as_deref(), &Overrides::default()) {
        Ok(l) => {
            println!("configuration OK ({})", l.source);
            print!("{}", l.config.summary());
            for w in &l.warnings {
                println!("warning: {w}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("configuration has {} problem(s):", e.0.len());
            for p in &e.0 {
                eprintln!("  {p}");
            }
            ExitCode::from(2)
        }
    }
}

fn convert(args: ConvertArgs) -> ExitCode {
    let text = match std::fs::read_to_string(&args.path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", args.path.display());
            return ExitCode::from(2);
        }
    };
    let converted = match args.from {
        ConvertFrom::Litellm => crate::convert::from_litellm(&text),
    };
    match converted {
        Ok(c) => {
            print!("{}", c.toml);
            for line in &c.unsupported {
                eprintln!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}: {e}", args.path.display());
            ExitCode::from(2)
        }
    }
}

fn route(args: RouteArgs) -> ExitCode {
    let loaded = match Config::load(args.config.config.as_deref(), &Overrides::default()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("configuration has {} problem(s):", e.0.len());
            for p in &e.0 {
                eprintln!("  {p}");
            }
            return ExitCode::from(2);
        }
    };
    let mut headers = http::HeaderMap::new();
    for h in &args.headers {
        let Some((name, value)) = h.split_once(':') else {
            eprintln!("error: --header {h:?}: expected 'Name: value'");
            return ExitCode::from(2);
        };
        let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.trim().as_bytes()),
            http::HeaderValue::from_str(value.trim()),
        ) else {
            eprintln!("error: --header {h:?}: not a valid header");
            return ExitCode::from(2);
        };
        headers.append(n, v);
    }
    let router = match crate::stack::memory_router(&loaded.config) {
        Ok(r) => r,
        Err(problems) => {
            for p in problems {
                eprintln!("error: memory_routing.{p}");
            }
            return ExitCode::from(2);
        }
    };
    let decision = router.decide(&headers);
    match serde_json::to_string_pretty(&decision) {
        Ok(s) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
