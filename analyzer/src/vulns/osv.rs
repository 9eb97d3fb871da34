//! OSV advisories (the schema of osv.dev and its per-ecosystem dumps,
//! <https://ossf.github.io/osv-schema/>): parsing, and whether an installed
//! package version is affected.
//!
//! What is read: `id`, `modified`, `withdrawn`, `aliases` (and the CVE ids
//! in `related` and `upstream`, where Debian and Alpine put them),
//! `summary`/`details`, `severity` (CVSS v3 vectors, scored here),
//! `database_specific.severity` (GitHub's label), and per `affected` entry
//! the package (ecosystem, name), its `ECOSYSTEM`/`SEMVER` ranges
//! (`introduced`, `fixed`, `last_affected`, `limit`) and explicit
//! `versions`. `GIT` ranges name commits, not package versions: ignored.
//! Everything else is kept in the advisory's JSON but not interpreted.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::vulns::version::Scheme;

/// Why an advisory was refused.
#[derive(Debug, thiserror::Error)]
pub enum OsvError {
    #[error("not an OSV advisory: {0}")]
    Json(#[source] serde_json::Error),
    #[error("OSV advisory without an id")]
    NoId,
    #[error("OSV advisory {id}: {reason}")]
    Invalid { id: String, reason: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Advisory {
    pub id: String,
    #[serde(default)]
    pub modified: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawn: Option<String>,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub related: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstream: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub severity: Vec<SeverityScore>,
    #[serde(default)]
    pub affected: Vec<Affected>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<Reference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_specific: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SeverityScore {
    #[serde(rename = "type")]
    pub kind: String,
    pub score: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Reference {
    #[serde(rename = "type", default)]
    pub kind: String,
    pub url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Affected {
    pub package: Package,
    #[serde(default)]
    pub ranges: Vec<Range>,
    #[serde(default)]
    pub versions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub severity: Vec<SeverityScore>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Package {
    pub ecosystem: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Range {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Introduced(String),
    Fixed(String),
    LastAffected(String),
    Limit(String),
}

impl Event {
    fn version(&self) -> &str {
        match self {
            Event::Introduced(v) | Event::Fixed(v) | Event::LastAffected(v) | Event::Limit(v) => v,
        }
    }
}

/// Severity of a finding, OCSF's scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Severity {
    Unknown,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// OCSF `severity_id`.
    pub const fn ocsf_id(self) -> u8 {
        match self {
            Severity::Unknown => 0,
            Severity::Low => 2,
            Severity::Medium => 3,
            Severity::High => 4,
            Severity::Critical => 5,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Unknown => "Unknown",
            Severity::Low => "Low",
            Severity::Medium => "Medium",
            Severity::High => "High",
            Severity::Critical => "Critical",
        }
    }

    fn from_label(label: &str) -> Option<Severity> {
        Some(match label.to_ascii_uppercase().as_str() {
            "LOW" | "NEGLIGIBLE" | "UNIMPORTANT" => Severity::Low,
            "MODERATE" | "MEDIUM" => Severity::Medium,
            "HIGH" | "IMPORTANT" => Severity::High,
            "CRITICAL" => Severity::Critical,
            _ => return None,
        })
    }

    fn from_score(score: f64) -> Severity {
        match score {
            s if s >= 9.0 => Severity::Critical,
            s if s >= 7.0 => Severity::High,
            s if s >= 4.0 => Severity::Medium,
            s if s > 0.0 => Severity::Low,
            _ => Severity::Unknown,
        }
    }
}

/// The CVSS v3.x base score of a vector (`CVSS:3.1/AV:N/AC:L/…`), by the
/// specification's formulas; `None` when a base metric is missing or unknown.
pub fn cvss3_base_score(vector: &str) -> Option<f64> {
    let mut parts = vector.split('/');
    if !parts.next()?.starts_with("CVSS:3") {
        return None;
    }
    let metrics: std::collections::HashMap<&str, &str> = parts.filter_map(|p| p.split_once(':')).collect();
    let get = |k: &str| metrics.get(k).copied();
    let changed = match get("S")? {
        "U" => false,
        "C" => true,
        _ => return None,
    };
    let av: f64 = match get("AV")? {
        "N" => 0.85,
        "A" => 0.62,
        "L" => 0.55,
        "P" => 0.2,
        _ => return None,
    };
    let ac = match get("AC")? {
        "L" => 0.77,
        "H" => 0.44,
        _ => return None,
    };
    let pr = match (get("PR")?, changed) {
        ("N", _) => 0.85,
        ("L", false) => 0.62,
        ("L", true) => 0.68,
        ("H", false) => 0.27,
        ("H", true) => 0.5,
        _ => return None,
    };
    let ui = match get("UI")? {
        "N" => 0.85,
        "R" => 0.62,
        _ => return None,
    };
    let cia = |k: &str| -> Option<f64> {
        match get(k) {
            Some("H") => Some(0.56),
            Some("L") => Some(0.22),
            Some("N") => Some(0.0),
            _ => None,
        }
    };
    let iss: f64 = 1.0 - (1.0 - cia("C")?) * (1.0 - cia("I")?) * (1.0 - cia("A")?);
    let impact: f64 = if changed {
        7.52 * (iss - 0.029) - 3.25 * (iss - 0.02).powi(15)
    } else {
        6.42 * iss
    };
    if impact <= 0.0 {
        return Some(0.0);
    }
    let exploitability: f64 = 8.22 * av * ac * pr * ui;
    let raw = if changed {
        (1.08 * (impact + exploitability)).min(10.0)
    } else {
        (impact + exploitability).min(10.0)
    };
    // Roundup of the specification: the smallest one-decimal number >= raw.
    let int = (raw * 100_000.0).round() as i64;
    Some(if int % 10_000 == 0 {
        int as f64 / 100_000.0
    } else {
        ((int / 10_000) + 1) as f64 / 10.0
    })
}

/// Lowercase, runs of `-_.` as one `-` (PEP 503 name normalisation).
pub fn normalize_pypi(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// The name under which packages of `ecosystem` are compared.
pub fn package_key(ecosystem: &str, name: &str) -> String {
    match ecosystem.split(':').next().unwrap_or_default() {
        "PyPI" => normalize_pypi(name),
        _ => name.to_owned(),
    }
}

/// Whether an advisory's ecosystem covers an installed package's:
/// the same ecosystem, and the same release when both name one
/// (`Debian:12` covers `Debian:12`; `Debian` covers every Debian release).
pub fn ecosystem_covers(advisory: &str, installed: &str) -> bool {
    let (a_base, a_rel) = advisory.split_once(':').map_or((advisory, None), |(b, r)| (b, Some(r)));
    let (i_base, i_rel) = installed
        .split_once(':')
        .map_or((installed, None), |(b, r)| (b, Some(r)));
    a_base == i_base
        && match (a_rel, i_rel) {
            (Some(a), Some(i)) => a == i,
            // An advisory of one release says nothing of an unknown release.
            (Some(_), None) => false,
            (None, _) => true,
        }
}

/// An installed version found affected, and the lowest fixed version above it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Affects {
    pub fixed: Option<String>,
}

impl Advisory {
    /// Parses and checks one advisory.
    pub fn parse(json: &[u8]) -> Result<Advisory, OsvError> {
        let a: Advisory = serde_json::from_slice(json).map_err(OsvError::Json)?;
        a.check()?;
        Ok(a)
    }

    fn check(&self) -> Result<(), OsvError> {
        if self.id.trim().is_empty() {
            return Err(OsvError::NoId);
        }
        let invalid = |reason: String| OsvError::Invalid {
            id: self.id.clone(),
            reason,
        };
        if self.id.len() > 256 || self.id.chars().any(char::is_control) {
            return Err(invalid("id too long or with control characters".into()));
        }
        for (i, a) in self.affected.iter().enumerate() {
            if a.package.name.is_empty() || a.package.ecosystem.is_empty() {
                return Err(invalid(format!("affected[{i}] names no package ecosystem and name")));
            }
            for r in &a.ranges {
                if !matches!(r.kind.as_str(), "ECOSYSTEM" | "SEMVER" | "GIT") {
                    return Err(invalid(format!("affected[{i}]: unknown range type {:?}", r.kind)));
                }
                if r.kind != "GIT" && !r.events.iter().any(|e| matches!(e, Event::Introduced(_))) {
                    return Err(invalid(format!("affected[{i}]: a range without an introduced event")));
                }
            }
        }
        Ok(())
    }

    /// CVE ids and other aliases, de-duplicated, in order.
    pub fn all_aliases(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for a in self.aliases.iter().chain(&self.upstream).chain(&self.related) {
            if a != &self.id && !out.contains(a) {
                out.push(a.clone());
            }
        }
        out
    }

    /// The CVE ids among the aliases (or the id itself).
    pub fn cves(&self) -> Vec<String> {
        std::iter::once(&self.id)
            .chain(self.all_aliases().iter())
            .filter_map(|a| {
                let i = a.find("CVE-")?;
                Some(a[i..].to_owned())
            })
            .fold(Vec::new(), |mut v, c| {
                if !v.contains(&c) {
                    v.push(c);
                }
                v
            })
    }

    /// The worst CVSS v3 base score of the advisory, if any.
    pub fn cvss_score(&self) -> Option<(f64, String)> {
        self.severity
            .iter()
            .chain(self.affected.iter().flat_map(|a| &a.severity))
            .filter(|s| s.kind.starts_with("CVSS_V3"))
            .filter_map(|s| cvss3_base_score(&s.score).map(|n| (n, s.score.clone())))
            .max_by(|a, b| a.0.total_cmp(&b.0))
    }

    /// Severity: from the CVSS v3 score, else the database's label, else unknown.
    pub fn severity(&self) -> Severity {
        if let Some((score, _)) = self.cvss_score() {
            return Severity::from_score(score);
        }
        self.database_specific
            .as_ref()
            .and_then(|d| d.get("severity"))
            .and_then(|s| s.as_str())
            .and_then(Severity::from_label)
            .unwrap_or(Severity::Unknown)
    }

    /// Every (ecosystem, package key) this advisory names.
    pub fn packages(&self) -> impl Iterator<Item = (&str, String)> {
        self.affected.iter().map(|a| {
            let base = a.package.ecosystem.split(':').next().unwrap_or_default();
            (base, package_key(&a.package.ecosystem, &a.package.name))
        })
    }

    /// Whether `version` of package `name` in `ecosystem` is affected; an
    /// advisory version that does not parse in the ecosystem's scheme makes
    /// its range unusable (counted in `unparsable`), never a match.
    pub fn affects(&self, ecosystem: &str, name: &str, version: &str, unparsable: &mut u64) -> Option<Affects> {
        if self.withdrawn.is_some() {
            return None;
        }
        let scheme = Scheme::of_ecosystem(ecosystem)?;
        let key = package_key(ecosystem, name);
        let mut hit: Option<Affects> = None;
        for a in &self.affected {
            if !ecosystem_covers(&a.package.ecosystem, ecosystem) || package_key(ecosystem, &a.package.name) != key {
                continue;
            }
            let listed = a
                .versions
                .iter()
                .any(|v| v == version || scheme.compare(v, version) == Ok(Ordering::Equal));
            let mut fixed_hint = None;
            let mut in_range = false;
            for r in a.ranges.iter().filter(|r| r.kind != "GIT") {
                match range_affects(scheme, &r.events, version) {
                    Ok(Some(fixed)) => {
                        in_range = true;
                        fixed_hint = lowest(scheme, fixed_hint, fixed);
                    }
                    Ok(None) => {}
                    Err(()) => *unparsable += 1,
                }
            }
            if listed || in_range {
                let previous = hit.take().and_then(|h| h.fixed);
                let fixed = match (previous, fixed_hint) {
                    (Some(p), f) => lowest(scheme, f, Some(p)),
                    (None, f) => f,
                };
                hit = Some(Affects { fixed });
            }
        }
        hit
    }
}

fn lowest(scheme: Scheme, a: Option<String>, b: Option<String>) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if scheme.compare(&b, &a) == Ok(Ordering::Less) {
            b
        } else {
            a
        }),
        (a, b) => a.or(b),
    }
}

/// OSV's evaluation of one range: events in version order (`introduced: 0`
/// first), affected after an `introduced` at or below the version until a
/// `fixed`/`limit` at or below it, or a `last_affected` below it. `Ok(Some(fixed))`
/// when affected, with the lowest `fixed` above the version (if any).
fn range_affects(scheme: Scheme, events: &[Event], version: &str) -> Result<Option<Option<String>>, ()> {
    let mut sorted: Vec<&Event> = events.iter().collect();
    let mut failed = false;
    sorted.sort_by(|a, b| {
        let (va, vb) = (a.version(), b.version());
        match (va == "0", vb == "0") {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            (false, false) => scheme.compare(va, vb).unwrap_or_else(|_| {
                failed = true;
                Ordering::Equal
            }),
        }
    });
    if failed {
        return Err(());
    }
    let mut affected = false;
    let mut fixed_above = None;
    for e in sorted {
        let ev = e.version();
        let cmp = if ev == "0" {
            Ordering::Less
        } else {
            scheme.compare(ev, version).map_err(|_| ())?
        };
        match e {
            Event::Introduced(_) if cmp != Ordering::Greater => affected = true,
            Event::Fixed(_) | Event::Limit(_) if cmp != Ordering::Greater => affected = false,
            Event::LastAffected(_) if cmp == Ordering::Less => affected = false,
            Event::Fixed(v) if cmp == Ordering::Greater && affected && fixed_above.is_none() => {
                fixed_above = Some(v.clone());
            }
            _ => {}
        }
    }
    Ok(affected.then_some(fixed_above))
}

/// Reads advisories from OSV JSON: one advisory, an array of them, or (a
/// dump's form) one per line; every advisory is checked.
pub fn parse_many(json: &[u8]) -> Result<Vec<Advisory>, OsvError> {
    let text = std::str::from_utf8(json).unwrap_or_default().trim_start();
    if text.starts_with('[') {
        let list: Vec<serde_json::Value> = serde_json::from_slice(json).map_err(OsvError::Json)?;
        return list
            .into_iter()
            .map(|v| {
                let a: Advisory = serde_json::from_value(v).map_err(OsvError::Json)?;
                a.check()?;
                Ok(a)
            })
            .collect();
    }
    match Advisory::parse(json) {
        Ok(a) => Ok(vec![a]),
        Err(first) => {
            // JSON lines?
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            if lines.len() > 1 {
                lines.into_iter().map(|l| Advisory::parse(l.as_bytes())).collect()
            } else {
                Err(first)
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn fixture(rel: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/osv")
            .join(rel);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn affects(a: &Advisory, eco: &str, name: &str, v: &str) -> Option<Option<String>> {
        let mut bad = 0;
        let r = a.affects(eco, name, v, &mut bad).map(|h| h.fixed);
        assert_eq!(bad, 0);
        r
    }

    #[test]
    fn debian_advisories_by_release_and_version() {
        let dsa = Advisory::parse(&fixture("debian/DSA-5532-1.json")).unwrap();
        assert_eq!(dsa.id, "DSA-5532-1");
        assert_eq!(dsa.cves(), ["CVE-2023-5363", "CVE-2023-5678"]);
        let fixed = Some(Some("3.0.11-1~deb12u2".to_owned()));
        assert_eq!(affects(&dsa, "Debian:12", "openssl", "3.0.11-1~deb12u1"), fixed);
        assert_eq!(affects(&dsa, "Debian:12", "openssl", "3.0.8-1"), fixed);
        assert_eq!(affects(&dsa, "Debian:12", "openssl", "3.0.11-1~deb12u2"), None);
        assert_eq!(affects(&dsa, "Debian:12", "openssl", "3.0.11-1"), None);
        // Another release, an unknown release, another package.
        assert_eq!(affects(&dsa, "Debian:11", "openssl", "1.1.1n-0+deb11u4"), None);
        assert_eq!(affects(&dsa, "Debian", "openssl", "3.0.8-1"), None);
        assert_eq!(affects(&dsa, "Debian:12", "libssl3", "3.0.8-1"), None);
        assert_eq!(dsa.severity(), Severity::Unknown);

        let old = Advisory::parse(&fixture("debian/DSA-5417-1.json")).unwrap();
        assert_eq!(affects(&old, "Debian:12", "openssl", "3.0.11-1~deb12u1"), None);
        assert_eq!(
            affects(&old, "Debian:11", "openssl", "1.1.1n-0+deb11u4"),
            Some(Some("1.1.1n-0+deb11u5".into()))
        );
    }

    #[test]
    fn alpine_pypi_npm_advisories() {
        let alpine = Advisory::parse(&fixture("alpine/ALPINE-CVE-2023-5678.json")).unwrap();
        assert_eq!(alpine.cves(), ["CVE-2023-5678"]);
        assert_eq!(
            affects(&alpine, "Alpine:v3.18", "openssl", "3.1.4-r0"),
            Some(Some("3.1.4-r1".into()))
        );
        assert_eq!(affects(&alpine, "Alpine:v3.18", "openssl", "3.1.4-r1"), None);
        assert_eq!(affects(&alpine, "Alpine:v3.18", "openssl", "3.1.4_p1-r0"), None);

        let requests = Advisory::parse(&fixture("pypi/GHSA-j8r2-6x86-q33q.json")).unwrap();
        assert_eq!(
            affects(&requests, "PyPI", "Requests", "2.28.1"),
            Some(Some("2.31.0".into()))
        );
        assert_eq!(
            affects(&requests, "PyPI", "requests", "2.31.0rc1"),
            Some(Some("2.31.0".into()))
        );
        assert_eq!(affects(&requests, "PyPI", "requests", "2.31.0"), None);
        assert_eq!(affects(&requests, "PyPI", "requests", "2.2.1"), None);
        // CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:C/C:H/I:N/A:N is 6.1.
        assert_eq!(requests.cvss_score().unwrap().0, 6.1);
        assert_eq!(requests.severity(), Severity::Medium);

        let minimist = Advisory::parse(&fixture("npm/GHSA-xvch-5gv4-984h.json")).unwrap();
        assert_eq!(
            affects(&minimist, "npm", "minimist", "1.2.5"),
            Some(Some("1.2.6".into()))
        );
        assert_eq!(
            affects(&minimist, "npm", "minimist", "0.2.1"),
            Some(Some("0.2.4".into()))
        );
        assert_eq!(affects(&minimist, "npm", "minimist", "0.2.4"), None);
        assert_eq!(
            affects(&minimist, "npm", "minimist", "1.2.6-beta.1"),
            Some(Some("1.2.6".into()))
        );
        assert_eq!(minimist.cvss_score().unwrap().0, 9.8);
        assert_eq!(minimist.severity(), Severity::Critical);
    }

    #[test]
    fn last_affected_limit_versions_and_withdrawn() {
        let mut a = Advisory::parse(
            br#"{"id":"X-1","modified":"2024-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"npm","name":"p"},
               "ranges":[{"type":"SEMVER","events":[{"introduced":"1.0.0"},{"last_affected":"1.4.0"}]},
                         {"type":"SEMVER","events":[{"introduced":"2.0.0"},{"limit":"2.1.0"}]}],
               "versions":["0.5.0"]}]}"#,
        )
        .unwrap();
        assert_eq!(affects(&a, "npm", "p", "1.4.0"), Some(None));
        assert_eq!(affects(&a, "npm", "p", "1.4.1"), None);
        assert_eq!(affects(&a, "npm", "p", "2.0.5"), Some(None));
        assert_eq!(affects(&a, "npm", "p", "2.1.0"), None);
        assert_eq!(affects(&a, "npm", "p", "0.5.0"), Some(None));
        assert_eq!(affects(&a, "npm", "p", "0.9.0"), None);
        a.withdrawn = Some("2024-02-01T00:00:00Z".into());
        assert_eq!(affects(&a, "npm", "p", "1.4.0"), None);
    }

    #[test]
    fn unparsable_versions_are_counted_never_matched() {
        let a = Advisory::parse(
            br#"{"id":"X-2","affected":[{"package":{"ecosystem":"npm","name":"p"},
               "ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"not-a-version"}]}]}]}"#,
        )
        .unwrap();
        let mut bad = 0;
        assert_eq!(a.affects("npm", "p", "1.0.0", &mut bad), None);
        assert_eq!(bad, 1);
    }

    #[test]
    fn bad_advisories_are_refused_with_a_reason() {
        let e = Advisory::parse(b"{\"id\":\"\"}").unwrap_err();
        assert_eq!(e.to_string(), "OSV advisory without an id");
        let e = Advisory::parse(b"[1,2]").unwrap_err();
        assert!(e.to_string().starts_with("not an OSV advisory"), "{e}");
        let e = Advisory::parse(br#"{"id":"X","affected":[{"package":{"ecosystem":"npm","name":"p"},"ranges":[{"type":"WEIRD","events":[]}]}]}"#)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "OSV advisory X: affected[0]: unknown range type \"WEIRD\""
        );
        let e = Advisory::parse(br#"{"id":"X","affected":[{"package":{"ecosystem":"npm","name":"p"},"ranges":[{"type":"SEMVER","events":[{"fixed":"1.0.0"}]}]}]}"#)
            .unwrap_err();
        assert!(e.to_string().contains("without an introduced event"), "{e}");
    }

    #[test]
    fn many_advisories_in_one_document() {
        let one = String::from_utf8(fixture("npm/GHSA-xvch-5gv4-984h.json")).unwrap();
        let two = String::from_utf8(fixture("pypi/GHSA-j8r2-6x86-q33q.json")).unwrap();
        let array = format!("[{one},{two}]");
        assert_eq!(parse_many(array.as_bytes()).unwrap().len(), 2);
        let compact = |s: &str| serde_json::to_string(&serde_json::from_str::<serde_json::Value>(s).unwrap()).unwrap();
        let lines = format!("{}\n{}\n", compact(&one), compact(&two));
        let ids: Vec<_> = parse_many(lines.as_bytes())
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(ids, ["GHSA-xvch-5gv4-984h", "GHSA-j8r2-6x86-q33q"]);
    }

    #[test]
    fn cvss_scores_of_known_vectors() {
        for (v, s) in [
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", 10.0),
            ("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:N/A:N", 5.5),
            ("CVSS:3.0/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", 0.0),
        ] {
            assert_eq!(cvss3_base_score(v), Some(s), "{v}");
        }
        assert_eq!(cvss3_base_score("CVSS:2.0/AV:N"), None);
        assert_eq!(cvss3_base_score("CVSS:3.1/AV:N/AC:L"), None);
    }

    #[test]
    fn pypi_names_normalise() {
        assert_eq!(normalize_pypi("Foo.Bar__baz"), "foo-bar-baz");
        assert_eq!(package_key("PyPI", "Requests"), "requests");
        assert_eq!(package_key("npm", "Requests"), "Requests");
        assert!(ecosystem_covers("Debian", "Debian:12"));
        assert!(!ecosystem_covers("Debian:11", "Debian:12"));
        assert!(!ecosystem_covers("Ubuntu", "Debian:12"));
    }
}
