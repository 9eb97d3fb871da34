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

/// An OCSF document: built once as a value, serialised once. Outputs take
/// the value (a Splunk HEC event wraps it) or its text (Kafka, syslog);
/// nothing parses an alert back.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    value: Value,
    json: String,
}

impl Document {
    pub fn new(value: Value) -> Document {
        let json = value.to_string();
        Document { value, json }
    }

    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The document's JSON text.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The document made to fit in `max_bytes` of JSON, or `None` when it
    /// already does. Strings longer than a per-string bound (a quarter of
    /// `max_bytes` at first, halved until the document fits, down to 64
    /// bytes) are cut with a visible [`truncation_marker`]; the structure,
    /// numbers and short strings (ids, enums, the rule) stay, so the result
    /// is still a valid OCSF Detection Finding, and
    /// `unmapped.glasshouse.truncated` says it was shortened. The strings
    /// that grow that large are the attacker's: argv, paths, container and
    /// image names. Returns the smallest attempt if even 64-byte strings do
    /// not fit (the caller then drops it, counted).
    pub fn shorten(&self, max_bytes: usize) -> Option<Document> {
        if self.json.len() <= max_bytes {
            return None;
        }
        let mut bound = (max_bytes / 4).max(64);
        loop {
            let mut v = self.value.clone();
            cut_strings(&mut v, bound);
            if let Some(gh) = v.pointer_mut("/unmapped/glasshouse").and_then(Value::as_object_mut) {
                gh.insert("truncated".into(), Value::Bool(true));
            }
            let short = Document::new(v);
            if short.json.len() <= max_bytes || bound <= 64 {
                return Some(short);
            }
            bound = (bound / 2).max(64);
        }
    }
}

/// The OCSF Detection Finding of an alert for finding `f`.
pub fn detection_finding(f: &Finding, uid: &str, activity: Activity, count: u64, last_ns: i64) -> Document {
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
    if let Some(fleet) = &f.anomaly.fleet {
        let mut observations = vec![
            json!({ "value": format!("{} of {} replicas", fleet.replicas_with, fleet.replicas), "count": fleet.replicas_with }),
            json!({ "value": format!("{} of {} hosts", fleet.hosts_with, fleet.hosts), "count": fleet.hosts_with }),
        ];
        if !fleet.host_names.is_empty() {
            observations.push(json!({
                "value": format!("shown on {}", fleet.host_names.join(", ")),
                "count": fleet.host_names.len(),
            }));
        }
        anomalies.push(json!({
            "observation_parameter": "fleet prevalence",
            "observation_type": "replicas and hosts of the workload that showed it",
            "observations": observations,
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
    Document::new(doc)
}

/// What a string cut by [`Document::shorten`] ends with: `…[truncated N bytes]`.
pub fn truncation_marker(cut: usize) -> String {
    format!("…[truncated {cut} bytes]")
}

/// `s` cut to at most `max` bytes (at a character boundary), followed by
/// [`truncation_marker`] when anything was cut.
pub fn cut(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{}", &s[..end], truncation_marker(s.len() - end)).into()
}

/// Cuts every string of `v` longer than `bound` bytes ([`cut`]).
pub fn cut_strings(v: &mut Value, bound: usize) {
    match v {
        Value::String(s) if s.len() > bound => *s = cut(s, bound).into_owned(),
        Value::Array(a) => a.iter_mut().for_each(|v| cut_strings(v, bound)),
        Value::Object(o) => o.values_mut().for_each(|v| cut_strings(v, bound)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_marks_only_what_is_over_the_bound() {
        assert_eq!(cut("abcd", 4), "abcd");
        assert_eq!(cut("abcde", 4), format!("abcd{}", truncation_marker(1)));
        // Never inside a character: "é" is two bytes.
        assert_eq!(cut("aé", 2), format!("a{}", truncation_marker(2)));
    }

    #[test]
    fn oversized_alerts_are_shortened_to_fit_and_keep_their_shape() {
        let doc = json!({
            "class_uid": 2004,
            "evidences": [{ "process": { "cmd_line": "A".repeat(3 << 20), "pid": 7 } }],
            "message": "\u{1}".repeat(100_000),
            "unmapped": { "glasshouse": { "rule": "rule.drift" } },
        });
        let doc = Document::new(doc);
        assert_eq!(Document::new(json!({"a": 1})).shorten(100), None);
        let short = doc.shorten(64 * 1024).unwrap();
        assert!(short.json().len() <= 64 * 1024, "{}", short.json().len());
        // The text is the value's.
        let v: Value = serde_json::from_str(short.json()).unwrap();
        assert_eq!(&v, short.value());
        let cmd = v["evidences"][0]["process"]["cmd_line"].as_str().unwrap();
        assert!(
            cmd.starts_with("AAAA") && cmd.ends_with(" bytes]"),
            "{}",
            &cmd[cmd.len() - 40..]
        );
        assert!(cmd.contains("…[truncated "));
        assert_eq!(v["evidences"][0]["process"]["pid"], 7);
        assert_eq!(v["class_uid"], 2004);
        assert_eq!(v["unmapped"]["glasshouse"]["rule"], "rule.drift");
        assert_eq!(v["unmapped"]["glasshouse"]["truncated"], true);
    }
}
