//! Continuous vulnerability assessment and image trust.
//!
//! The agent reads each running container's package databases from the host
//! (`glasshouse.inventory`, one row per container inventory); operators
//! import OSV advisories for the whole fleet with `glasshouse vulns import`
//! (the compacted `glasshouse.advisories`). Every analyzer instance reads all
//! advisories and the inventories of its partitions, and re-evaluates a
//! container whenever its inventory arrives and every container whenever
//! advisories change. Findings go to `glasshouse.alerts` as OCSF 1.8
//! Vulnerability Findings (class 2002), images outside the trust policy as
//! Compliance Findings (class 2003), and the current state of every finding
//! to the compacted `glasshouse.vulnerabilities` (JSON, one row per
//! container × package × advisory) that SQL and `glasshouse vulns` read.
//!
//! ```text
//!  glasshouse vulns import ──▶ glasshouse.advisories ──┐
//!                                                      ▼
//!  agent ─▶ aggregator ─▶ glasshouse.inventory ─▶ matcher ─┬─▶ glasshouse.alerts (2002, 2003)
//!                                                 trust ───┴─▶ glasshouse.vulnerabilities ─▶ glasshouse vulns, SQL
//! ```
//!
//! # Layout
//! - [`version`]: version order per ecosystem (dpkg, apk, PEP 440, SemVer).
//! - [`osv`]: OSV advisories: parsing, checks, whether a version is affected.
//! - [`finding`]: a finding as published (the row of `glasshouse.vulnerabilities`).
//! - [`matcher`]: advisory index, per-container findings and their changes.
//! - [`trust`]: the image trust policy.
//! - [`ocsf`]: the OCSF JSON of findings.
//! - [`service`]: the Kafka task and the `[vulns]` config.
//! - [`cli`]: `glasshouse vulns` (import, list, images).

pub mod cli;
pub mod finding;
pub mod matcher;
pub mod ocsf;
pub mod osv;
pub mod service;
pub mod trust;
pub mod version;
