//! The analyzer: baselines, detection scenarios, alerts and their outputs (OCSF, SIEM sinks), vulnerability matching, hostile records and output injection.
//!
//! One test binary per area (linked once); one module per subject.

mod alert_outputs;
mod analyzer_baselines;
mod analyzer_scenarios;
mod hostile_inventory;
mod hostile_outputs;
mod ocsf_alerts;
mod ocsf_vulns;
mod output_injection;
mod vulns;
