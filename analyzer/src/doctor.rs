//! `glasshouse doctor`: checks what Glasshouse needs on this host and
//! whether the stack's parts answer, and prints for each problem the exact
//! fix. Each check gives one [`Check`]; the exit status is 1 when one failed.
//!
//! ```text
//! kernel features ─┐
//! runtime sockets ─┼─▶ Vec<Check> ─▶ report (ok / warn / FAIL + fix) ─▶ exit status
//! stack endpoints ─┤
//! keys, clock, disk┘
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use glasshouse_runtime::kafka::Kafka;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

/// One check: what was looked at, what was found, and the fix when it is not ok.
#[derive(Debug, Clone)]
pub struct Check {
    pub status: Status,
    pub what: String,
    pub found: String,
    pub fix: Option<String>,
}

impl Check {
    fn new(status: Status, what: impl Into<String>, found: impl Into<String>, fix: Option<String>) -> Check {
        Check {
            status,
            what: what.into(),
            found: found.into(),
            fix,
        }
    }
    fn ok(what: impl Into<String>, found: impl Into<String>) -> Check {
        Check::new(Status::Ok, what, found, None)
    }
    fn warn(what: impl Into<String>, found: impl Into<String>, fix: impl Into<String>) -> Check {
        Check::new(Status::Warn, what, found, Some(fix.into()))
    }
    fn fail(what: impl Into<String>, found: impl Into<String>, fix: impl Into<String>) -> Check {
        Check::new(Status::Fail, what, found, Some(fix.into()))
    }
}

/// Where the parts of the stack are (the local stack's addresses by default).
#[derive(Debug, Clone)]
pub struct Targets {
    pub kafka: Kafka,
    pub aggregator: String,
    pub analyzer: String,
    pub analyzer_token_file: Option<PathBuf>,
    pub query: String,
    pub control_key_file: Option<PathBuf>,
    pub sql_token_file: Option<PathBuf>,
    pub spool_dir: PathBuf,
    pub lake_dir: PathBuf,
    pub runtime_sockets: Vec<PathBuf>,
}

/// Runs every check, in the order of the report.
pub async fn run(t: &Targets) -> Vec<Check> {
    let mut checks = host_checks(&t.runtime_sockets);
    let kafka = t.kafka.clone();
    checks.push(
        tokio::task::spawn_blocking(move || broker(&kafka))
            .await
            .unwrap_or_else(|e| Check::fail("broker", e.to_string(), "report this as a bug")),
    );
    checks.push(tcp("aggregator", &t.aggregator, "glasshouse-aggregator (gRPC ingest)").await);
    checks.push(analyzer(&t.analyzer, t.analyzer_token_file.as_deref()).await);
    checks.push(tcp("query service", &t.query, "glasshouse-query (PostgreSQL wire)").await);
    checks.push(secret_file(
        "control key",
        t.control_key_file.as_deref(),
        32,
        "the analyzers' control_key_file: pass --control-key-file or set GLASSHOUSE_CONTROL_KEY_FILE \
         (run.sh's glasshouse on PATH sets it)",
    ));
    checks.push(secret_file(
        "SQL password",
        t.sql_token_file.as_deref(),
        1,
        "the query service's [sql] password_file: set GLASSHOUSE_SQL_TOKEN_FILE \
         (run.sh's glasshouse on PATH sets it)",
    ));
    checks.push(clock());
    checks.push(disk("spool", &t.spool_dir));
    checks.push(disk("lake", &t.lake_dir));
    checks
}

/// The kernel and host features the agent needs, and the runtimes' sockets.
pub fn host_checks(runtime_sockets: &[PathBuf]) -> Vec<Check> {
    let mut out = Vec::new();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let release = release.trim();
    out.push(if Path::new("/sys/kernel/btf/vmlinux").exists() {
        Check::ok("kernel BTF", format!("{release}: /sys/kernel/btf/vmlinux"))
    } else {
        Check::fail(
            "kernel BTF",
            format!("{release}: no /sys/kernel/btf/vmlinux"),
            "boot a kernel built with CONFIG_DEBUG_INFO_BTF=y (Debian 11+ kernels are); without it the agent \
             falls back to the netlink proc connector (no file, drift or syscall events)",
        )
    });
    out.push(bpf_ring_buffer());
    let lsm = std::fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
    out.push(if lsm.split(',').any(|l| l.trim() == "bpf") {
        Check::ok("BPF LSM", format!("active ({})", lsm.trim()))
    } else {
        Check::warn(
            "BPF LSM",
            format!(
                "not in the active LSMs ({})",
                if lsm.is_empty() { "unknown" } else { lsm.trim() }
            ),
            "not needed by today's sensors; to enable it add lsm=...,bpf to the kernel command line \
             (GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub and reboot)",
        )
    });
    out.push(if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        Check::ok("cgroup v2", "unified hierarchy at /sys/fs/cgroup")
    } else {
        Check::warn(
            "cgroup v2",
            "cgroup v1 or hybrid hierarchy",
            "supported (v1 paths are read too); for cgroup v2 boot with systemd.unified_cgroup_hierarchy=1; \
             Podman here needs --cgroup-manager cgroupfs (deploy/local/setup.sh configures it)",
        )
    });
    let tracefs = ["/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events"];
    out.push(match tracefs.iter().find(|p| Path::new(p).exists()) {
        Some(p) => Check::ok("tracefs", format!("mounted ({})", p.trim_end_matches("/events"))),
        None => Check::warn(
            "tracefs",
            "not mounted",
            "the agent mounts it at start when it can; or: mount -t tracefs nodev /sys/kernel/tracing",
        ),
    });
    out.push(runtimes(runtime_sockets));
    out
}

/// Creates (and closes) a BPF ring buffer map: the bpf() syscall works for
/// this user and the kernel has ring buffers (5.8+).
fn bpf_ring_buffer() -> Check {
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_TYPE_RINGBUF: u32 = 27;
    // union bpf_attr for BPF_MAP_CREATE: map_type, key_size, value_size,
    // max_entries, then fields left zero (the kernel checks the tail is zero).
    let mut attr = [0u32; 30];
    attr[0] = BPF_MAP_TYPE_RINGBUF;
    attr[3] = 4096;
    let size = size_of_val(&attr);
    // SAFETY: bpf(2) reads `size` bytes of `attr`, which this frame owns.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_CREATE, attr.as_mut_ptr(), size) };
    if fd >= 0 {
        // SAFETY: closing the descriptor the syscall just returned.
        unsafe { libc::close(fd as libc::c_int) };
        return Check::ok("eBPF", "bpf() works and ring buffer maps can be created");
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => Check::fail(
            "eBPF",
            format!("bpf() refused: {e}"),
            "run the agent as root (or with CAP_BPF, CAP_PERFMON and CAP_SYS_RESOURCE); \
             check kernel.unprivileged_bpf_disabled only matters for non-root",
        ),
        Some(libc::ENOSYS) => Check::fail(
            "eBPF",
            "the kernel has no bpf() syscall",
            "boot a kernel with CONFIG_BPF_SYSCALL=y; the agent falls back to the netlink proc connector",
        ),
        _ => Check::fail(
            "eBPF",
            format!("cannot create a ring buffer map: {e}"),
            "boot a 5.8+ kernel (ring buffers); the agent falls back to the netlink proc connector",
        ),
    }
}

fn runtimes(sockets: &[PathBuf]) -> Check {
    let answering: Vec<String> = sockets
        .iter()
        .filter(|s| std::os::unix::net::UnixStream::connect(s).is_ok())
        .map(|s| s.display().to_string())
        .collect();
    if answering.is_empty() {
        let tried: Vec<String> = sockets.iter().map(|s| s.display().to_string()).collect();
        Check::fail(
            "container runtime",
            format!("no runtime socket answers ({})", tried.join(", ")),
            "start one: podman system service --time=0 unix:///run/podman/podman.sock & \
             (run.sh does), or Docker, containerd or CRI-O; without one containers have no names or images",
        )
    } else {
        Check::ok("container runtime", answering.join(", "))
    }
}

fn broker(kafka: &Kafka) -> Check {
    let what = format!("broker {kafka}");
    let consumer: Result<BaseConsumer, _> =
        glasshouse_runtime::kafka::for_consumer(&mut kafka.client(&[("group.id", "glasshouse-doctor")])).create();
    let consumer = match consumer {
        Ok(c) => c,
        Err(e) => return Check::fail(what, e.to_string(), "check --brokers and the -X properties"),
    };
    match consumer.fetch_metadata(None, Duration::from_secs(5)) {
        Ok(md) => {
            let missing: Vec<&str> = glasshouse_runtime::kafka::all_topics()
                .into_iter()
                .map(|(t, _)| t)
                .filter(|t| !md.topics().iter().any(|m| m.name() == *t))
                .collect();
            if missing.is_empty() {
                Check::ok(
                    what,
                    format!("{} brokers, every Glasshouse topic exists", md.brokers().len()),
                )
            } else {
                Check::warn(
                    what,
                    format!("answers; topics missing: {}", missing.join(", ")),
                    "start the aggregator once: it creates every topic",
                )
            }
        }
        Err(e) => Check::fail(
            what,
            format!("no answer: {e}"),
            "start the broker (./deploy/local/run.sh starts tansu on 127.0.0.1:9092) or pass --brokers HOST:PORT",
        ),
    }
}

async fn tcp(name: &str, addr: &str, program: &str) -> Check {
    let what = format!("{name} {addr}");
    match tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Check::ok(what, "accepts connections"),
        Ok(Err(e)) => Check::fail(
            what,
            format!("not reachable: {e}"),
            format!("start {program} (./deploy/local/run.sh does), or pass the address it listens on"),
        ),
        Err(_) => Check::fail(what, "no answer in 3 s", "check firewalls between here and it"),
    }
}

async fn analyzer(addr: &str, token_file: Option<&Path>) -> Check {
    let what = format!("analyzer {addr}");
    let token = token_file.and_then(|f| crate::cli::metrics_token(f).ok());
    match crate::cli::http_get(addr, "/health", token.as_deref()).await {
        Ok(body) if body.trim() == "ok" => Check::ok(what, "/health: ok"),
        Ok(body) => Check::warn(
            what,
            format!("/health: {}", crate::escape::terminal(body.trim())),
            "see the analyzer's log: alerts wait for Kafka or were dropped",
        ),
        Err(e) => Check::fail(
            what,
            format!("/health: {}", glasshouse_runtime::service::error_chain(&e)),
            "start glasshouse-analyzer with metrics_listen at this address (deploy/local/analyzer.toml: 127.0.0.1:9466), \
             or pass --analyzer; with metrics_token_file pass --token-file",
        ),
    }
}

fn secret_file(what: &str, path: Option<&Path>, min_len: usize, fix: &str) -> Check {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = path else {
        return Check::warn(what, "no file given", fix);
    };
    let what = format!("{what} {}", path.display());
    match (std::fs::read(path), std::fs::metadata(path)) {
        (Ok(bytes), Ok(meta)) => {
            let len = String::from_utf8_lossy(&bytes).trim().len();
            let mode = meta.permissions().mode() & 0o777;
            if len < min_len {
                Check::fail(
                    what,
                    format!("{len} bytes"),
                    format!("needs at least {min_len} bytes: {fix}"),
                )
            } else if mode & 0o077 != 0 {
                Check::warn(
                    what,
                    format!("readable by others (mode {mode:o})"),
                    format!("chmod 600 {}", path.display()),
                )
            } else {
                Check::ok(what, format!("{len} bytes, mode {mode:o}"))
            }
        }
        (Err(e), _) | (_, Err(e)) => Check::fail(what, e.to_string(), fix),
    }
}

/// Whether the kernel considers the clock synchronised (NTP): events are
/// ordered and windowed by their hosts' clocks.
fn clock() -> Check {
    // SAFETY: `timex` is plain data; all zeroes is a valid value.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: adjtimex with modes 0 only reads the kernel's clock state into `tx`.
    let state = unsafe { libc::adjtimex(&mut tx) };
    match state {
        libc::TIME_ERROR => Check::warn(
            "clock",
            "not synchronised (adjtimex: TIME_ERROR)",
            "enable time synchronisation: apt-get install chrony (or systemctl enable --now systemd-timesyncd); \
             skewed hosts misorder events and windows",
        ),
        s if s < 0 => Check::warn("clock", std::io::Error::last_os_error().to_string(), "check adjtimex"),
        _ => Check::ok("clock", format!("synchronised, estimated error {} µs", tx.esterror)),
    }
}

/// Free space where `dir` is (or would be: its nearest existing ancestor).
fn disk(name: &str, dir: &Path) -> Check {
    let mut at = dir;
    while !at.exists() {
        match at.parent() {
            Some(p) => at = p,
            None => break,
        }
    }
    let what = format!("{name} disk {}", dir.display());
    let Ok(c) = std::ffi::CString::new(at.as_os_str().as_encoded_bytes()) else {
        return Check::fail(what, "path holds a NUL byte", "fix the path");
    };
    // SAFETY: `statvfs` is plain data; all zeroes is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs writes into `st`, which this frame owns; `c` is NUL-terminated.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Check::fail(what, std::io::Error::last_os_error().to_string(), "check the path");
    }
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    let total = st.f_blocks.saturating_mul(st.f_frsize).max(1);
    let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
    let found = format!(
        "{:.1} GiB free of {:.1} GiB ({}%)",
        gib(free),
        gib(total),
        free * 100 / total
    );
    if free < 1 << 30 {
        Check::fail(
            what,
            found,
            format!("free space on the file system of {}", at.display()),
        )
    } else if free * 10 < total {
        Check::warn(
            what,
            found,
            format!("less than 10% free: free space on the file system of {}", at.display()),
        )
    } else {
        Check::ok(what, found)
    }
}

/// The report: one line per check, the fix indented under a problem.
pub fn report(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        let tag = match c.status {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        let _ = writeln!(out, "{tag}  {:<34} {}", c.what, c.found);
        if let Some(fix) = &c.fix {
            let _ = writeln!(out, "      fix: {fix}");
        }
    }
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    let warned = checks.iter().filter(|c| c.status == Status::Warn).count();
    let _ = writeln!(out, "{failed} failed, {warned} warnings, {} checks", checks.len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_shows_fixes_and_counts() {
        let r = report(&[
            Check::ok("a", "fine"),
            Check::fail("b", "down", "start b"),
            Check::warn("c", "meh", "tune c"),
        ]);
        assert!(r.contains("ok    a"), "{r}");
        assert!(r.contains("FAIL  b") && r.contains("      fix: start b"), "{r}");
        assert!(r.ends_with("1 failed, 1 warnings, 3 checks\n"), "{r}");
    }

    #[test]
    fn a_short_or_open_secret_file_is_reported() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("glasshouse-doctor-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("k");
        std::fs::write(&f, "short").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(secret_file("key", Some(&f), 32, "x").status, Status::Fail);
        std::fs::write(&f, "x".repeat(44)).unwrap();
        assert_eq!(secret_file("key", Some(&f), 32, "x").status, Status::Ok);
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(secret_file("key", Some(&f), 32, "x").status, Status::Warn);
        assert_eq!(
            secret_file("key", Some(&dir.join("none")), 32, "x").status,
            Status::Fail
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn disk_space_is_read_from_the_nearest_existing_folder() {
        let c = disk("lake", Path::new("/nonexistent/deeper/lake"));
        assert!(c.found.contains("GiB free"), "{c:?}");
    }
}
