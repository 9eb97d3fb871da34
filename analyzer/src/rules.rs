//! Detections that need no baseline: each rule looks at one record (or one
//! container's resource samples) and names what it saw, with its ATT&CK
//! technique. The engine attaches the phase and suppresses a rule once its
//! value is established in the workload's baseline (see [`RuleHit::kind`]).

use glasshouse_proto::{file, network, process};

use crate::features::{self, Kind};
use crate::finding::{self, Severity, Technique};

/// Syscalls whose first use by a stable workload is worth a finding.
pub const DANGEROUS_SYSCALLS: [&str; 12] = [
    "ptrace",
    "mount",
    "umount2",
    "unshare",
    "setns",
    "bpf",
    "init_module",
    "finit_module",
    "kexec_load",
    "pivot_root",
    "process_vm_writev",
    "open_by_handle_at",
];

/// Files whose modification is account manipulation.
const ACCOUNT_FILES: [&str; 4] = ["/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow"];

/// A detection that needs no baseline.
#[derive(Debug, Clone)]
pub struct RuleHit {
    pub rule: &'static str,
    /// The feature kind that, once established in the baseline, suppresses it.
    pub kind: Kind,
    pub title: String,
    pub desc: &'static str,
    pub severity: Severity,
    pub technique: Technique,
    pub value: String,
}

/// Rules of a process event: reverse and interactive shells, drift.
pub fn process(row: &process::Row) -> Vec<RuleHit> {
    let mut hits = Vec::new();
    if row.kind != process::Kind::Exec {
        return hits;
    }
    let path = row.path.as_deref().unwrap_or_default();
    let shell = features::is_shell(path)
        && (!path.ends_with("/busybox")
            || row.argv.first().is_some_and(|a| {
                let applet = a.rsplit('/').next().unwrap_or(a).trim_start_matches('-');
                features::is_shell(applet) && applet != "busybox"
            }));
    if shell && row.stdio_socket {
        hits.push(RuleHit {
            rule: "rule.reverse_shell",
            kind: Kind::Shell,
            title: format!("Reverse shell: {path} runs with its input or output on a socket"),
            desc: "A shell whose standard input or output is a network connection: someone remote is typing into it (a reverse or bind shell).",
            severity: Severity::Critical,
            technique: finding::UNIX_SHELL,
            value: format!("{path} (stdio socket)"),
        });
    } else if features::is_interactive_shell(path, &row.argv) {
        hits.push(RuleHit {
            rule: "rule.interactive_shell",
            kind: Kind::Shell,
            title: format!("Interactive shell {path} started in a workload that does not run one"),
            desc: "A shell without a command or script was started in the container: someone (or something) is typing commands into it.",
            severity: if row.exec_in { Severity::Medium } else { Severity::High },
            technique: finding::UNIX_SHELL,
            value: path.to_owned(),
        });
    }
    if row.drift {
        hits.push(RuleHit {
            rule: "rule.drift",
            kind: Kind::Drift,
            title: format!("Drift: {path} was not in the image and was executed"),
            desc: "An executable created or modified after the container started (in its writable layer, not its image) was run: typical of a downloaded tool or payload.",
            severity: Severity::High,
            technique: finding::INGRESS_TOOL_TRANSFER,
            value: path.to_owned(),
        });
    }
    hits
}

/// Rules of a network event: connections to mining-pool ports.
pub fn network(row: &network::Row, mining_ports: &[u16]) -> Vec<RuleHit> {
    let mut hits = Vec::new();
    if matches!(row.kind, network::Kind::Connect | network::Kind::ConnectFailed)
        && mining_ports.contains(&row.remote_port)
    {
        let peer = features::peer(row.remote_addr.as_deref().unwrap_or("?"), row.remote_port);
        hits.push(RuleHit {
            rule: "rule.mining.stratum_port",
            kind: Kind::Connect,
            title: format!("Connection to {peer}, a port used by cryptocurrency mining pools"),
            desc: "An outbound connection to a port typical of the Stratum mining protocol.",
            severity: Severity::High,
            technique: finding::RESOURCE_HIJACKING,
            value: row.remote_port.to_string(),
        });
    }
    hits
}

/// Rules of a file write: account databases, the sudo policy.
pub fn file(row: &file::Row) -> Vec<RuleHit> {
    let path: &str = &row.path;
    let hit = |rule, desc, technique| RuleHit {
        rule,
        kind: Kind::File,
        title: format!("{path} written in a container"),
        desc,
        severity: Severity::High,
        technique,
        value: path.to_owned(),
    };
    if ACCOUNT_FILES.contains(&path) {
        vec![hit(
            "rule.account_files",
            "The local account database was modified: a new or changed account, password or group.",
            finding::LOCAL_ACCOUNT,
        )]
    } else if path == "/etc/sudoers" || path.starts_with("/etc/sudoers.d/") {
        vec![hit(
            "rule.sudoers",
            "The sudo policy was modified: a way to gain root.",
            finding::SUDO,
        )]
    } else {
        Vec::new()
    }
}

/// Sustained CPU use of a container (`samples` samples in a row at
/// `cores` or more): a coin miner's signature.
pub fn sustained_cpu(cores: f64, samples: u32) -> RuleHit {
    RuleHit {
        rule: "rule.mining.cpu",
        kind: Kind::Exec,
        title: format!("Sustained CPU use: {cores:.2} cores for {samples} samples"),
        desc: "The container has used close to a full core or more for a sustained period: a coin miner's signature.",
        severity: Severity::High,
        technique: finding::RESOURCE_HIJACKING,
        value: "cpu".to_owned(),
    }
}
