//! Agent → aggregator → Kafka: the ingest protocol, its refusals and budgets, authentication, failover, spooling and faults, with a real broker and real processes.
//!
//! One test binary per area (linked once); one module per subject.

mod agent_aggregator_restart;
mod agent_spool;
mod aggregator_failover;
mod broker_stall;
mod faults;
mod file_ingest;
mod gap_ingest;
mod hostile_input;
mod ingest_mtls;
mod ingest_refusals;
mod network_ingest;
mod port_auth;
mod sample_ingest;
