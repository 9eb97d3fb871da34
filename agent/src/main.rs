//! `glasshouse-agent [--config FILE]`: argument parsing only; see the library.

use std::path::PathBuf;

use clap::Parser;
use glasshouse_runtime::service;

/// Glasshouse host agent: watches every container from the outside.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// TOML config file (defaults apply to every field it does not set).
    #[arg(long, short)]
    config: Option<PathBuf>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    service::init_logging();
    let args = Args::parse();
    let config: glasshouse_agent::Config = service::load_config_or_exit(args.config.as_deref());
    let report = service::exit_on_error(glasshouse_agent::run(config, service::shutdown_on_signals()).await);
    if report.batches_unacked > 0 {
        std::process::exit(1);
    }
}
