//! The eBPF sensors: `bpf/sensors.bpf.c` on the raw tracepoints
//! `sched_process_exec`, `sched_process_fork`, `sched_process_exit` and
//! `inet_sock_set_state` (TCP connect, accept, listen, close with byte
//! counts, IPv4 and IPv6), and the tracepoints `syscalls/sys_exit_open*`
//! (files opened for writing under sensitive paths; exec "drift" is flagged on
//! exec records), read through one ring buffer. Unlike the proc connector it needs no `/proc` read
//! at exec: the kernel side copies argv, executable, cwd, credentials, the
//! parent's executable and the cgroup path as the exec happens, so a process
//! that exits at once is still reported in full.
//!
//! Host processes (the mount namespace of pid 1) are filtered in the kernel
//! unless `host_processes` is set. Records the ring buffer cannot take are
//! counted per cgroup in the kernel and added to
//! [`SensorStats::kernel_overflows`].
//!
//! Needs root (CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN) and a kernel with
//! BTF at `/sys/kernel/btf/vmlinux`.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use libbpf_rs::{MapCore, MapFlags};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use zerocopy::{FromBytes, IntoBytes};

use std::net::{IpAddr, SocketAddr};

use super::layout::{
    AF_INET, AF_INET6, ExecHead, FLAG_ARGV_CUT, FLAG_DRIFT, FLAG_PATH_CUT, FLAG_STDIO_SOCKET, Header, KIND_EXEC,
    KIND_EXIT, KIND_FILE, KIND_FORK, KIND_NET, ListenKey, Net, Owner,
};
use super::{
    DropsRaw, ExecRaw, ExitRaw, FileRaw, ForkRaw, ListenerSeed, NetworkRaw, RawEvent, SensorStats, SyscallRaw,
};
use crate::procfs::{self, Cgroup, ProcessInfo};

/// The compiled program (see `build.rs`).
pub(super) static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sensors.bpf.o"));

/// Where the syscall tracepoints' ids are read by libbpf.
const TRACEFS: &str = "/sys/kernel/tracing";
/// Longest a record waits in the ring buffer when too few arrive to wake us.
const DRAIN_INTERVAL: Duration = Duration::from_millis(25);
/// How often the kernel's per-cgroup drop counters are read.
const DROPS_INTERVAL: Duration = Duration::from_secs(1);

/// Why the eBPF sensor could not start (the agent then falls back to netlink).
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("eBPF sensor: {op}: {source}")]
    Load {
        op: &'static str,
        #[source]
        source: libbpf_rs::Error,
    },
    #[error("eBPF sensor: {0}")]
    Host(String),
    #[error("eBPF sensor thread: {0}")]
    Thread(#[source] std::io::Error),
}

fn load_err(op: &'static str) -> impl FnOnce(libbpf_rs::Error) -> BpfError {
    move |source| BpfError::Load { op, source }
}

/// What the kernel side is told before loading; the layout of `struct
/// gh_config` in `process.bpf.c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KernelConfig {
    host_mnt_ns: u32,
    host_processes: bool,
    /// v1 subsystem index whose hierarchy names containers, or -1 for cgroup v2.
    cgroup_subsys: i32,
}

/// The inode of the host's mount namespace: init's. Where init cannot be
/// inspected (a sandbox that hides it: even root gets EACCES), the agent's
/// own, which is the host's when the agent runs on the host.
fn host_mount_namespace() -> Result<u32, BpfError> {
    let ns = std::fs::metadata("/proc/1/ns/mnt")
        .or_else(|e| {
            tracing::warn!(
                error = %e,
                "this host hides init's mount namespace, so the agent's own is taken as the host's: \
                 right when the agent runs on the host; in a container, run it in the host's PID namespace (hostPID)"
            );
            std::fs::metadata("/proc/self/ns/mnt")
        })
        .map_err(|e| BpfError::Host(format!("cannot read the host mount namespace (/proc/self/ns/mnt): {e}")))?;
    u32::try_from(ns.ino()).map_err(|_| BpfError::Host(format!("mount namespace inode {} out of range", ns.ino())))
}

impl KernelConfig {
    fn detect(host_processes: bool) -> Result<KernelConfig, BpfError> {
        let host_mnt_ns = host_mount_namespace()?;
        let pure_v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let cgroup_subsys = if pure_v2 {
            -1
        } else {
            let table = std::fs::read_to_string("/proc/cgroups")
                .map_err(|e| BpfError::Host(format!("cannot read /proc/cgroups: {e}")))?;
            memory_subsys_index(&table).unwrap_or(-1)
        };
        Ok(KernelConfig {
            host_mnt_ns,
            host_processes,
            cgroup_subsys,
        })
    }

    /// The programs' `gh_cfg`.
    fn kernel(&self) -> super::layout::Config {
        super::layout::Config {
            host_mnt_ns: self.host_mnt_ns,
            host_processes: u32::from(self.host_processes),
            cgroup_subsys: self.cgroup_subsys,
            pad: 0,
        }
    }
}

/// The subsystem id of the v1 memory controller when it is mounted: the
/// position of its line in `/proc/cgroups`, which lists subsystems by id.
fn memory_subsys_index(table: &str) -> Option<i32> {
    table
        .lines()
        .filter(|l| !l.starts_with('#'))
        .enumerate()
        .find_map(|(i, line)| {
            let mut f = line.split_whitespace();
            let (name, hierarchy) = (f.next()?, f.next()?);
            (name == "memory" && hierarchy != "0").then(|| i32::try_from(i).ok())?
        })
}

/// A running eBPF sensor thread.
#[derive(Debug)]
pub struct BpfSensor {
    pub thread: std::thread::JoinHandle<()>,
    /// Listening sockets that existed before the sensor, for the kernel's
    /// listener table.
    pub seeds: std::sync::mpsc::Sender<ListenerSeed>,
}

/// Loads and attaches the programs on a new thread, which then forwards events
/// to `tx` until `cancel`. Returns once the programs are attached, or with the
/// reason they could not be.
/// What the eBPF sensors are asked to do.
#[derive(Debug, Clone)]
pub struct BpfOptions {
    pub host_processes: bool,
    /// Writes under these prefixes are reported (see [`crate::sensitive`]).
    pub sensitive_paths: Vec<String>,
    /// How often per-container syscall counts are read and reported.
    pub syscall_interval: Duration,
}

pub fn start(
    options: &BpfOptions,
    tx: mpsc::Sender<RawEvent>,
    stats: Arc<SensorStats>,
    cancel: CancellationToken,
) -> Result<BpfSensor, BpfError> {
    let config = KernelConfig::detect(options.host_processes)?;
    let tops = top_level_names(&options.sensitive_paths);
    let syscall_interval = options.syscall_interval;
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let (seeds, seed_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("bpf-sensor".into())
        .spawn(move || {
            // libbpf objects are not Send: everything lives on this thread.
            let object = match load(config, &tops) {
                Ok(o) => o,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            if let Err(e) = poll(&object.0, syscall_interval, &tx, &stats, &seed_rx, &cancel) {
                tracing::error!(error = %e, "eBPF sensor stopped");
            }
        })
        .map_err(BpfError::Thread)?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(BpfSensor { thread, seeds }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => Err(BpfError::Host("the sensor thread ended while loading".into())),
    }
}

/// The loaded object and its attachments (dropping them detaches).
struct Loaded(
    libbpf_rs::Object,
    #[expect(dead_code, reason = "held to keep the programs attached")] Vec<libbpf_rs::Link>,
);

/// The top-level directory names of the sensitive path prefixes: the kernel
/// side reports writes under these, user space then applies the prefixes. A
/// `*` or `~` first component (any top-level directory) is expanded to
/// `root` and `home` (home directories).
fn top_level_names(prefixes: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in prefixes {
        let first = p.trim_start_matches('/').split('/').next().unwrap_or_default();
        let names: &[&str] = match first {
            "" => continue,
            "~" | "*" => &["root", "home"],
            other => &[other],
        };
        for n in names {
            if !out.iter().any(|o| o == n) {
                out.push((*n).to_owned());
            }
        }
    }
    out
}

/// Makes sure tracefs is mounted (libbpf reads tracepoint ids there);
/// whether it is.
fn ensure_tracefs() -> bool {
    let events = Path::new(TRACEFS).join("events");
    if events.exists() || Path::new("/sys/kernel/debug/tracing/events").exists() {
        return true;
    }
    let (src, dst, fs) = (c"nodev", c"/sys/kernel/tracing", c"tracefs");
    // SAFETY: mount(2) with valid NUL-terminated strings and no data.
    let rc = unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot mount tracefs at {TRACEFS}");
    }
    events.exists()
}

fn load(config: KernelConfig, tops: &[String]) -> Result<Loaded, BpfError> {
    libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Warn, libbpf_log)));
    let mut open = libbpf_rs::ObjectBuilder::default()
        .open_memory(OBJECT)
        .map_err(load_err("open"))?;
    let mut configured = false;
    for mut map in open.maps_mut() {
        if map.name().to_string_lossy().ends_with(".rodata")
            && let Some(data) = map.initial_value_mut()
            && let Some(cfg) = data.get_mut(..size_of::<super::layout::Config>())
        {
            cfg.copy_from_slice(config.kernel().as_bytes());
            configured = true;
        }
    }
    if !configured {
        return Err(BpfError::Host("the program has no .rodata configuration".into()));
    }
    // The file sensor needs the syscall tracepoints: skip those this kernel
    // lacks (open and creat exist only on some architectures), or all of them
    // without tracefs; everything else still loads.
    let tracefs = ensure_tracefs();
    let mut skipped = Vec::new();
    for mut prog in open.progs_mut() {
        let section = prog.section().to_string_lossy().into_owned();
        if let Some(tp) = section.strip_prefix("tp/syscalls/")
            && !(tracefs && Path::new(TRACEFS).join("events/syscalls").join(tp).exists())
        {
            prog.set_autoload(false);
            skipped.push(tp.to_owned());
        }
    }
    if !skipped.is_empty() {
        tracing::warn!(
            ?skipped,
            "syscall tracepoints unavailable: file writes through them are not seen"
        );
    }
    let object = open.load().map_err(load_err("load (verifier)"))?;
    let top_map = map(&object, "sensitive_top")?;
    for name in tops {
        let mut key = [0u8; 16];
        if name.len() >= key.len() {
            tracing::warn!(name, "top-level directory name too long for the kernel filter, ignored");
            continue;
        }
        key[..name.len()].copy_from_slice(name.as_bytes());
        top_map
            .update(&key, &[1], MapFlags::ANY)
            .map_err(load_err("sensitive paths"))?;
    }
    let mut links = Vec::new();
    for prog in object.progs_mut() {
        if prog.autoload() {
            links.push(prog.attach().map_err(load_err("attach"))?);
        }
    }
    Ok(Loaded(object, links))
}

fn libbpf_log(level: libbpf_rs::PrintLevel, msg: String) {
    let msg = msg.trim_end();
    match level {
        libbpf_rs::PrintLevel::Warn => tracing::warn!(target: "libbpf", "{msg}"),
        libbpf_rs::PrintLevel::Info => tracing::info!(target: "libbpf", "{msg}"),
        libbpf_rs::PrintLevel::Debug => tracing::debug!(target: "libbpf", "{msg}"),
    }
}

fn map<'o>(object: &'o libbpf_rs::Object, name: &str) -> Result<libbpf_rs::Map<'o>, BpfError> {
    object
        .maps()
        .find(|m| m.name() == name)
        .ok_or_else(|| BpfError::Host(format!("the program has no map {name}")))
}

fn poll(
    object: &libbpf_rs::Object,
    syscall_interval: Duration,
    tx: &mpsc::Sender<RawEvent>,
    stats: &SensorStats,
    seeds: &std::sync::mpsc::Receiver<ListenerSeed>,
    cancel: &CancellationToken,
) -> Result<(), BpfError> {
    let listeners = map(object, "listeners")?;
    let offset = procfs::boottime_to_unix_offset_ns();
    let events = map(object, "events")?;
    let drops = map(object, "drops")?;
    // Records of one drain are handed over together: sent one by one while
    // parsing, each would wake the pipeline (a context switch per event).
    let drained: std::cell::RefCell<Vec<RawEvent>> = std::cell::RefCell::new(Vec::new());
    let mut builder = libbpf_rs::RingBufferBuilder::new();
    builder
        .add(&events, |record: &[u8]| {
            stats.events.add(1);
            match parse(record, offset) {
                Some(raw) => drained.borrow_mut().push(raw),
                None => tracing::warn!(len = record.len(), "malformed record from the eBPF program"),
            }
            0
        })
        .map_err(load_err("ring buffer"))?;
    let ring = builder.build().map_err(load_err("ring buffer"))?;
    let mut last_drops = Instant::now();
    let mut previous_drops = std::collections::HashMap::new();
    let mut window_start = procfs::now_unix_ns();
    let syscall_map = map(object, "syscall_counts")?;
    // The kernel counts from the programs' load, just before: the first
    // interval starts there (not at the first read, which would make it
    // empty: found when a test started its container at once).
    let mut syscalls = SyscallReader::since(procfs::now_unix_ns());
    let mut last_syscalls = Instant::now();
    while !cancel.is_cancelled() {
        // The kernel side wakes us only when 64 KiB are waiting; the timeout
        // drains whatever trickled in meanwhile (at most DRAIN_INTERVAL late).
        if let Err(e) = ring.poll(DRAIN_INTERVAL).and_then(|()| ring.consume()) {
            // EINTR is the only expected failure; anything else is logged.
            tracing::debug!(error = %e, "ring buffer poll");
        }
        for raw in drained.borrow_mut().drain(..) {
            if tx.try_send(raw).is_err() {
                stats.queue_drops.add(1);
            }
        }
        while let Ok(seed) = seeds.try_recv() {
            let key = ListenKey {
                netns: seed.netns,
                port: u32::from(seed.port),
            };
            // The cgroup is unknown here (0).
            let owner = Owner {
                pid: seed.pid,
                ..Owner::default()
            };
            if let Err(e) = listeners.update(key.as_bytes(), owner.as_bytes(), MapFlags::ANY) {
                tracing::warn!(error = %e, ?seed, "cannot record a pre-existing listener");
            }
        }
        if last_syscalls.elapsed() >= syscall_interval {
            last_syscalls = Instant::now();
            for raw in syscalls.read(&syscall_map) {
                if tx.try_send(RawEvent::Syscalls(raw)).is_err() {
                    stats.queue_drops.add(1);
                }
            }
        }
        if last_drops.elapsed() >= DROPS_INTERVAL {
            last_drops = Instant::now();
            let now = read_drops(&drops);
            let window_end = procfs::now_unix_ns();
            let per_cgroup: Vec<(u64, u64)> = now
                .iter()
                .filter_map(|(cg, n)| {
                    let was = previous_drops.get(cg).copied().unwrap_or(0);
                    let delta = if *n >= was { n - was } else { *n };
                    (delta > 0).then_some((*cg, delta))
                })
                .collect();
            previous_drops = now;
            let dropped: u64 = per_cgroup.iter().map(|(_, n)| n).sum();
            if dropped > 0 {
                stats.kernel_overflows.add(dropped);
                tracing::warn!(dropped, "eBPF ring buffer full, kernel dropped events");
                let raw = RawEvent::Drops(DropsRaw {
                    start_unix_ns: window_start,
                    end_unix_ns: window_end,
                    per_cgroup,
                });
                if tx.try_send(raw).is_err() {
                    stats.queue_drops.add(1);
                }
            }
            window_start = window_end;
        }
    }
    Ok(())
}

/// Number of syscall counters per cgroup in the kernel map (`GH_SYSCALLS`).
const SYSCALLS: usize = 512;

/// Turns the kernel's cumulative per-cgroup, per-CPU syscall counters into
/// per-interval counts.
#[derive(Debug, Default)]
struct SyscallReader {
    /// cgroup id → cumulative count per syscall number at the last read.
    previous: std::collections::HashMap<u64, Vec<u64>>,
    last_read_unix_ns: Option<i64>,
}

impl SyscallReader {
    /// A reader whose first interval starts at `loaded_unix_ns`.
    fn since(loaded_unix_ns: i64) -> SyscallReader {
        SyscallReader {
            previous: std::collections::HashMap::new(),
            last_read_unix_ns: Some(loaded_unix_ns),
        }
    }

    fn read(&mut self, map: &libbpf_rs::Map<'_>) -> Vec<SyscallRaw> {
        let now = procfs::now_unix_ns();
        let start = self.last_read_unix_ns.replace(now).unwrap_or(now);
        let mut out = Vec::new();
        let mut seen = std::collections::HashMap::new();
        for key in map.keys() {
            let Some(cgroup_id) = key.get(..8).and_then(|k| k.try_into().ok()).map(u64::from_le_bytes) else {
                continue;
            };
            let Ok(Some(per_cpu)) = map.lookup_percpu(&key, MapFlags::ANY) else {
                continue;
            };
            let total = sum_per_cpu(&per_cpu);
            let before = self.previous.get(&cgroup_id);
            let counts: Vec<(u32, u64)> = total
                .iter()
                .enumerate()
                .filter_map(|(nr, now)| {
                    let was = before.and_then(|b| b.get(nr)).copied().unwrap_or(0);
                    // A counter that went down was evicted and re-created.
                    let delta = if *now >= was { now - was } else { *now };
                    (delta > 0).then(|| (u32::try_from(nr).unwrap_or(u32::MAX), delta))
                })
                .collect();
            if !counts.is_empty() {
                out.push(SyscallRaw {
                    cgroup_id,
                    start_unix_ns: start,
                    end_unix_ns: now,
                    counts,
                });
            }
            seen.insert(cgroup_id, total);
        }
        // Cgroups gone from the map are forgotten (bounded by the map size).
        self.previous = seen;
        out
    }
}

/// Adds the per-CPU copies of one `struct gh_syscalls`.
fn sum_per_cpu(per_cpu: &[Vec<u8>]) -> Vec<u64> {
    let mut total = vec![0u64; SYSCALLS];
    for cpu in per_cpu {
        for (slot, chunk) in total.iter_mut().zip(cpu.chunks_exact(8)) {
            *slot += u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        }
    }
    total
}

/// The kernel's per-cgroup drop counters (cumulative), by cgroup id.
fn read_drops(map: &libbpf_rs::Map<'_>) -> std::collections::HashMap<u64, u64> {
    let le = |b: &[u8]| b.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
    map.keys()
        .filter_map(|k| Some((le(&k)?, le(&map.lookup(&k, MapFlags::ANY).ok().flatten()?)?)))
        .collect()
}

/// Decodes one ring-buffer record (its type by `struct gh_header.kind`, see
/// [`super::layout`]); a record shorter than its type is refused.
fn parse(b: &[u8], offset_ns: i64) -> Option<RawEvent> {
    let (h, _) = Header::read_from_prefix(b).ok()?;
    let pid = h.pid;
    let time_unix_ns = i64::try_from(h.time_ns).unwrap_or(i64::MAX).saturating_add(offset_ns);
    match h.kind {
        KIND_FORK => Some(RawEvent::Fork(ForkRaw {
            time_unix_ns,
            parent_pid: h.ppid,
            child_pid: pid,
        })),
        KIND_EXIT => Some(RawEvent::Exit(ExitRaw {
            time_unix_ns,
            pid,
            code: super::decode_wait_status(h.code.cast_unsigned()),
        })),
        KIND_NET => parse_network(b, time_unix_ns).map(RawEvent::Network),
        KIND_FILE => {
            let (e, data) = ExecHead::read_from_prefix(b).ok()?;
            let [path, exe] = strings(data, [e.cwd_len, e.exe_len])?;
            let cut = h.code & FLAG_PATH_CUT != 0;
            Some(RawEvent::File(FileRaw {
                time_unix_ns,
                pid,
                path: join_leaf_first(path, cut),
                exe: (!exe.is_empty()).then(|| join_leaf_first(exe, cut)),
                flags: h.uid,
                created: h.gid != 0,
                cgroup_id: e.cgroup_id,
            }))
        }
        KIND_EXEC => {
            let (e, data) = ExecHead::read_from_prefix(b).ok()?;
            let [argv, exe, cwd, parent_exe, cgroup] =
                strings(data, [e.argv_len, e.exe_len, e.cwd_len, e.pexe_len, e.cgroup_len])?;
            let mut args = procfs::split_cmdline(argv);
            if h.code & FLAG_ARGV_CUT != 0 {
                args.push(Bytes::from_static(procfs::TRUNCATED_MARK));
            }
            let path_cut = h.code & FLAG_PATH_CUT != 0;
            Some(RawEvent::Exec(ExecRaw {
                time_unix_ns,
                pid,
                info: Some(ProcessInfo {
                    pid,
                    ppid: h.ppid,
                    uid: h.uid,
                    gid: h.gid,
                    exe: (!exe.is_empty()).then(|| join_leaf_first(exe, path_cut)),
                    argv: args,
                    cwd: Some(join_leaf_first(cwd, path_cut)),
                    cgroup: Cgroup::Kernel(cgroup_path(cgroup)),
                    cgroup_id: e.cgroup_id,
                    drift: h.code & FLAG_DRIFT != 0,
                    stdio_socket: h.code & FLAG_STDIO_SOCKET != 0,
                }),
                parent_exe: (!parent_exe.is_empty()).then(|| join_leaf_first(parent_exe, path_cut)),
            }))
        }
        _ => None,
    }
}

/// The `N` strings of a record's string area, one after the other with
/// these lengths; `None` when the area is shorter.
fn strings<const N: usize>(data: &[u8], lens: [u16; N]) -> Option<[&[u8]; N]> {
    let mut out = [&data[..0]; N];
    let mut at = 0;
    for (part, len) in out.iter_mut().zip(lens) {
        let end = at + usize::from(len);
        *part = data.get(at..end)?;
        at = end;
    }
    Some(out)
}

/// A `struct gh_net` record.
fn parse_network(b: &[u8], time_unix_ns: i64) -> Option<NetworkRaw> {
    use glasshouse_proto::v1::NetworkEventKind;
    let (n, _) = Net::read_from_prefix(b).ok()?;
    let addr = |a: [u8; 16]| -> Option<IpAddr> {
        match n.family {
            AF_INET => Some(IpAddr::from(<[u8; 4]>::try_from(&a[..4]).ok()?)),
            AF_INET6 => Some(IpAddr::from(a)),
            _ => None,
        }
    };
    let kind = NetworkEventKind::try_from(n.h.code)
        .ok()
        .filter(|k| *k != NetworkEventKind::Unspecified)?;
    // The kernel side leaves the remote end zero for LISTEN and a listener's CLOSE.
    let remote = n.rport != 0;
    let (mut local, mut peer) = (addr(n.laddr)?, if remote { Some(addr(n.raddr)?) } else { None });
    // An IPv6 socket talking IPv4 shows v4-mapped addresses (::ffff:a.b.c.d):
    // report them as IPv4, the way the peer sees them, when both ends are.
    if local.to_canonical().is_ipv4() && peer.is_none_or(|p| p.to_canonical().is_ipv4()) {
        local = local.to_canonical();
        peer = peer.map(|p| p.to_canonical());
    }
    Some(NetworkRaw {
        time_unix_ns,
        pid: n.h.pid,
        kind,
        local: SocketAddr::new(local, n.lport),
        remote: peer.map(|p| SocketAddr::new(p, n.rport)),
        bytes_sent: n.bytes_sent,
        bytes_received: n.bytes_received,
        cgroup_id: n.cgroup_id,
        pre_existing: false,
    })
}

/// `b"c\0b\0a\0"` (components leaf first, as the kernel side walks up) →
/// `b"/a/b/c"`; no components is `/`. A path cut short is marked with a
/// leading `...`.
fn join_leaf_first(raw: &[u8], cut: bool) -> Bytes {
    Bytes::from(joined_leaf_first(raw, cut))
}

/// The cgroup path of `raw` (components leaf first) as text, in one
/// allocation when it is UTF-8 (kernfs names are).
fn cgroup_path(raw: &[u8]) -> String {
    String::from_utf8(joined_leaf_first(raw, false))
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// [`join_leaf_first`]'s bytes.
fn joined_leaf_first(raw: &[u8], cut: bool) -> Vec<u8> {
    let raw = raw.strip_suffix(b"\0").unwrap_or(raw);
    let mut out = Vec::with_capacity(raw.len() + 4);
    if cut {
        out.extend_from_slice(b"...");
    }
    if raw.is_empty() {
        out.push(b'/');
    } else {
        for part in raw.rsplit(|b| *b == 0) {
            out.push(b'/');
            out.extend_from_slice(part);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_mount_namespace_is_inits_or_else_our_own() {
        let own = std::fs::metadata("/proc/self/ns/mnt").unwrap().ino();
        let init = std::fs::metadata("/proc/1/ns/mnt").map(|m| m.ino()).ok();
        assert_eq!(u64::from(host_mount_namespace().unwrap()), init.unwrap_or(own));
    }

    fn exec_record(argv: &[u8], parts: [&[u8]; 4], flags: i32) -> Vec<u8> {
        let len = |b: &[u8]| u16::try_from(b.len()).unwrap();
        let head = ExecHead {
            h: Header {
                kind: KIND_EXEC,
                pid: 42,
                time_ns: 5_000_000_000,
                ppid: 7,
                uid: 1000,
                gid: 100,
                code: flags,
            },
            argv_len: len(argv),
            exe_len: len(parts[0]),
            cwd_len: len(parts[1]),
            pexe_len: len(parts[2]),
            cgroup_len: len(parts[3]),
            pad: [0; 3],
            cgroup_id: 4242,
        };
        let mut b = head.as_bytes().to_vec();
        b.extend_from_slice(argv);
        for p in parts {
            b.extend_from_slice(p);
        }
        b
    }

    #[test]
    fn exec_record_decodes_to_a_full_process() {
        let rec = exec_record(
            b"sh\0-c\0echo hi\0",
            [
                b"sh\0bin\0",
                b"tmp\0",
                b"conmon\0bin\0usr\0",
                b"libpod-abc\0libpod_parent\0",
            ],
            0,
        );
        let Some(RawEvent::Exec(ExecRaw {
            time_unix_ns,
            pid,
            info: Some(info),
            parent_exe,
        })) = parse(&rec, 10)
        else {
            panic!("not an exec: {:?}", parse(&rec, 10));
        };
        assert_eq!(
            (time_unix_ns, pid, info.ppid, info.uid, info.gid),
            (5_000_000_010, 42, 7, 1000, 100)
        );
        assert_eq!(info.argv, [&b"sh"[..], b"-c", b"echo hi"]);
        assert_eq!(info.exe.as_deref(), Some(&b"/bin/sh"[..]));
        assert_eq!(info.cwd.as_deref(), Some(&b"/tmp"[..]));
        assert_eq!(parent_exe.as_deref(), Some(&b"/usr/bin/conmon"[..]));
        assert_eq!(info.cgroup, Cgroup::Kernel("/libpod_parent/libpod-abc".into()));
        assert_eq!(info.cgroup_id, 4242);
    }

    #[test]
    fn cut_argv_and_paths_are_marked_and_root_is_slash() {
        let rec = exec_record(b"a\0b", [b"x\0", b"", b"", b""], FLAG_ARGV_CUT | FLAG_PATH_CUT);
        let Some(RawEvent::Exec(ExecRaw {
            info: Some(info),
            parent_exe,
            ..
        })) = parse(&rec, 0)
        else {
            panic!("not an exec");
        };
        assert_eq!(info.argv, [&b"a"[..], b"b", procfs::TRUNCATED_MARK]);
        assert_eq!(info.exe.as_deref(), Some(&b".../x"[..]));
        assert_eq!(info.cwd.as_deref(), Some(&b".../"[..]));
        assert_eq!(parent_exe, None);
    }

    #[test]
    fn truncated_records_are_rejected_not_misread() {
        let rec = exec_record(b"sh\0", [b"sh\0bin\0", b"", b"", b""], 0);
        for len in [0, 4, 31, 40, 50, rec.len() - 1] {
            assert!(parse(&rec[..len], 0).is_none(), "length {len}");
        }
        let mut fork = rec[..32].to_vec();
        fork[..4].copy_from_slice(KIND_FORK.as_bytes());
        assert!(matches!(
            parse(&fork, 0),
            Some(RawEvent::Fork(ForkRaw {
                parent_pid: 7,
                child_pid: 42,
                ..
            }))
        ));
    }

    fn net_record(kind: i32, family: u16, laddr: &[u8], raddr: &[u8], ports: (u16, u16)) -> Vec<u8> {
        let padded = |a: &[u8]| {
            let mut p = [0u8; 16];
            p[..a.len()].copy_from_slice(a);
            p
        };
        Net {
            h: Header {
                kind: KIND_NET,
                pid: 77,
                time_ns: 1_000,
                code: kind,
                ..Header::default()
            },
            family,
            lport: ports.0,
            rport: ports.1,
            pad: 0,
            laddr: padded(laddr),
            raddr: padded(raddr),
            bytes_sent: 1234,
            bytes_received: 5678,
            cgroup_id: 99,
        }
        .as_bytes()
        .to_vec()
    }

    #[test]
    fn network_records_decode_for_both_families() {
        use glasshouse_proto::v1::NetworkEventKind;
        let rec = net_record(4, AF_INET, &[10, 88, 0, 2], &[10, 88, 0, 3], (41000, 8080));
        let Some(RawEvent::Network(n)) = parse(&rec, 5) else {
            panic!("not a network event");
        };
        assert_eq!(n.kind, NetworkEventKind::Close);
        assert_eq!((n.pid, n.time_unix_ns), (77, 1005));
        assert_eq!(n.local, "10.88.0.2:41000".parse().unwrap());
        assert_eq!(n.remote, Some("10.88.0.3:8080".parse().unwrap()));
        assert_eq!((n.bytes_sent, n.bytes_received, n.cgroup_id), (1234, 5678, 99));

        let v6: std::net::Ipv6Addr = "fd00::1".parse().unwrap();
        let rec = net_record(1, AF_INET6, &v6.octets(), &[], (8443, 0));
        let Some(RawEvent::Network(n)) = parse(&rec, 0) else {
            panic!("not a network event");
        };
        assert_eq!(n.kind, NetworkEventKind::Listen);
        assert_eq!(n.local, "[fd00::1]:8443".parse().unwrap());
        assert_eq!(n.remote, None);

        // v4-mapped IPv6 (an IPv6 socket talking IPv4) reads as IPv4 ...
        let mapped = |a: [u8; 4]| std::net::Ipv4Addr::from(a).to_ipv6_mapped().octets();
        let rec = net_record(
            3,
            AF_INET6,
            &mapped([10, 88, 0, 2]),
            &mapped([10, 88, 0, 3]),
            (8080, 41000),
        );
        let Some(RawEvent::Network(n)) = parse(&rec, 0) else {
            panic!("not a network event");
        };
        assert_eq!(
            (n.local, n.remote),
            (
                "10.88.0.2:8080".parse().unwrap(),
                Some("10.88.0.3:41000".parse().unwrap())
            )
        );
        // ... but not when only one end is (both ends keep one family).
        let rec = net_record(3, AF_INET6, &[0; 16], &mapped([10, 88, 0, 3]), (8080, 41000));
        let Some(RawEvent::Network(n)) = parse(&rec, 0) else {
            panic!("not a network event");
        };
        assert!(n.local.is_ipv6() && n.remote.is_some_and(|r| r.is_ipv6()));

        // Unknown kind, unknown family, short record: rejected.
        assert!(parse(&net_record(9, AF_INET, &[1; 4], &[2; 4], (1, 2)), 0).is_none());
        assert!(parse(&net_record(2, 1, &[1; 4], &[2; 4], (1, 2)), 0).is_none());
        assert!(parse(&rec[..rec.len() - 1], 0).is_none());
    }

    #[test]
    fn file_records_decode_path_then_exe_and_exec_drift_flag() {
        // A file record: exec layout, data = path then exe (lengths in the
        // cwd and exe slots).
        let mut rec = exec_record(b"", [b"sh\0bin\0", b"passwd\0etc\0", b"", b""], 0);
        rec[..4].copy_from_slice(KIND_FILE.as_bytes());
        let data_at = size_of::<ExecHead>();
        // exec_record wrote exe (7 bytes) before cwd (11 bytes): put path first.
        let (exe, path) = (
            rec[data_at..data_at + 7].to_vec(),
            rec[data_at + 7..data_at + 18].to_vec(),
        );
        rec[data_at..data_at + 11].copy_from_slice(&path);
        rec[data_at + 11..data_at + 18].copy_from_slice(&exe);
        rec[std::mem::offset_of!(Header, gid)..][..4].copy_from_slice(1u32.as_bytes());
        let Some(RawEvent::File(f)) = parse(&rec, 0) else {
            panic!("not a file event: {:?}", parse(&rec, 0));
        };
        assert_eq!(f.path, Bytes::from_static(b"/etc/passwd"));
        assert_eq!(f.exe.as_deref(), Some(&b"/bin/sh"[..]));
        assert_eq!((f.flags, f.created, f.cgroup_id, f.pid), (1000, true, 4242, 42));

        let rec = exec_record(b"x\0", [b"x\0tmp\0", b"", b"", b""], FLAG_DRIFT);
        let Some(RawEvent::Exec(ExecRaw { info: Some(info), .. })) = parse(&rec, 0) else {
            panic!("not an exec");
        };
        assert!(info.drift && !info.stdio_socket);
        let rec = exec_record(b"sh\0", [b"sh\0bin\0", b"", b"", b""], FLAG_STDIO_SOCKET);
        let Some(RawEvent::Exec(ExecRaw { info: Some(info), .. })) = parse(&rec, 0) else {
            panic!("not an exec");
        };
        assert!(info.stdio_socket && !info.drift);
    }

    #[test]
    fn per_cpu_syscall_counters_add_up() {
        let cpu = |pairs: &[(usize, u64)]| {
            let mut v = vec![0u8; SYSCALLS * 8];
            for (nr, n) in pairs {
                v[nr * 8..nr * 8 + 8].copy_from_slice(&n.to_le_bytes());
            }
            v
        };
        let total = sum_per_cpu(&[cpu(&[(0, 5), (59, 1)]), cpu(&[(0, 2), (511, 7)])]);
        assert_eq!((total[0], total[59], total[511], total[1]), (7, 1, 7, 0));
    }

    #[test]
    fn top_level_names_of_sensitive_prefixes() {
        let prefixes = [
            "/etc",
            "/usr/bin",
            "~/.ssh",
            "/root",
            "/var/spool/cron",
            "/",
            "/etc/cron.d",
        ]
        .map(String::from);
        assert_eq!(top_level_names(&prefixes), ["etc", "usr", "root", "home", "var"]);
    }

    #[test]
    fn memory_controller_index_comes_from_proc_cgroups() {
        let table = "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t3\t1\t1\ncpu\t1\t1\t1\ncpuacct\t2\t1\t1\nblkio\t7\t1\t1\nmemory\t4\t9\t1\n";
        assert_eq!(memory_subsys_index(table), Some(4));
        assert_eq!(memory_subsys_index("#h\nmemory\t0\t1\t1\n"), None);
    }
}
