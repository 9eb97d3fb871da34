//! Vulnerability findings as OCSF 1.8 **Vulnerability Finding** (class 2002)
//! and untrusted images as **Compliance Finding** (class 2003), JSON.
//!
//! | OCSF | from |
//! |---|---|
//! | `finding_info` | uid (stable: a hash of the finding's key), title, desc, first/last seen, `types` |
//! | `vulnerabilities[0]` | advisory title and details, severity, `cve` (the first CVE, with the CVSS v3 score and vector when the advisory has one), `related_vulnerabilities` (other aliases), `affected_packages` (name, installed version, package manager, `fixed_in_version`, database path), `is_fix_available`, references |
//! | `resources[0]` | the container: id, name, host, image, image id, digest, workload |
//! | `activity_id`, `status_id` | Create/New when opened, Update when the fixed version or severity changed, Close/Resolved when resolved |
//!
//! Package names, versions, paths and container names come from inside
//! containers: they are only ever serialized by `serde_json`.

use serde_json::{Value, json};

use crate::vulns::finding::Vulnerability;
use crate::vulns::osv::Advisory;

/// Activity of a finding event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    Create = 1,
    Update = 2,
    Close = 3,
}

impl Activity {
    const fn name(self) -> &'static str {
        match self {
            Activity::Create => "Create",
            Activity::Update => "Update",
            Activity::Close => "Close",
        }
    }
}

fn ms(ns: i64) -> i64 {
    ns.div_euclid(1_000_000)
}

/// FNV-1a 64 of a key: a uid that is the same in every analyzer and run.
pub fn stable_uid(prefix: &str, key: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{prefix}-{h:016x}")
}

fn metadata(uid: &str, correlation: &str) -> Value {
    json!({
        "version": crate::ocsf::VERSION,
        "product": {
            "name": "Glasshouse",
            "vendor_name": "Glasshouse",
            "version": env!("CARGO_PKG_VERSION"),
        },
        "uid": uid,
        "correlation_uid": correlation,
    })
}

fn package_manager(ecosystem: &str) -> &'static str {
    match ecosystem.split(':').next().unwrap_or_default() {
        "Debian" | "Ubuntu" => "dpkg",
        "Alpine" => "apk",
        "PyPI" => "pip",
        "npm" => "npm",
        _ if crate::vulns::version::Scheme::of_ecosystem(ecosystem) == Some(crate::vulns::version::Scheme::Rpm) => {
            "rpm"
        }
        _ => "unknown",
    }
}

fn container_resource(v: &Vulnerability) -> Value {
    let mut r = json!({
        "uid": v.container_id,
        "type": "Container",
        "hostname": v.host,
        "data": {
            "workload": v.workload_id,
            "image": v.image,
            "image_id": v.image_id,
            "image_digest": v.image_digest,
        },
    });
    if let Some(n) = &v.container_name {
        r["name"] = json!(n);
    }
    r
}

fn severity_id(name: &str) -> u8 {
    match name {
        "Low" => 2,
        "Medium" => 3,
        "High" => 4,
        "Critical" => 5,
        _ => 0,
    }
}

fn build(v: &Vulnerability, advisory: Option<&Advisory>, activity: Activity, now_ns: i64) -> String {
    let uid = stable_uid("vuln", &v.key);
    let title = format!(
        "{} in {} {} ({})",
        v.advisory_id, v.package, v.installed_version, v.ecosystem
    );
    let desc = match (&v.fixed_version, v.state) {
        (_, crate::vulns::finding::State::Resolved) => {
            format!("{title} is resolved: no longer installed or no longer affected")
        }
        (Some(f), _) => format!("{title}; fixed in {f}"),
        (None, _) => format!("{title}; no fixed version known"),
    };
    let mut affected = json!({
        "name": v.package,
        "version": v.installed_version,
        "package_manager": package_manager(&v.ecosystem),
        "path": v.location,
    });
    if let Some(f) = &v.fixed_version {
        affected["fixed_in_version"] = json!(f);
    }
    let mut vuln = json!({
        "title": v.summary.clone().unwrap_or_else(|| v.advisory_id.clone()),
        "severity": v.severity,
        "affected_packages": [affected],
        "is_fix_available": v.fixed_version.is_some(),
        "first_seen_time": v.first_seen_ms,
        "last_seen_time": v.last_seen_ms,
        "vendor_name": v.advisory_id.split('-').next().unwrap_or("OSV"),
    });
    if let Some(a) = advisory {
        if let Some(d) = a.details.as_ref().or(a.summary.as_ref()) {
            vuln["desc"] = json!(d.chars().take(4000).collect::<String>());
        }
        let refs: Vec<&str> = a.references.iter().map(|r| r.url.as_str()).take(20).collect();
        if !refs.is_empty() {
            vuln["references"] = json!(refs);
        }
    }
    if let Some(cve) = v.cves.first() {
        let mut c = json!({ "uid": cve });
        if let Some((score, vector)) = advisory.and_then(Advisory::cvss_score) {
            let version = vector
                .strip_prefix("CVSS:")
                .and_then(|s| s.split('/').next())
                .unwrap_or("3.1");
            c["cvss"] = json!([{ "base_score": score, "version": version, "vector_string": vector }]);
        }
        vuln["cve"] = c;
    }
    let related: Vec<&String> = v.aliases.iter().filter(|a| Some(*a) != v.cves.first()).collect();
    if !related.is_empty() {
        vuln["related_vulnerabilities"] = json!(related);
    }
    let (status_id, status) = match activity {
        Activity::Close => (4, "Resolved"),
        _ => (1, "New"),
    };
    let doc = json!({
        "activity_id": activity as u8,
        "activity_name": activity.name(),
        "category_uid": 2,
        "category_name": "Findings",
        "class_uid": 2002,
        "class_name": "Vulnerability Finding",
        "type_uid": 200_200 + activity as u32,
        "type_name": format!("Vulnerability Finding: {}", activity.name()),
        "severity_id": severity_id(&v.severity),
        "severity": v.severity,
        "status_id": status_id,
        "status": status,
        "time": ms(now_ns),
        "message": desc,
        "metadata": metadata(&uid, &v.workload_id),
        "finding_info": {
            "uid": uid,
            "title": title,
            "desc": desc,
            "types": ["vulnerability"],
            "first_seen_time": v.first_seen_ms,
            "last_seen_time": v.last_seen_ms,
            "created_time": v.first_seen_ms,
            "product": { "name": "Glasshouse", "vendor_name": "Glasshouse" },
        },
        "vulnerabilities": [vuln],
        "resources": [container_resource(v)],
        "unmapped": {
            "glasshouse": {
                "workload": v.workload_id,
                "key": v.key,
                "advisory_id": v.advisory_id,
                "state": v.state,
            }
        },
    });
    doc.to_string()
}

/// A finding opened (`Create`) or changed (`Update`).
pub fn vulnerability_finding(v: &Vulnerability, advisory: &Advisory, activity: Activity, now_ns: i64) -> String {
    build(v, Some(advisory), activity, now_ns)
}

/// A finding resolved (`Close`, status Resolved); the advisory may be gone.
pub fn vulnerability_resolved(v: &Vulnerability, advisory: Option<&Advisory>, now_ns: i64) -> String {
    build(v, advisory, Activity::Close, now_ns)
}

/// A container whose image the trust policy does not cover.
pub fn untrusted_image(row: &glasshouse_proto::inventory::Row, reason: &str, now_ns: i64) -> String {
    let key = serde_json::json!([
        row.attribution.container(),
        row.attribution.image.as_deref(),
        row.image_digest.as_deref()
    ])
    .to_string();
    let uid = stable_uid("image-trust", &key);
    let image = row.attribution.image.as_deref().unwrap_or("(unknown image)");
    let title = format!("Untrusted image {image} running");
    let mut container = json!({
        "uid": row.attribution.container(),
        "type": "Container",
        "hostname": &*row.attribution.host,
        "data": {
            "workload": &*row.attribution.workload_id,
            "image": row.attribution.image.as_deref(),
            "image_id": row.attribution.image_id.as_deref(),
            "image_digest": row.image_digest.as_deref(),
        },
    });
    if let Some(n) = &row.attribution.container_name {
        container["name"] = json!(&**n);
    }
    json!({
        "activity_id": 1,
        "activity_name": "Create",
        "category_uid": 2,
        "category_name": "Findings",
        "class_uid": 2003,
        "class_name": "Compliance Finding",
        "type_uid": 200_301,
        "type_name": "Compliance Finding: Create",
        "severity_id": 4,
        "severity": "High",
        "status_id": 1,
        "status": "New",
        "time": ms(now_ns),
        "message": format!("{title}: {reason}"),
        "metadata": metadata(&uid, &row.attribution.workload_id),
        "finding_info": {
            "uid": uid,
            "title": title,
            "desc": reason,
            "types": ["image-trust"],
            "first_seen_time": ms(now_ns),
            "created_time": ms(now_ns),
            "product": { "name": "Glasshouse", "vendor_name": "Glasshouse" },
        },
        "compliance": {
            "control": "image-trust",
            "standards": ["Glasshouse image trust policy"],
            "status_id": 3,
            "status": "Fail",
            "desc": reason,
        },
        "remediation": {
            "desc": "Run the workload from a trusted registry or repository, or add the image's digest to vulns.image_trust.trusted_digests after review.",
        },
        "resources": [container],
        "unmapped": {
            "glasshouse": {
                "workload": &*row.attribution.workload_id,
                "rule": "image-trust",
            }
        },
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_stable_and_distinct() {
        assert_eq!(stable_uid("vuln", "a"), stable_uid("vuln", "a"));
        assert_ne!(stable_uid("vuln", "a"), stable_uid("vuln", "b"));
        assert_eq!(stable_uid("x", ""), "x-cbf29ce484222325");
    }
}
