//! What every Glasshouse process shares at run time, beside the contract
//! (`glasshouse-proto`), which says what the processes exchange; this crate
//! says how each of them runs.
//!
//! # Layout
//! - [`service`]: shutdown on signals, config loading with one-line errors,
//!   exponential backoff, structured logs.
//! - [`listener`]: accepting connections with a cap and an idle deadline.
//! - [`metrics`]: Prometheus counters, gauges, labelled counters and
//!   histograms: how every process counts its internal events.
//! - [`endpoint`]: the `/metrics` (and `/health`, …) HTTP endpoint.
//! - [`tls`]: ring as the process-wide TLS provider.
//! - `kafka` (feature `kafka`): one client-config builder, the topic layout
//!   and its creation, broker wait, a record message's headers.

pub mod endpoint;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod listener;
pub mod metrics;
pub mod service;
pub mod tls;
