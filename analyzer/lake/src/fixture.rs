//! Deterministic synthetic telemetry, encoded exactly as the aggregator
//! writes it to Kafka (Arrow IPC of the contract's schemas, OCSF JSON), for
//! the golden SQL tests and the benchmark. Nothing random: the same
//! arguments give the same bytes.

use std::sync::Arc;

use glasshouse_proto::record::Attribution;
use glasshouse_proto::{ipc, network, process, resources};

/// Workloads of the synthetic fleet.
pub const WORKLOADS: [&str; 4] = ["shop/web", "shop/worker", "billing/api", "localhost/glasshouse-test"];

/// One container of the synthetic fleet.
#[derive(Debug, Clone)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub image: String,
    pub workload: String,
    pub host: String,
}

/// `n` containers spread over the workloads and two hosts.
pub fn containers(n: usize) -> Vec<Container> {
    (0..n)
        .map(|i| {
            let w = WORKLOADS[i % WORKLOADS.len()];
            Container {
                id: format!("{i:02x}{}", "c0ffee".repeat(10)),
                name: format!("{}-{}", w.rsplit('/').next().unwrap_or(w), i / WORKLOADS.len()),
                image: format!("registry.local/{w}:1.{}", i % 3),
                workload: w.to_owned(),
                host: format!("node-{}", i % 2),
            }
        })
        .collect()
}

impl Container {
    /// The attribution of this container's records in batch `batch_seq`.
    pub fn attribution(&self, batch_seq: u64) -> Attribution {
        Attribution {
            boot_id: 1,
            batch_seq,
            container_id: Some(s(&self.id)),
            container_name: Some(s(&self.name)),
            image: Some(s(&self.image)),
            image_id: Some(s(&format!("sha256:{}", &self.id[..12]))),
            workload_id: s(&self.workload),
            ..Attribution::host(s(&self.host), s(&self.host))
        }
    }
}

fn s(v: &str) -> Arc<str> {
    Arc::from(v)
}

/// Process events `first..first + n` (execs, with a fork before every
/// tenth exec), one IPC message. Event `i` is at `base_ns + i` ms, in
/// container `i % containers.len()`, pid `1000 + i`, its parent the
/// previous event of the same container (pid `1000 + i - containers.len()`;
/// 1 for the first), so every container holds one process chain.
pub fn process_message(containers: &[Container], first: u64, n: usize, base_ns: i64) -> Vec<u8> {
    let mut b = process::Builder::default();
    for i in first..first + n as u64 {
        let c = &containers[(i % containers.len() as u64) as usize];
        let programs = ["/bin/sh", "/usr/bin/curl", "/bin/ls", "/usr/sbin/nginx", "/bin/cat"];
        let path = programs[(i % programs.len() as u64) as usize];
        b.append(&process::Row {
            attribution: c.attribution(i / 1000),
            event_index: (i % 1000) as u32,
            time_unix_ns: base_ns + i as i64 * 1_000_000,
            kind: if i % 10 == 9 {
                process::Kind::Fork
            } else {
                process::Kind::Exec
            },
            pid: 1000 + i as u32,
            ppid: i.checked_sub(containers.len() as u64).map_or(1, |p| 1000 + p as u32),
            path: Some(s(path)),
            argv: vec![s(path.rsplit('/').next().unwrap_or(path)), s(&format!("arg{}", i % 7))],
            cwd: Some(s("/")),
            parent_exe: Some(s("/bin/sh")),
            count: 1,
            ..Default::default()
        });
    }
    // Encoding a batch of the contract's own builder cannot fail.
    ipc::encode(&b.finish()).expect("fixture batch encodes")
}

/// Network close events `first..first + n`, one IPC message: event `i`
/// sends `100 * (i % 13 + 1)` bytes and receives `10 * (i % 5)` to
/// `10.0.{i % 3}.{i % 7}:443`.
pub fn network_message(containers: &[Container], first: u64, n: usize, base_ns: i64) -> Vec<u8> {
    let mut b = network::Builder::default();
    for i in first..first + n as u64 {
        let c = &containers[(i % containers.len() as u64) as usize];
        b.append(&network::Row {
            attribution: c.attribution(i / 1000),
            event_index: (i % 1000) as u32,
            time_unix_ns: base_ns + i as i64 * 1_000_000,
            kind: network::Kind::Close,
            pid: 1000 + i as u32,
            family: network::Family::Ipv4,
            local_addr: s("10.88.0.2"),
            local_port: 40000 + (i % 1000) as u16,
            remote_addr: Some(s(&format!("10.0.{}.{}", i % 3, i % 7))),
            remote_port: 443,
            bytes_sent: 100 * (i % 13 + 1),
            bytes_received: 10 * (i % 5),
            count: 1,
            ..Default::default()
        });
    }
    ipc::encode(&b.finish()).expect("fixture batch encodes")
}

/// One resource sample per container at `time_ns`, one IPC message:
/// container `k` uses `(k + 1) * 2^20 * step` bytes of memory.
pub fn resource_message(containers: &[Container], step: u64, time_ns: i64) -> Vec<u8> {
    let mut b = resources::Builder::default();
    for (k, c) in containers.iter().enumerate() {
        b.append(&resources::Row {
            attribution: c.attribution(step),
            time_unix_ns: time_ns,
            counters: resources::Counters {
                cpu_usage_ns: step * 1_000_000,
                memory_bytes: (k as u64 + 1) * (1 << 20) * step,
                memory_limit_bytes: 512 << 20,
                pids: 3,
                pids_limit: 100,
                ..Default::default()
            },
        });
    }
    ipc::encode(&b.finish()).expect("fixture batch encodes")
}

/// An OCSF alert about process event `event` of the fixture (its container,
/// pid and path), as the analyzer writes it.
pub fn alert_json(containers: &[Container], event: u64, base_ns: i64, title: &str) -> String {
    let c = &containers[(event % containers.len() as u64) as usize];
    let time_ms = (base_ns + event as i64 * 1_000_000) / 1_000_000;
    serde_json::json!({
        "activity_id": 1, "activity_name": "Create", "class_uid": 2004,
        "severity": "High", "severity_id": 4, "count": 1, "time": time_ms,
        "finding_info": {
            "uid": format!("alert-{event}"), "title": title, "types": ["rule.interactive_shell"],
            "first_seen_time": time_ms,
            "attacks": [{"technique": {"uid": "T1059.004", "name": "Unix Shell"}}],
        },
        "evidences": [{
            "container": {"uid": c.id, "name": c.name, "image": {"name": c.image}},
            "process": {"pid": 1000 + event, "path": "/bin/sh", "cmd_line": "sh -i",
                        "parent_process": {"pid": event.checked_sub(containers.len() as u64).map_or(1, |p| 1000 + p)}},
        }],
        "unmapped": {"glasshouse": {"workload": c.workload, "rule": "rule.interactive_shell",
                     "baseline_version": 3, "baseline_state": "stable", "score": 1.0,
                     "event_id": format!("{}/1/{}/{}", c.host, event / 1000, event % 1000)}},
    })
    .to_string()
}
