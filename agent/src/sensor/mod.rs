//! Sensors: what the agent reads from the kernel. Each sensor runs on its own
//! thread and hands [`RawEvent`]s to the pipeline through a bounded queue; when
//! the queue is full the event is dropped and counted (the kernel side never
//! waits for us), and the counters are reported in the logs.

pub mod bpf;
pub mod layout;
pub mod proc_connector;
pub mod proc_net;

use glasshouse_runtime::metrics::{Counter, Metric};

use crate::procfs::ProcessInfo;

/// How processes are observed; sent to the aggregator in the stream's hello.
pub const MODE_NETLINK: &str = "netlink";
/// ... or through the eBPF programs ([`bpf`]).
pub const MODE_BPF: &str = "bpf";

/// Wait status → exit code, or minus the terminating signal.
pub(crate) fn decode_wait_status(status: u32) -> i32 {
    let signal = status & 0x7f;
    if signal == 0 {
        ((status >> 8) & 0xff) as i32
    } else {
        -(signal as i32)
    }
}

/// An event as a sensor saw it, before attribution: one type per kind, so
/// the pipeline matches it once and hands each kind to its own function.
#[derive(Debug, Clone)]
pub enum RawEvent {
    /// A process called execve.
    Exec(ExecRaw),
    /// A new process (threads are not reported).
    Fork(ForkRaw),
    /// A process (thread group) exited.
    Exit(ExitRaw),
    /// A TCP socket changed state (eBPF sensor only).
    Network(NetworkRaw),
    /// A file under a sensitive top-level directory was opened for writing
    /// (eBPF sensor only; the exact prefixes are applied later).
    File(FileRaw),
    /// One cgroup's syscall counts over an interval (eBPF sensor only).
    Syscalls(SyscallRaw),
    /// Records the kernel could not put in the ring buffer, per cgroup.
    Drops(DropsRaw),
}

/// A process called execve. `info` is `None` when it exited before `/proc`
/// could be read.
#[derive(Debug, Clone)]
pub struct ExecRaw {
    pub time_unix_ns: i64,
    pub pid: u32,
    pub info: Option<ProcessInfo>,
    pub parent_exe: Option<bytes::Bytes>,
}

/// A new process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForkRaw {
    pub time_unix_ns: i64,
    pub parent_pid: u32,
    pub child_pid: u32,
}

/// A process exited; `code` is the exit status, or minus the number of the
/// signal that killed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitRaw {
    pub time_unix_ns: i64,
    pub pid: u32,
    pub code: i32,
}

/// Kernel ring-buffer drops over a window, per cgroup id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropsRaw {
    pub start_unix_ns: i64,
    pub end_unix_ns: i64,
    pub per_cgroup: Vec<(u64, u64)>,
}

/// Syscalls entered by the processes of one cgroup during an interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyscallRaw {
    /// Kernel id of the cgroup.
    pub cgroup_id: u64,
    pub start_unix_ns: i64,
    pub end_unix_ns: i64,
    /// (syscall number, count), non-zero counts only.
    pub counts: Vec<(u32, u64)>,
}

/// A file opened for writing, as the kernel resolved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRaw {
    pub time_unix_ns: i64,
    pub pid: u32,
    /// Absolute path as the container sees it.
    pub path: bytes::Bytes,
    /// The writing process's executable.
    pub exe: Option<bytes::Bytes>,
    /// The open file's flags (`f_flags`: access mode, O_APPEND, ...).
    pub flags: u32,
    /// The open created the file.
    pub created: bool,
    /// Kernel id of the writer's cgroup (0 unknown).
    pub cgroup_id: u64,
}

/// A TCP socket event as the kernel reported it; `pid` owns the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRaw {
    pub time_unix_ns: i64,
    pub pid: u32,
    pub kind: glasshouse_proto::v1::NetworkEventKind,
    pub local: std::net::SocketAddr,
    /// `None` for LISTEN and the close of a listening socket.
    pub remote: Option<std::net::SocketAddr>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Kernel id of the owner's cgroup when it opened the socket (0 unknown):
    /// attributes a close that happens after the owner exited.
    pub cgroup_id: u64,
    /// Found open when the agent started (from `/proc`), not seen happening.
    pub pre_existing: bool,
}

/// A listening socket found at start, for the kernel side's table of
/// listeners (so connections it accepts later are attributed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerSeed {
    /// Inode number of the socket's network namespace.
    pub netns: u32,
    pub port: u16,
    pub pid: u32,
}

/// Counters every sensor keeps; nothing is dropped without being counted
/// here. Each is a [`Counter`] with its metric name, as every process's
/// internal telemetry is (the aggregator's are statics: one per process; an
/// agent's are per sensor, so tests can run several).
#[derive(Debug)]
pub struct SensorStats {
    /// Events read from the kernel.
    pub events: Counter,
    /// Events the kernel lost: proc connector socket overflows, or eBPF
    /// records the ring buffer could not take.
    pub kernel_overflows: Counter,
    /// Events dropped because the pipeline queue was full.
    pub queue_drops: Counter,
    /// Execs whose process was gone before `/proc` could be read.
    pub exec_unreadable: Counter,
    /// Events dropped by the per-container rate limit.
    pub rate_limited: Counter,
}

impl Default for SensorStats {
    fn default() -> SensorStats {
        SensorStats {
            events: Counter::new("glasshouse_agent_events_total", "Kernel events read."),
            kernel_overflows: Counter::new(
                "glasshouse_agent_kernel_overflows_total",
                "Times the kernel reported lost events (socket buffer overflow).",
            ),
            queue_drops: Counter::new(
                "glasshouse_agent_queue_drops_total",
                "Events dropped because the pipeline queue was full.",
            ),
            exec_unreadable: Counter::new(
                "glasshouse_agent_exec_unreadable_total",
                "Execs whose process exited before /proc could be read.",
            ),
            rate_limited: Counter::new(
                "glasshouse_agent_rate_limited_total",
                "Events dropped by the per-container rate limit (reported downstream as gaps).",
            ),
        }
    }
}

impl SensorStats {
    /// Prometheus text of these counters and the sensor mode.
    pub fn render(&self, mode: &str) -> String {
        let mut out = String::new();
        for counter in [
            &self.events,
            &self.kernel_overflows,
            &self.queue_drops,
            &self.exec_unreadable,
            &self.rate_limited,
        ] {
            counter.render(&mut out);
        }
        // Writing to a String cannot fail.
        let _ = std::fmt::Write::write_fmt(
            &mut out,
            format_args!(
                "# HELP glasshouse_agent_sensor_mode How processes are observed.\n# TYPE glasshouse_agent_sensor_mode gauge\nglasshouse_agent_sensor_mode{{mode=\"{mode}\"}} 1\n"
            ),
        );
        out
    }

    pub fn snapshot(&self) -> [(&'static str, u64); 5] {
        [
            ("events", self.events.get()),
            ("kernel_overflows", self.kernel_overflows.get()),
            ("queue_drops", self.queue_drops.get()),
            ("exec_unreadable", self.exec_unreadable.get()),
            ("rate_limited", self.rate_limited.get()),
        ]
    }
}
