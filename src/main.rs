//! The `tessera` binary: parses the command line and runs it.

use clap::Parser;
use tessera::cli::{self, Cli};

#[tokio::main]
async fn main() {
    // An optional `.env` fills in variables the environment does not set.
    let _ = dotenvy::dotenv();
    let parsed = Cli::parse();
    if let Err(error) = cli::run(parsed).await {
        eprintln!("error: {error}");
        std::process::exit(error.exit_code());
    }
}
