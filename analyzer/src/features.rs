//! What a baseline learns: the features an event shows, in the phase of its
//! container's life it happened in.
//!
//! | kind | value | from |
//! |---|---|---|
//! | `exec` | the program: executable path, with the name it was invoked as when that differs (`/bin/busybox (wget)`, see [`program`]) | process exec / running |
//! | `lineage` | `parent exe -> program` | process exec / running |
//! | `args` | the program and its argument shape (numbers, hex, UUIDs, temp names masked) | process exec |
//! | `shell` | interactive shell executable (a shell without `-c` or a script) | process exec |
//! | `connect` | `port/peer class` (`loopback`, `cluster`, `private`, `public`) | outbound TCP connect |
//! | `peer` | `address:port` | outbound TCP connect |
//! | `listen` | port | listening socket |
//! | `file` | path written under a sensitive directory | file write / create |
//! | `drift` | executable path | exec of a file not in the image |
//! | `syscall` | syscall name (or `nr N`) | syscall profile |
//!
//! Phases: `startup` (the first [`Phases::startup_ns`] of a container, from
//! the first event the analyzer saw of it), `steady`, and `exec_in`
//! (processes entered from outside: `kubectl exec`, probes). Each phase is
//! learned separately: what a container does while it starts is not normal
//! later on.

use std::fmt;
use std::net::IpAddr;

use glasshouse_proto::{file, network, process};
use serde::{Deserialize, Serialize};

/// Where in a container's life an event happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Startup,
    Steady,
    ExecIn,
}

impl Phase {
    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::Startup => "startup",
            Phase::Steady => "steady",
            Phase::ExecIn => "exec_in",
        }
    }
}

/// The kinds of feature (see the module table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Exec,
    Lineage,
    Args,
    Shell,
    Connect,
    Peer,
    Listen,
    File,
    Drift,
    Syscall,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Exec,
        Kind::Lineage,
        Kind::Args,
        Kind::Shell,
        Kind::Connect,
        Kind::Peer,
        Kind::Listen,
        Kind::File,
        Kind::Drift,
        Kind::Syscall,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Exec => "exec",
            Kind::Lineage => "lineage",
            Kind::Args => "args",
            Kind::Shell => "shell",
            Kind::Connect => "connect",
            Kind::Peer => "peer",
            Kind::Listen => "listen",
            Kind::File => "file",
            Kind::Drift => "drift",
            Kind::Syscall => "syscall",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// What the feature's value is, as an OCSF observation parameter.
    pub const fn parameter(self) -> &'static str {
        match self {
            Kind::Exec | Kind::Drift | Kind::Shell => "process.path",
            Kind::Lineage => "process.parent_process.path -> process.path",
            Kind::Args => "process.cmd_line (shape)",
            Kind::Connect => "dst_endpoint.port/peer class",
            Kind::Peer => "dst_endpoint.ip:port",
            Kind::Listen => "listening port",
            Kind::File => "file.path (written)",
            Kind::Syscall => "syscall",
        }
    }
}

/// One feature: its kind, the phase it was shown in, and its value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Feature {
    pub phase: Phase,
    pub kind: Kind,
    pub value: String,
}

/// Longest feature value kept; longer values are cut (and marked).
pub const MAX_VALUE: usize = 512;

impl Feature {
    pub fn new(phase: Phase, kind: Kind, value: impl Into<String>) -> Feature {
        let mut value: String = value.into();
        if value.len() > MAX_VALUE {
            let mut cut = MAX_VALUE;
            while !value.is_char_boundary(cut) {
                cut -= 1;
            }
            value.truncate(cut);
            value.push('…');
        }
        Feature { phase, kind, value }
    }

    /// The text form used as a key in baseline snapshots: `phase|kind|value`.
    pub fn key(&self) -> String {
        format!("{}|{}|{}", self.phase.as_str(), self.kind.as_str(), self.value)
    }

    /// The inverse of [`Feature::key`].
    pub fn from_key(key: &str) -> Option<Feature> {
        let mut parts = key.splitn(3, '|');
        let phase = match parts.next()? {
            "startup" => Phase::Startup,
            "steady" => Phase::Steady,
            "exec_in" => Phase::ExecIn,
            _ => return None,
        };
        let kind = Kind::parse(parts.next()?)?;
        Some(Feature {
            phase,
            kind,
            value: parts.next()?.to_owned(),
        })
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.phase.as_str(), self.kind.as_str(), self.value)
    }
}

/// How long a container's start-up phase lasts.
#[derive(Debug, Clone, Copy)]
pub struct Phases {
    pub startup_ns: i64,
}

impl Phases {
    /// The phase of an event at `time_ns` of a container first seen at
    /// `container_first_ns`; `exec_in` wins, and processes that were already
    /// running when the agent started are steady.
    pub fn of(&self, exec_in: bool, pre_existing: bool, container_first_ns: i64, time_ns: i64) -> Phase {
        if exec_in {
            Phase::ExecIn
        } else if pre_existing || time_ns.saturating_sub(container_first_ns) >= self.startup_ns {
            Phase::Steady
        } else {
            Phase::Startup
        }
    }
}

/// The features of a process event (exec and running only; forks and exits
/// show nothing a baseline keeps).
pub fn of_process(row: &process::Row, phase: Phase) -> Vec<Feature> {
    if !matches!(row.kind, process::Kind::Exec | process::Kind::Running) {
        return Vec::new();
    }
    let Some(path) = row.path.as_deref() else {
        return Vec::new();
    };
    let program = program(path, &row.argv);
    let mut out = vec![Feature::new(phase, Kind::Exec, program.clone())];
    if let Some(parent) = row.parent_exe.as_deref() {
        out.push(Feature::new(phase, Kind::Lineage, format!("{parent} -> {program}")));
    }
    if row.kind == process::Kind::Exec {
        out.push(Feature::new(phase, Kind::Args, args_shape(&program, &row.argv)));
        if is_interactive_shell(path, &row.argv) {
            out.push(Feature::new(phase, Kind::Shell, path));
        }
        if row.drift {
            out.push(Feature::new(phase, Kind::Drift, path));
        }
    }
    out
}

/// The features of a network event: outbound connects and listening sockets.
pub fn of_network(row: &network::Row, phase: Phase, cluster: &[Cidr]) -> Vec<Feature> {
    match row.kind {
        network::Kind::Connect | network::Kind::ConnectFailed => {
            let Some(addr) = row.remote_addr.as_deref() else {
                return Vec::new();
            };
            let class = peer_class(addr, cluster);
            vec![
                Feature::new(phase, Kind::Connect, format!("{}/{}", row.remote_port, class.as_str())),
                Feature::new(phase, Kind::Peer, peer(addr, row.remote_port)),
            ]
        }
        network::Kind::Listen => vec![Feature::new(phase, Kind::Listen, row.local_port.to_string())],
        network::Kind::Accept | network::Kind::Close => Vec::new(),
    }
}

/// The features of a sensitive file write.
pub fn of_file(row: &file::Row, phase: Phase) -> Vec<Feature> {
    vec![Feature::new(phase, Kind::File, &*row.path)]
}

/// What a process runs: its executable, and the name it was invoked as
/// (`argv[0]`'s file name) when that differs, as multi-call binaries such
/// as busybox choose what to do by it: `/bin/busybox (wget)`.
pub fn program(path: &str, argv: &[impl AsRef<str>]) -> String {
    fn base(s: &str) -> &str {
        s.rsplit('/').next().unwrap_or(s)
    }
    match argv.first().map(|a| base(a.as_ref())) {
        Some(name) if !name.is_empty() && name != base(path) => {
            format!("{path} ({})", mask(name.trim_start_matches('-')))
        }
        _ => path.to_owned(),
    }
}

/// `addr:port`, with brackets around IPv6 addresses.
pub fn peer(addr: &str, port: u16) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

/// Shells whose interactive use is worth a finding.
const SHELLS: [&str; 11] = [
    "sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "tcsh", "csh", "fish", "busybox",
];

/// Whether `path` is a shell (by file name).
pub fn is_shell(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    SHELLS.contains(&name)
}

/// A shell run for a person, not a script: no `-c` command and no script
/// operand (only options such as `-i`, `-l`, `-`). `busybox` counts when its
/// applet (`argv[0]` or the first argument) is a shell.
pub fn is_interactive_shell(path: &str, argv: &[impl AsRef<str>]) -> bool {
    if !is_shell(path) {
        return false;
    }
    let mut args: Vec<&str> = argv.iter().skip(1).map(AsRef::as_ref).collect();
    if path.ends_with("/busybox") || path == "busybox" {
        let applet = argv.first().map(AsRef::as_ref).unwrap_or_default();
        let applet = applet.rsplit('/').next().unwrap_or(applet);
        if applet == "busybox" {
            // `busybox sh ...`: the applet is the first argument.
            match args.first() {
                Some(a) if is_shell(a) && *a != "busybox" => {
                    args.remove(0);
                }
                _ => return false,
            }
        } else if !is_shell(applet) {
            return false;
        }
    }
    // Every argument an option: long options, or short-option clusters
    // without `c` (`-i`, `-l`, `-`).
    args.iter()
        .all(|a| a.starts_with("--") || (a.starts_with('-') && !a.contains('c')))
}

/// The shape of a command line: the executable and its first arguments with
/// variable parts masked, so `worker --id 17` and `worker --id 42` are one
/// feature. At most 8 arguments, each masked by [`mask`].
pub fn args_shape(path: &str, argv: &[impl AsRef<str>]) -> String {
    let mut out = String::with_capacity(path.len() + 32);
    out.push_str(path);
    for (i, arg) in argv.iter().skip(1).enumerate() {
        if i == 8 {
            out.push_str(" …");
            break;
        }
        out.push(' ');
        mask_into(arg.as_ref(), &mut out);
    }
    out
}

/// Masks the variable parts of one argument: temporary paths become
/// `<tmp>`, UUIDs `<uuid>`, hex runs of 8 or more digits `<hex>`, numbers
/// `<n>`. Arguments are cut at 64 characters.
pub fn mask(arg: &str) -> String {
    let mut out = String::new();
    mask_into(arg, &mut out);
    out
}

/// [`mask`], appending to `out`.
fn mask_into(arg: &str, out: &mut String) {
    for tmp in ["/tmp/", "/var/tmp/", "/dev/shm/"] {
        if let Some(rest) = arg.strip_prefix(tmp)
            && !rest.is_empty()
        {
            out.push_str(tmp);
            out.push_str("<tmp>");
            return;
        }
    }
    // Nothing to mask (the common case): copy, cut at 64 characters.
    if !arg.bytes().any(|b| b.is_ascii_digit()) {
        match arg.char_indices().nth(64) {
            Some((cut, _)) => {
                out.push_str(&arg[..cut]);
                out.push('…');
            }
            None => out.push_str(arg),
        }
        return;
    }
    let chars: Vec<char> = arg.chars().take(64).collect();
    let mut i = 0;
    while i < chars.len() {
        if let Some(n) = uuid_at(&chars[i..]) {
            out.push_str("<uuid>");
            i += n;
            continue;
        }
        let run = chars[i..].iter().take_while(|c| c.is_ascii_hexdigit()).count();
        let starts_word = i == 0 || !chars[i - 1].is_ascii_alphanumeric();
        let ends_word = chars.get(i + run).is_none_or(|c| !c.is_ascii_alphanumeric());
        if run >= 8 && starts_word && ends_word && chars[i..i + run].iter().any(char::is_ascii_digit) {
            out.push_str("<hex>");
            i += run;
            continue;
        }
        if chars[i].is_ascii_digit() {
            let digits = chars[i..].iter().take_while(|c| c.is_ascii_digit()).count();
            out.push_str("<n>");
            i += digits;
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    if arg.chars().nth(64).is_some() {
        out.push('…');
    }
}

/// Length of a UUID (8-4-4-4-12 hex digits) at the start of `c`, if any.
fn uuid_at(c: &[char]) -> Option<usize> {
    const GROUPS: [usize; 5] = [8, 4, 4, 4, 12];
    let mut i = 0;
    for (g, len) in GROUPS.iter().enumerate() {
        if g > 0 {
            if c.get(i) != Some(&'-') {
                return None;
            }
            i += 1;
        }
        if c.len() < i + len || !c[i..i + len].iter().all(char::is_ascii_hexdigit) {
            return None;
        }
        i += len;
    }
    Some(i)
}

/// The kind of network a peer is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerClass {
    Loopback,
    /// One of the configured cluster networks.
    Cluster,
    /// RFC 1918, link-local, unique-local IPv6.
    Private,
    Public,
}

impl PeerClass {
    pub const fn as_str(self) -> &'static str {
        match self {
            PeerClass::Loopback => "loopback",
            PeerClass::Cluster => "cluster",
            PeerClass::Private => "private",
            PeerClass::Public => "public",
        }
    }
}

/// An address block, `ADDR/BITS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    bits: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.bits)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, bits) = s.split_once('/').ok_or_else(|| format!("`{s}` is not ADDRESS/BITS"))?;
        let addr: IpAddr = addr.parse().map_err(|e| format!("`{s}`: {e}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits: u8 = bits
            .parse()
            .ok()
            .filter(|b| *b <= max)
            .ok_or_else(|| format!("`{s}`: prefix length must be 0 to {max}"))?;
        Ok(Cidr { addr, bits })
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The class of peer address `addr` (text form, as the agent reports it).
pub fn peer_class(addr: &str, cluster: &[Cidr]) -> PeerClass {
    let Ok(ip) = addr.parse::<IpAddr>() else {
        return PeerClass::Public;
    };
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    if ip.is_loopback() {
        return PeerClass::Loopback;
    }
    if cluster.iter().any(|c| c.contains(ip)) {
        return PeerClass::Cluster;
    }
    let private = match ip {
        IpAddr::V4(v4) => v4.is_private() || v4.is_link_local() || v4.is_unspecified(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00 || (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    if private { PeerClass::Private } else { PeerClass::Public }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_shapes_mask_what_varies() {
        assert_eq!(mask("--id=17"), "--id=<n>");
        assert_eq!(mask("/tmp/tmp.Xa81kQ"), "/tmp/<tmp>");
        assert_eq!(mask("/tmp/"), "/tmp/");
        assert_eq!(mask("550e8400-e29b-41d4-a716-446655440000"), "<uuid>");
        assert_eq!(mask("sha=deadbeef0123"), "sha=<hex>");
        // Words made of hex letters alone are words.
        assert_eq!(mask("facade"), "facade");
        assert_eq!(mask("10.1.2.3:8080"), "<n>.<n>.<n>.<n>:<n>");
        assert_eq!(
            args_shape("/app/worker", &["worker", "--id", "17", "--job", "/tmp/job-1"]),
            "/app/worker --id <n> --job /tmp/<tmp>"
        );
        assert_eq!(
            args_shape("/app/worker", &["worker", "--id", "42", "--job", "/tmp/job-9"]),
            args_shape("/app/worker", &["worker", "--id", "17", "--job", "/tmp/job-1"])
        );
        let many: Vec<String> = (0..20).map(|i| format!("a{i}")).collect();
        assert!(args_shape("/x", &many).ends_with(" …"));
        let long = "x".repeat(100);
        assert_eq!(mask(&long).chars().count(), 65);
    }

    #[test]
    fn multi_call_binaries_are_told_apart_by_their_name() {
        assert_eq!(program("/bin/busybox", &["wget", "-q"]), "/bin/busybox (wget)");
        assert_eq!(program("/bin/busybox", &["/bin/sh", "-c", "x"]), "/bin/busybox (sh)");
        assert_eq!(program("/bin/busybox", &["-sh"]), "/bin/busybox (sh)");
        assert_eq!(program("/usr/bin/python3", &["python3"]), "/usr/bin/python3");
        assert_eq!(program("/app/worker", &["/app/worker"]), "/app/worker");
        assert_eq!(program("/app/worker", &[] as &[&str]), "/app/worker");
        assert_eq!(program("/app/w", &["w-7"]), "/app/w (w-<n>)");
    }

    #[test]
    fn interactive_shells_are_told_from_scripts() {
        assert!(is_interactive_shell("/bin/sh", &["sh"]));
        assert!(is_interactive_shell("/bin/bash", &["bash", "-i"]));
        assert!(is_interactive_shell("/bin/bash", &["-bash"]));
        assert!(is_interactive_shell("/bin/sh", &["sh", "-"]));
        assert!(!is_interactive_shell("/bin/sh", &["sh", "-c", "echo hi"]));
        assert!(!is_interactive_shell("/bin/sh", &["sh", "-ec", "echo hi"]));
        assert!(!is_interactive_shell("/bin/sh", &["sh", "/entrypoint.sh"]));
        assert!(!is_interactive_shell("/usr/bin/python3", &["python3"]));
        // busybox: by applet name, or `busybox sh`.
        assert!(is_interactive_shell("/bin/busybox", &["sh"]));
        assert!(is_interactive_shell("/bin/busybox", &["busybox", "sh"]));
        assert!(!is_interactive_shell("/bin/busybox", &["ls", "-l"]));
        assert!(!is_interactive_shell("/bin/busybox", &["sh", "-c", "true"]));
    }

    #[test]
    fn peers_are_classified() {
        let cluster: Vec<Cidr> = vec!["10.88.0.0/16".parse().unwrap(), "fd00:1::/64".parse().unwrap()];
        assert_eq!(peer_class("127.0.0.1", &cluster), PeerClass::Loopback);
        assert_eq!(peer_class("::1", &cluster), PeerClass::Loopback);
        assert_eq!(peer_class("::ffff:127.0.0.1", &cluster), PeerClass::Loopback);
        assert_eq!(peer_class("10.88.0.7", &cluster), PeerClass::Cluster);
        assert_eq!(peer_class("fd00:1::5", &cluster), PeerClass::Cluster);
        assert_eq!(peer_class("10.1.0.7", &cluster), PeerClass::Private);
        assert_eq!(peer_class("192.168.1.1", &cluster), PeerClass::Private);
        assert_eq!(peer_class("fd00:2::5", &cluster), PeerClass::Private);
        assert_eq!(peer_class("8.8.8.8", &cluster), PeerClass::Public);
        assert_eq!(peer_class("2001:db8::1", &cluster), PeerClass::Public);
        assert_eq!(peer_class("garbage", &cluster), PeerClass::Public);
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("10.0.0.0".parse::<Cidr>().is_err());
        assert!(
            "0.0.0.0/0"
                .parse::<Cidr>()
                .unwrap()
                .contains("1.2.3.4".parse().unwrap())
        );
        assert_eq!(peer("10.0.0.1", 80), "10.0.0.1:80");
        assert_eq!(peer("fd00::1", 80), "[fd00::1]:80");
    }

    #[test]
    fn feature_keys_round_trip() {
        let f = Feature::new(Phase::ExecIn, Kind::Lineage, "/bin/sh -> /bin/x|y");
        assert_eq!(Feature::from_key(&f.key()), Some(f));
        assert_eq!(Feature::from_key("nope|exec|x"), None);
        let long = Feature::new(Phase::Steady, Kind::File, "a".repeat(1000));
        assert!(long.value.len() <= MAX_VALUE + '…'.len_utf8());
    }

    #[test]
    fn phases() {
        let p = Phases {
            startup_ns: 60_000_000_000,
        };
        assert_eq!(p.of(false, false, 0, 1), Phase::Startup);
        assert_eq!(p.of(false, false, 0, 60_000_000_000), Phase::Steady);
        assert_eq!(p.of(true, false, 0, 1), Phase::ExecIn);
        assert_eq!(p.of(false, true, 0, 1), Phase::Steady);
    }
}
