//! Every kind of alert the analyzer emits is a valid OCSF 1.8 Detection
//! Finding (validated with the official schema), and container-controlled
//! strings survive the trip exactly: escaped in JSON, unchanged once parsed.

use std::sync::Arc;

use glasshouse_analyzer::finding::{self, Anomaly, Container, Endpoint, Finding, Fleet, Process, Severity};
use glasshouse_analyzer::ocsf::{self, Activity};

/// A process name an attacker chose: control characters, a newline that
/// would forge a log line, JSON/CEF/syslog metacharacters, bidi override.
const HOSTILE: &str = "evil\"\\\n<13>1 - - -]\u{1b}[2J|CEF:0|x=y\u{202e}\u{0}";

fn finding(rule: &'static str) -> Finding {
    let s = |v: &str| -> Arc<str> { v.into() };
    Finding {
        workload: s("default/web/server"),
        rule,
        key: format!("{rule}|x"),
        title: format!("title with {HOSTILE}"),
        desc: "d".into(),
        severity: Severity::High,
        confidence: 90,
        technique: Some(finding::UNIX_SHELL),
        anomaly: Anomaly {
            parameter: "process.path (steady phase)".into(),
            observed: HOSTILE.into(),
            baseline: vec![("/bin/server".into(), 120), ("/bin/sh".into(), 3)],
            fleet: Some(Fleet {
                replicas_with: 1,
                replicas: 3,
                hosts_with: 1,
                hosts: 2,
                host_names: vec![HOSTILE.into()],
            }),
        },
        container: Container {
            id: s("41ee3b278ccc0123456789"),
            name: Some(s(HOSTILE)),
            image: Some(s("registry.example/web:1.2")),
            image_id: Some(s("sha256:0123456789abcdef")),
            host: s("node-1"),
        },
        process: Some(Process {
            pid: 4242,
            ppid: 17,
            uid: 1000,
            path: Some(s(HOSTILE)),
            argv: vec![s(HOSTILE), s("-i")],
            cwd: Some(s("/srv")),
            parent_exe: Some(s("/bin/server")),
            lineage: vec![s("/bin/server"), s("/sbin/init")],
        }),
        endpoint: None,
        file: None,
        baseline_version: 12,
        baseline_state: "stable",
        score: 1.0,
        time_ns: 1_764_000_000_123_456_789,
        event_id: Some("agent-1/7/99/3".into()),
    }
}

#[test]
fn every_alert_shape_is_valid_ocsf_and_escapes_container_strings() -> anyhow::Result<()> {
    let mut docs = Vec::new();
    // A process finding, created and updated.
    let f = finding("rule.interactive_shell");
    docs.push(
        ocsf::detection_finding(&f, "gh-1", Activity::Create, 1, f.time_ns)
            .json()
            .to_owned(),
    );
    docs.push(
        ocsf::detection_finding(&f, "gh-1", Activity::Update, 7, f.time_ns + 5)
            .json()
            .to_owned(),
    );
    // A network finding with an IPv4 and an IPv6 peer.
    for addr in ["93.184.216.34", "2001:db8::7"] {
        let mut f = finding("baseline.novel");
        f.technique = Some(finding::APPLICATION_LAYER_PROTOCOL);
        f.endpoint = Some(Endpoint {
            addr: addr.into(),
            port: 4444,
        });
        docs.push(
            ocsf::detection_finding(&f, "gh-2", Activity::Create, 1, f.time_ns)
                .json()
                .to_owned(),
        );
    }
    // A file finding; a resource finding with no process, technique or fleet.
    let mut f = finding("rule.account_files");
    f.file = Some("/etc/passwd".into());
    docs.push(
        ocsf::detection_finding(&f, "gh-3", Activity::Create, 1, f.time_ns)
            .json()
            .to_owned(),
    );
    let mut f = finding("baseline.resource");
    f.process = None;
    f.technique = None;
    f.event_id = None;
    f.anomaly.fleet = None;
    f.anomaly.baseline.clear();
    f.container.name = None;
    f.container.image_id = None;
    docs.push(
        ocsf::detection_finding(&f, "gh-4", Activity::Create, 1, f.time_ns)
            .json()
            .to_owned(),
    );

    glasshouse_tests::validate_ocsf(&docs)?;

    let v: serde_json::Value = serde_json::from_str(&docs[0])?;
    assert!(!docs[0].contains('\n') && !docs[0].contains('\u{1b}'));
    assert_eq!(v["evidences"][0]["process"]["path"], HOSTILE);
    assert_eq!(v["evidences"][0]["container"]["name"], HOSTILE);
    assert_eq!(
        v["anomaly_analyses"][0]["anomalies"][0]["observations"][0]["value"],
        HOSTILE
    );
    assert_eq!(v["finding_info"]["attacks"][0]["technique"]["uid"], "T1059.004");
    assert_eq!(v["unmapped"]["glasshouse"]["baseline_version"], 12);
    assert_eq!(v["time"], 1_764_000_000_123i64);
    let updated: serde_json::Value = serde_json::from_str(&docs[1])?;
    assert_eq!(
        (updated["activity_id"].as_u64(), updated["count"].as_u64()),
        (Some(2), Some(7))
    );
    Ok(())
}

#[test]
fn the_validator_rejects_what_the_schema_forbids() {
    let f = finding("rule.drift");
    let mut v = ocsf::detection_finding(&f, "gh-5", Activity::Create, 1, f.time_ns)
        .value()
        .clone();
    v["severity_id"] = serde_json::json!(42);
    v["no_such_field"] = serde_json::json!(true);
    let err = glasshouse_tests::validate_ocsf(&[v.to_string()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("severity_id") && err.contains("1 invalid"), "{err}");
}
