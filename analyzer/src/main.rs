//! `glasshouse-analyzer [--config FILE]`: argument parsing only; see the library.

use std::path::PathBuf;

use clap::Parser;
use glasshouse_runtime::service;

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
    let config: glasshouse_analyzer::Config = service::load_config_or_exit(args.config.as_deref());
    let cancel = service::shutdown_on_signals();
    service::exit_on_error(glasshouse_analyzer::run(config, std::io::stdout(), cancel).await);
}
