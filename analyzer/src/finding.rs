//! Findings: what the analyzer concluded about one event (or one window of
//! a container), with everything an alert needs to explain itself. Turned
//! into OCSF by [`crate::ocsf`].

use std::sync::Arc;

use glasshouse_proto::record::Attribution;

/// How bad a finding is (OCSF `severity_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Informational = 1,
    Low = 2,
    Medium = 3,
    High = 4,
    Critical = 5,
}

impl Severity {
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Informational => "Informational",
            Severity::Low => "Low",
            Severity::Medium => "Medium",
            Severity::High => "High",
            Severity::Critical => "Critical",
        }
    }
}

/// An ATT&CK technique and the tactic it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Technique {
    pub uid: &'static str,
    pub name: &'static str,
    pub tactic_uid: &'static str,
    pub tactic: &'static str,
}

pub const UNIX_SHELL: Technique = Technique {
    uid: "T1059.004",
    name: "Command and Scripting Interpreter: Unix Shell",
    tactic_uid: "TA0002",
    tactic: "Execution",
};
pub const COMMAND_INTERPRETER: Technique = Technique {
    uid: "T1059",
    name: "Command and Scripting Interpreter",
    tactic_uid: "TA0002",
    tactic: "Execution",
};
pub const INGRESS_TOOL_TRANSFER: Technique = Technique {
    uid: "T1105",
    name: "Ingress Tool Transfer",
    tactic_uid: "TA0011",
    tactic: "Command and Control",
};
pub const LOCAL_ACCOUNT: Technique = Technique {
    uid: "T1136.001",
    name: "Create Account: Local Account",
    tactic_uid: "TA0003",
    tactic: "Persistence",
};
pub const SUDO: Technique = Technique {
    uid: "T1548.003",
    name: "Abuse Elevation Control Mechanism: Sudo and Sudo Caching",
    tactic_uid: "TA0004",
    tactic: "Privilege Escalation",
};
pub const RESOURCE_HIJACKING: Technique = Technique {
    uid: "T1496",
    name: "Resource Hijacking",
    tactic_uid: "TA0040",
    tactic: "Impact",
};
pub const APPLICATION_LAYER_PROTOCOL: Technique = Technique {
    uid: "T1071",
    name: "Application Layer Protocol",
    tactic_uid: "TA0011",
    tactic: "Command and Control",
};
pub const NON_STANDARD_PORT: Technique = Technique {
    uid: "T1571",
    name: "Non-Standard Port",
    tactic_uid: "TA0011",
    tactic: "Command and Control",
};
pub const STORED_DATA_MANIPULATION: Technique = Technique {
    uid: "T1565.001",
    name: "Data Manipulation: Stored Data Manipulation",
    tactic_uid: "TA0040",
    tactic: "Impact",
};
pub const NATIVE_API: Technique = Technique {
    uid: "T1106",
    name: "Native API",
    tactic_uid: "TA0002",
    tactic: "Execution",
};

/// The container an event came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Container {
    pub id: Arc<str>,
    pub name: Option<Arc<str>>,
    pub image: Option<Arc<str>>,
    pub image_id: Option<Arc<str>>,
    pub host: Arc<str>,
}

impl Container {
    /// The container a record is attributed to; `None` for the host.
    pub fn of(a: &Attribution) -> Option<Container> {
        Some(Container {
            id: a.container_id.clone()?,
            name: a.container_name.clone(),
            image: a.image.clone(),
            image_id: a.image_id.clone(),
            host: a.host.clone(),
        })
    }
}

/// The process behind an event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub path: Option<Arc<str>>,
    pub argv: Vec<Arc<str>>,
    pub cwd: Option<Arc<str>>,
    pub parent_exe: Option<Arc<str>>,
    /// Executables of the ancestors the analyzer knows, parent first.
    pub lineage: Vec<Arc<str>>,
}

/// A network peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: Arc<str>,
    pub port: u16,
}

/// What was seen, against what the baseline holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Anomaly {
    /// What was measured (`process.path`, `dst_endpoint.port/peer class`, …).
    pub parameter: String,
    /// The observed value and how often in this alert's window.
    pub observed: String,
    /// What the baseline holds for the same phase and kind, most frequent
    /// first, with counts (empty: nothing, or no baseline needed).
    pub baseline: Vec<(String, u64)>,
    /// Replicas of the workload that showed the observed value, of all
    /// replicas seen; hosts likewise.
    pub fleet: Option<Fleet>,
}

/// Fleet prevalence of an observed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fleet {
    pub replicas_with: u32,
    pub replicas: u32,
    pub hosts_with: u32,
    pub hosts: u32,
    /// Names of the hosts the baseline learned it from (at most
    /// [`FLEET_HOST_NAMES`]); for something the baseline does not hold,
    /// the host of the event.
    pub host_names: Vec<String>,
}

/// Host names an alert lists as having shown what it reports.
pub const FLEET_HOST_NAMES: usize = 8;

/// One finding.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub workload: Arc<str>,
    /// What kind of finding (`baseline.novel.exec`, `rule.drift`, …).
    pub rule: &'static str,
    /// Deduplication key within the workload: rule and the observed value.
    pub key: String,
    pub title: String,
    pub desc: String,
    pub severity: Severity,
    /// 0..=100.
    pub confidence: u8,
    pub technique: Option<Technique>,
    pub anomaly: Anomaly,
    pub container: Container,
    pub process: Option<Process>,
    pub endpoint: Option<Endpoint>,
    pub file: Option<Arc<str>>,
    pub baseline_version: u64,
    pub baseline_state: &'static str,
    pub score: f64,
    /// Event time, Unix ns.
    pub time_ns: i64,
    /// Stable id of the event (agent, boot, batch, index), when one event.
    pub event_id: Option<String>,
}
