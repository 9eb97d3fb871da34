//! `glasshouse-analyzer [--config FILE]`: argument parsing only; see the library.

use std::path::PathBuf;

use clap::Parser;
use glasshouse_proto::service;

/// Glasshouse analyzer: consumes the telemetry topics as a consumer group.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// TOML config file (defaults apply to every field it does not set).
    #[arg(long, short)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() {
    service::init_logging();
    let args = Args::parse();
    let config: glasshouse_analyzer::Config = match service::load_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            std::process::exit(2);
        }
    };
    let cancel = service::shutdown_on_signals();
    if let Err(e) = glasshouse_analyzer::run(config, std::io::stdout(), cancel).await {
        tracing::error!("{}", service::error_chain(&e));
        std::process::exit(1);
    }
}
