//! Findings as OCSF 1.8 Detection Finding (class 2004) JSON.
//!
//! | OCSF | from |
//! |---|---|
//! | `finding_info` | id, title, description, rule (`analytic`), ATT&CK technique and tactic (`attacks`), first and last seen |
//! | `anomaly_analyses` | what was observed; what the baseline holds for the same phase and kind (most frequent values with counts); fleet prevalence (replicas and hosts that showed it, of all) |
//! | `evidences` | the container (id, name, image and digest), the process with its parent and ancestry, the network endpoint or the file; for a measurement (resources), `data` |
//! | `metadata.profiles` | `container` (the profile that puts `container` on a process) |
//! | `severity_id`, `confidence_score`, `count` | the finding's severity, score (0–100), occurrences in the alert window |
//! | `unmapped.glasshouse` | workload, rule, baseline version and state, score, event id |
//!
//! The first alert of a window is `activity_id` 1 (Create); when the same
//! finding recurred in the window, an Update (2) with the same `uid` carries
//! the final count. Strings from containers are serialized by `serde_json`,
//! which escapes quotes, backslashes and control characters; nothing else is
//! interpreted.

use serde_json::{Value, json};

use crate::finding::{Finding, Process};

/// OCSF schema version the alerts follow.
pub const VERSION: &str = "1.8.0";

/// Create or update of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    Create = 1,
    Update = 2,
}

fn ms(ns: i64) -> i64 {
    ns.div_euclid(1_000_000)
}

fn process_json(p: &Process, container: &Value) -> Value {
    let mut v = json!({ "pid": p.pid, "container": container });
    if let Some(path) = &p.path {
        v["path"] = json!(path);
        v["name"] = json!(path.rsplit('/').next().unwrap_or(path));
        v["file"] = json!({
            "name": path.rsplit('/').next().unwrap_or(path),
            "path": path,
            "type_id": 1,
        });
    }
    if !p.argv.is_empty() {
        let cmd: Vec<&str> = p.argv.iter().map(|a| &**a).collect();
        v["cmd_line"] = json!(cmd.join(" "));
    }
    if let Some(cwd) = &p.cwd {
        v["working_directory"] = json!(cwd);
    }
    if p.uid != 0 || p.path.is_some() {
        v["user"] = json!({ "uid": p.uid.to_string() });
    }
    let parent_exe = p.parent_exe.as_ref().or(p.lineage.first());
    if p.ppid != 0 || parent_exe.is_some() {
        let mut parent = json!({ "pid": p.ppid });
        if let Some(exe) = parent_exe {
            parent["path"] = json!(exe);
            parent["name"] = json!(exe.rsplit('/').next().unwrap_or(exe));
        }
        v["parent_process"] = parent;
    }
    if !p.lineage.is_empty() {
        v["ancestry"] = Value::Array(
            p.lineage
                .iter()
                .map(|exe| json!({ "name": exe.rsplit('/').next().unwrap_or(exe), "path": exe }))
                .collect(),
        );
    }
    v
}

/// The OCSF JSON of an alert for finding `f`.
pub fn detection_finding(f: &Finding, uid: &str, activity: Activity, count: u64, last_ns: i64) -> String {
    let (activity_name, status) = match activity {
        Activity::Create => ("Create", "New"),
        Activity::Update => ("Update", "New"),
    };
    let mut container = json!({ "uid": f.container.id });
    if let Some(name) = &f.container.name {
        container["name"] = json!(name);
    }
    if let Some(image_id) = &f.container.image_id {
        let mut image = json!({ "uid": image_id });
        if let Some(name) = &f.container.image {
            image["name"] = json!(name);
        }
        container["image"] = image;
    }
    let mut evidence = json!({ "container": container.clone() });
    if let Some(p) = &f.process {
        evidence["process"] = process_json(p, &container);
    }
    if let Some(e) = &f.endpoint {
        let mut ep = json!({ "port": e.port });
        if e.addr.parse::<std::net::IpAddr>().is_ok() {
            ep["ip"] = json!(e.addr);
        } else {
            ep["name"] = json!(e.addr);
        }
        evidence["dst_endpoint"] = ep;
    }
    if let Some(path) = &f.file {
        evidence["file"] = json!({
            "name": path.rsplit('/').next().unwrap_or(path),
            "path": path,
            "type_id": 1,
        });
    }
    if f.process.is_none() && f.endpoint.is_none() && f.file.is_none() {
        // An evidence names at least one artifact: the measurement itself.
        evidence["data"] = json!({ f.anomaly.parameter.as_str(): f.anomaly.observed });
    }
    let mut anomalies = vec![json!({
        "observation_parameter": f.anomaly.parameter,
        "observation_type": "observed",
        "observations": [{ "value": f.anomaly.observed, "count": count }],
    })];
    if let Some(fleet) = f.anomaly.fleet {
        anomalies.push(json!({
            "observation_parameter": "fleet prevalence",
            "observation_type": "replicas and hosts of the workload that showed it",
            "observations": [
                { "value": format!("{} of {} replicas", fleet.replicas_with, fleet.replicas), "count": fleet.replicas_with },
                { "value": format!("{} of {} hosts", fleet.hosts_with, fleet.hosts), "count": fleet.hosts_with },
            ],
        }));
    }
    let baseline_observations: Vec<Value> = if f.anomaly.baseline.is_empty() {
        vec![json!({ "value": "(nothing)", "count": 0 })]
    } else {
        f.anomaly
            .baseline
            .iter()
            .map(|(v, c)| json!({ "value": v, "count": c }))
            .collect()
    };
    let analysis = json!({
        "analysis_targets": [{ "name": f.workload, "type": "workload" }],
        "anomalies": anomalies,
        "baselines": [{
            "observation_parameter": f.anomaly.parameter,
            "observation_type": format!("baseline version {} ({})", f.baseline_version, f.baseline_state),
            "observations": baseline_observations,
        }],
    });
    let mut finding_info = json!({
        "uid": uid,
        "title": f.title,
        "desc": f.desc,
        "types": [f.rule],
        "analytic": { "name": f.rule, "type_id": if f.rule.starts_with("rule.") { 1 } else { 5 } },
        "first_seen_time": ms(f.time_ns),
        "last_seen_time": ms(last_ns.max(f.time_ns)),
        "created_time": ms(f.time_ns),
        "product": { "name": "Glasshouse", "vendor_name": "Glasshouse" },
    });
    if let Some(t) = f.technique {
        finding_info["attacks"] = json!([{
            "technique": { "uid": t.uid, "name": t.name },
            "tactic": { "uid": t.tactic_uid, "name": t.tactic },
        }]);
    }
    if let Some(id) = &f.event_id {
        finding_info["related_events"] = json!([{ "uid": id }]);
    }
    let severity_id = f.severity as u8;
    let doc = json!({
        "activity_id": activity as u8,
        "activity_name": activity_name,
        "category_uid": 2,
        "category_name": "Findings",
        "class_uid": 2004,
        "class_name": "Detection Finding",
        "type_uid": 200_400 + activity as u32,
        "type_name": format!("Detection Finding: {activity_name}"),
        "severity_id": severity_id,
        "severity": f.severity.as_str(),
        "status_id": 1,
        "status": status,
        "confidence_score": f.confidence,
        "is_alert": true,
        "count": count,
        "time": ms(last_ns.max(f.time_ns)),
        "message": f.title,
        "metadata": {
            "version": VERSION,
            "product": {
                "name": "Glasshouse",
                "vendor_name": "Glasshouse",
                "version": env!("CARGO_PKG_VERSION"),
            },
            "uid": uid,
            "correlation_uid": f.workload,
            "profiles": ["container"],
        },
        "finding_info": finding_info,
        "anomaly_analyses": [analysis],
        "evidences": [evidence],
        "unmapped": {
            "glasshouse": {
                "workload": f.workload,
                "rule": f.rule,
                "baseline_version": f.baseline_version,
                "baseline_state": f.baseline_state,
                "score": f.score,
                "event_id": f.event_id,
            }
        },
    });
    doc.to_string()
}
