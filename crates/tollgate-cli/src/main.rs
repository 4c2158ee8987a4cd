//! `tollgate`: run a batch of AI requests without losing one, serve the mock provider, or see
//! the difference tollgate makes against a naive client.

mod batch;
mod demo;
mod serve;
mod shared_quota;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Run AI API requests through tollgate's rate limits, retries and circuit breaker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log what tollgate does to stderr (errors only by default): -v info (retries, adaptive
    /// limit, breaker), -vv debug, -vvv trace. `RUST_LOG` (e.g. `tollgate=debug`) overrides it.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Write the logs as JSON lines.
    #[arg(long, global = true)]
    log_json: bool,
}

/// Sends tracing events to stderr, at the level `-v` or `RUST_LOG` asks (warnings only by
/// default). Request headers are never logged: credentials are marked sensitive anyway.
fn init_logging(verbose: u8, json: bool) {
    // A retry is routine in a batch (the retry layer logs each at WARN): quiet by default.
    let level = match verbose {
        0 => "error",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send one request per JSONL line through the standard stack, writing one result per line.
    #[command(
        after_help = "Exit codes: 0 every line succeeded (in this run or an earlier one); \
        1 some lines did not succeed (their results say why; running again tries them, and \
        --retry-failed also the prompts' own failures); 2 the run could not start; 130 or 143 \
        stopped by SIGINT or SIGTERM (running again resumes)."
    )]
    Batch(Box<batch::BatchArgs>),
    /// Serve an OpenAI- and Anthropic-compatible gateway in front of one provider: any SDK
    /// pointed at it gets the rate limits, retries and breaker, one quota shared fairly by its
    /// client keys (and by replicas, with --redis).
    Serve(Box<serve::ServeArgs>),
    /// Serve the mock AI provider on 127.0.0.1 for your own tests.
    Mock(tollgate_mock::MockArgs),
    /// The same batch against a faulty, rate-limited mock: naively, then through tollgate.
    Demo(demo::DemoArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.log_json);
    let result = match cli.command {
        Command::Batch(args) => batch::run(*args).await,
        Command::Serve(args) => serve::run(*args).await,
        Command::Mock(args) => serve_mock(args).await,
        Command::Demo(args) => demo::run(args).await,
    };
    match result {
        Ok(code) => code,
        // The run could not start (or could not go on writing): exit code 2.
        Err(message) => {
            eprintln!("tollgate: {message}");
            ExitCode::from(2)
        }
    }
}

async fn serve_mock(args: tollgate_mock::MockArgs) -> Result<ExitCode, String> {
    let config = args.to_config()?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], args.port));
    let server = tollgate_mock::MockServer::bind(addr, config)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    println!("{}", server.url());
    let _ = tokio::signal::ctrl_c().await;
    server.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
