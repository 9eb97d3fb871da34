//! A vulnerability finding as published on `glasshouse.vulnerabilities`:
//! what the matcher produces and the OCSF rendering reads.

use serde::{Deserialize, Serialize};

/// Open or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Open,
    Resolved,
}

/// One row of `glasshouse.vulnerabilities`: a container × installed
/// package × advisory, keyed by [`Vulnerability::key`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vulnerability {
    pub key: String,
    pub state: State,
    pub container_id: String,
    pub container_name: Option<String>,
    pub workload_id: String,
    pub host: String,
    pub image: Option<String>,
    pub image_id: Option<String>,
    pub image_digest: Option<String>,
    pub ecosystem: String,
    pub package: String,
    pub source_package: Option<String>,
    pub installed_version: String,
    pub location: String,
    pub advisory_id: String,
    pub aliases: Vec<String>,
    pub cves: Vec<String>,
    pub summary: Option<String>,
    pub severity: String,
    pub cvss_score: Option<f64>,
    pub fixed_version: Option<String>,
    /// RFC 3339 UTC.
    pub first_seen: String,
    pub last_seen: String,
    pub resolved_at: Option<String>,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
}

/// The compaction key of a finding: a JSON array, so no package name (they
/// come from containers) can make two findings share a key.
pub fn finding_key(container_id: &str, ecosystem: &str, package: &str, advisory: &str) -> String {
    serde_json::json!([container_id, ecosystem, package, advisory]).to_string()
}
