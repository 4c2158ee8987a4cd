//! `tollgate-mock`: serves the mock AI provider on 127.0.0.1 until Ctrl-C.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use tollgate_mock::{MockArgs, MockServer};

#[tokio::main]
async fn main() -> ExitCode {
    let args = MockArgs::parse();
    let config = match args.to_config() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("tollgate-mock: {message}");
            return ExitCode::from(2);
        }
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
    let server = match MockServer::bind(addr, config).await {
        Ok(server) => server,
        Err(error) => {
            eprintln!("tollgate-mock: cannot listen on {addr}: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The first line is the address, so scripts can read it.
    println!("{}", server.url());
    let _ = tokio::signal::ctrl_c().await;
    server.shutdown().await;
    ExitCode::SUCCESS
}
