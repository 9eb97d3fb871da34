//! `glasshouse-aggregator [--config FILE]`: argument parsing only; see the library.

use std::path::PathBuf;

use clap::Parser;
use glasshouse_runtime::service;

/// Glasshouse aggregator: gRPC ingest from agents to Arrow batches on Kafka.
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
    let config: glasshouse_aggregator::Config = service::load_config_or_exit(args.config.as_deref());
    service::exit_on_error(glasshouse_aggregator::run(config, service::shutdown_on_signals()).await);
}
