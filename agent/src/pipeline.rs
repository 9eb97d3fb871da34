//! The pipeline between sensors and the stream: **attribute** each raw event to
//! its container (cgroup → container, runtime API → metadata → workload id;
//! sockets and files through the pid or cgroup that owns them), **limit** each
//! container's event rate, then hand the records ([`crate::record`]) to the
//! [`Batcher`] ([`crate::batch`]), which **collapses** identical repeats and
//! **batches** by size or age. At start it reports what already runs ([`Attributor::existing`]);
//! every sample interval it reads the containers' resource counters, and every
//! second it turns what was dropped (rate limit, kernel ring buffer, queue) into
//! gap records.
//!
//! Backpressure: without a spool the pipeline waits when the client holds
//! `max_unacked_batches` (with one the client always takes batches); the
//! sensor queue in front of it never waits (kernel → agent drops and counts).

use std::collections::{HashMap, HashSet};

/// Maps on the per-event path: a fast, per-instance seeded hash (foldhash)
/// instead of SipHash.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type FastSet<K> = HashSet<K, foldhash::fast::RandomState>;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glasshouse_proto::process::Kind;
use tokio::sync::mpsc;

use crate::attribute::ContainerKey;
use crate::procfs;
use crate::resources;
use crate::runtime::{ContainerMeta, RuntimeClient};
use crate::sensitive::SensitivePaths;
use crate::sensor::proc_net::{self, SocketPoll};
use crate::sensor::{ExecRaw, ExitRaw, FileRaw, ForkRaw, ListenerSeed, NetworkRaw, RawEvent, SyscallRaw};
use crate::workload;

pub use crate::batch::{Batcher, Sample};
pub use crate::record::{
    Container, Event, FileEvent, Gap, InventoryRecord, NetworkEvent, PendingBatch, ResourceSample, SyscallSample,
};

/// Most containers kept in the attribution cache.
const MAX_CONTAINERS: usize = 4096;
/// Most pids tracked for attributing forks and exits.
const MAX_PIDS: usize = 262_144;
/// Most execs kept waiting for the fork that attributes them.
const MAX_UNRESOLVED: usize = 4096;
/// How often gaps (dropped events) are reported.
const GAP_INTERVAL: Duration = Duration::from_secs(1);
/// Cgroup ids remembered; beyond this the table restarts (it refills from execs).
const MAX_CGROUPS: usize = 16_384;
/// How soon a failed metadata lookup is tried again.
const METADATA_RETRY: Duration = Duration::from_secs(5);

struct CachedContainer {
    container: Arc<Container>,
    retry_at: Option<Instant>,
}

/// Turns raw events into attributed ones.
pub struct Attributor {
    runtime: RuntimeClient,
    proc_root: PathBuf,
    host_processes: bool,
    containers: FastMap<String, CachedContainer>,
    /// pid → its container (`None`: a host process).
    pids: FastMap<u32, Option<Arc<Container>>>,
    /// Execs of unknown pids whose `/proc` entry was already gone.
    unresolved: FastMap<u32, Event>,
    /// Pids of exec-in sessions and their descendants (a subset of `pids`).
    exec_in: FastSet<u32>,
    /// Kernel cgroup id → its container, learnt from execs (eBPF sensor).
    cgroups: FastMap<u64, Option<Arc<Container>>>,
    /// Where listening sockets found at start are reported (the eBPF sensor).
    listener_seeds: Option<std::sync::mpsc::Sender<ListenerSeed>>,
    /// TCP sockets polled from `/proc` (the netlink fallback: no socket events).
    socket_poll: Option<SocketPoll>,
    /// Writes reported only under these.
    sensitive: SensitivePaths,
    /// Container id → its cgroup and a pid in it (last seen),
    /// for resource samples.
    container_cgroups: FastMap<String, (procfs::Cgroup, u32)>,
    /// How often resources are sampled.
    sample_interval: Duration,
    /// Per-container event rate limit (events per second; 0: none).
    rate_limit: u32,
    /// Name patterns of the containers reported (empty: all).
    watch: Vec<String>,
    /// The agent's budget: under pressure the rate limit is divided.
    budget: Option<Arc<crate::budget::Budget>>,
    buckets: FastMap<String, Bucket>,
    /// Open gaps by (container id, reason).
    gaps: FastMap<(Option<String>, i32), Gap>,
    /// The sensor's counters, for queue drops.
    stats: Option<Arc<crate::sensor::SensorStats>>,
    queue_drops_seen: u64,
    /// Package inventories: how, and containers whose databases were written.
    inventory: Option<crate::inventory::Settings>,
    inventory_dirty: FastSet<String>,
}

/// A token bucket: `rate` events per second, bursts of up to two seconds' worth.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl std::fmt::Debug for Attributor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attributor")
            .field("containers", &self.containers.len())
            .field("pids", &self.pids.len())
            .finish()
    }
}

impl Attributor {
    pub fn new(runtime: RuntimeClient, proc_root: PathBuf, host_processes: bool) -> Attributor {
        Attributor {
            runtime,
            proc_root,
            host_processes,
            containers: FastMap::default(),
            pids: FastMap::default(),
            unresolved: FastMap::default(),
            exec_in: FastSet::default(),
            cgroups: FastMap::default(),
            listener_seeds: None,
            socket_poll: None,
            sensitive: SensitivePaths::new(&crate::sensitive::defaults()),
            container_cgroups: FastMap::default(),
            sample_interval: Duration::from_secs(10),
            rate_limit: 0,
            watch: Vec::new(),
            budget: None,
            buckets: FastMap::default(),
            gaps: FastMap::default(),
            stats: None,
            queue_drops_seen: 0,
            inventory: None,
            inventory_dirty: FastSet::default(),
        }
    }

    /// Limits each container to `per_second` reported events (0: no limit);
    /// what is dropped is reported as a gap.
    pub fn with_rate_limit(mut self, per_second: u32) -> Attributor {
        self.rate_limit = per_second;
        self
    }

    /// Reports only containers whose name matches one of `patterns` (`*`
    /// matches any run of characters); empty: every container. A container
    /// whose runtime has not named it yet is not reported until it has.
    pub fn with_container_filter(mut self, patterns: Vec<String>) -> Attributor {
        self.watch = patterns;
        self
    }

    /// Divides the rate limit under budget pressure (see [`crate::budget`]).
    pub fn with_budget(mut self, budget: Arc<crate::budget::Budget>) -> Attributor {
        self.budget = Some(budget);
        self
    }

    /// Reports the sensor's queue drops as host-wide gaps.
    pub fn with_stats(mut self, stats: Arc<crate::sensor::SensorStats>) -> Attributor {
        self.stats = Some(stats);
        self
    }

    /// Whether an event of `container` may be reported under the rate limit;
    /// a refused one is counted into the container's gap.
    pub fn admit(&mut self, container: Option<&Arc<Container>>, time_unix_ns: i64) -> bool {
        let Some(c) = container else { return true };
        if !c.reported {
            return false;
        }
        let limit = self
            .budget
            .as_ref()
            .map_or(self.rate_limit, |b| b.scaled_rate(self.rate_limit));
        if limit == 0 {
            return true;
        }
        let rate = f64::from(limit);
        let now = Instant::now();
        if !self.buckets.contains_key(&c.key.id) {
            // Only a container's first event pays for its key.
            if self.buckets.len() >= MAX_CONTAINERS {
                self.buckets.clear();
            }
            self.buckets.insert(
                c.key.id.clone(),
                Bucket {
                    tokens: 2.0 * rate,
                    last: now,
                },
            );
        }
        let Some(bucket) = self.buckets.get_mut(&c.key.id) else {
            return true;
        };
        bucket.tokens = (bucket.tokens + now.duration_since(bucket.last).as_secs_f64() * rate).min(2.0 * rate);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return true;
        }
        if let Some(stats) = &self.stats {
            stats.rate_limited.add(1);
        }
        self.add_gap(
            Some(c.clone()),
            glasshouse_proto::v1::GapReason::RateLimited,
            time_unix_ns,
            time_unix_ns,
            1,
        );
        false
    }

    fn add_gap(
        &mut self,
        container: Option<Arc<Container>>,
        reason: glasshouse_proto::v1::GapReason,
        start: i64,
        end: i64,
        dropped: u64,
    ) {
        let key = (container.as_ref().map(|c| c.key.id.clone()), reason as i32);
        let gap = self.gaps.entry(key).or_insert(Gap {
            container,
            start_unix_ns: start,
            end_unix_ns: end,
            dropped: 0,
            reason,
        });
        gap.start_unix_ns = gap.start_unix_ns.min(start);
        gap.end_unix_ns = gap.end_unix_ns.max(end);
        gap.dropped += dropped;
    }

    /// Kernel ring-buffer drops per cgroup: gaps of their containers (of the
    /// host when the cgroup is not a known container's).
    pub fn kernel_drops(&mut self, drops: crate::sensor::DropsRaw) {
        for (cgroup_id, n) in drops.per_cgroup {
            let container = self.cgroups.get(&cgroup_id).cloned().flatten();
            self.add_gap(
                container,
                glasshouse_proto::v1::GapReason::KernelBufferFull,
                drops.start_unix_ns,
                drops.end_unix_ns,
                n,
            );
        }
    }

    /// The gaps gathered since the last call (queue drops included).
    pub fn take_gaps(&mut self) -> Vec<Gap> {
        if let Some(stats) = &self.stats {
            let total = stats.queue_drops.get();
            if total > self.queue_drops_seen {
                let now = procfs::now_unix_ns();
                let since = now - i64::try_from(GAP_INTERVAL.as_nanos()).unwrap_or(0);
                let n = total - self.queue_drops_seen;
                self.queue_drops_seen = total;
                self.add_gap(None, glasshouse_proto::v1::GapReason::QueueFull, since, now, n);
            }
        }
        let gaps: Vec<Gap> = self
            .gaps
            .drain()
            .map(|(_, g)| g)
            .filter(|g| g.container.as_ref().is_none_or(|c| c.reported))
            .collect();
        for g in &gaps {
            tracing::warn!(
                container = g.container.as_ref().map_or("(host)", |c| c.key.id.as_str()),
                reason = g.reason.as_str_name(),
                dropped = g.dropped,
                "events not reported; a gap record says so downstream"
            );
        }
        gaps
    }

    /// Samples resources every `interval` (default 10 s).
    pub fn with_sample_interval(mut self, interval: Duration) -> Attributor {
        self.sample_interval = interval;
        self
    }

    /// Reads each container's installed packages (see [`crate::inventory`]).
    pub fn with_inventory(mut self, settings: crate::inventory::Settings) -> Attributor {
        self.inventory = Some(settings);
        self
    }

    /// Containers with a live process, for the inventory scanner; clears
    /// the set of containers whose package databases were written.
    pub fn inventory_targets(&mut self) -> Vec<crate::inventory::Target> {
        let dirty = std::mem::take(&mut self.inventory_dirty);
        self.container_cgroups
            .iter()
            .filter_map(|(id, (_, pid))| {
                let c = self.containers.get(id)?;
                // Only once the runtime answered: the image decides trust
                // and the per-image cache.
                if !c.container.complete || !c.container.reported {
                    return None;
                }
                Some(crate::inventory::Target {
                    container: c.container.clone(),
                    pid: *pid,
                    dirty: dirty.contains(id),
                })
            })
            .collect()
    }

    /// Notes a write that may change a container's inventory.
    fn note_inventory_write(&mut self, e: &FileEvent) {
        if self.inventory.is_some()
            && let Some(c) = &e.container
            && crate::inventory::is_package_db(&e.raw.path)
            && self.inventory_dirty.len() < MAX_CONTAINERS
        {
            self.inventory_dirty.insert(c.key.id.clone());
        }
    }

    /// Attributes one cgroup's syscall counts through the cgroup ids learnt
    /// from execs and the start-up scan; `None` for a cgroup not known to be
    /// a container's.
    pub fn syscalls(&self, raw: SyscallRaw) -> Option<SyscallSample> {
        let container = self.cgroups.get(&raw.cgroup_id).cloned().flatten()?;
        container.reported.then_some(SyscallSample { container, raw })
    }

    /// Reads the resource counters of every container with a live process.
    pub fn sample_resources(&mut self) -> Vec<ResourceSample> {
        let now = procfs::now_unix_ns();
        let root = Path::new("/sys/fs/cgroup");
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for (id, (cgroup, pid)) in &mut self.container_cgroups {
            if !self.proc_root.join(pid.to_string()).exists() {
                // Its last seen process exited: another of the container's, if any.
                match self.pids.iter().find(|(p, c)| {
                    c.as_ref().is_some_and(|c| &c.key.id == id) && self.proc_root.join(p.to_string()).exists()
                }) {
                    Some((p, _)) => *pid = *p,
                    None => {
                        gone.push(id.clone());
                        continue;
                    }
                }
            }
            let Some(container) = self.containers.get(id).map(|c| c.container.clone()) else {
                gone.push(id.clone());
                continue;
            };
            if !container.reported {
                continue;
            }
            // The process's own cgroup file names every hierarchy (the eBPF
            // sensor's exec records name only the one it reads).
            let text = match std::fs::read_to_string(self.proc_root.join(pid.to_string()).join("cgroup")) {
                Ok(text) => text,
                Err(_) => match cgroup {
                    procfs::Cgroup::Proc(text) => text.clone(),
                    // Gone between the check above and now: sampled next time.
                    procfs::Cgroup::Kernel(_) => continue,
                },
            };
            out.push(ResourceSample {
                container,
                time_unix_ns: now,
                counters: resources::read(root, &text, &self.proc_root, *pid),
            });
        }
        for id in gone {
            self.container_cgroups.remove(&id);
        }
        out
    }

    /// Remembers where a container's cgroup is (for resource samples and, with
    /// its kernel id, for syscall counts).
    fn learn_cgroup(&mut self, container: &Option<Arc<Container>>, info: &procfs::ProcessInfo) {
        let Some(c) = container else { return };
        let known = match self.container_cgroups.get_mut(&c.key.id) {
            Some((cgroup, pid)) => {
                if *cgroup != info.cgroup {
                    cgroup.clone_from(&info.cgroup);
                }
                *pid = info.pid;
                true
            }
            None => {
                if self.container_cgroups.len() < MAX_CONTAINERS {
                    self.container_cgroups
                        .insert(c.key.id.clone(), (info.cgroup.clone(), info.pid));
                }
                false
            }
        };
        // Without an id from the kernel, the cgroup directory is looked up
        // once per container (the start-up scan sees all its processes).
        let id = match info.cgroup_id {
            0 if known => return,
            0 => match &info.cgroup {
                procfs::Cgroup::Proc(text) => cgroup_inode(text).unwrap_or(0),
                procfs::Cgroup::Kernel(_) => 0,
            },
            id => id,
        };
        if id != 0 {
            if self.cgroups.len() >= MAX_CGROUPS {
                self.cgroups.clear();
            }
            self.cgroups.insert(id, container.clone());
        }
    }

    /// Reports writes under `paths` (default: [`crate::sensitive::defaults`]).
    pub fn with_sensitive_paths(mut self, paths: SensitivePaths) -> Attributor {
        self.sensitive = paths;
        self
    }

    /// Attributes a write (like a network event: by pid, then by the cgroup
    /// the kernel saw); `None` outside the sensitive paths or for a host
    /// process when those are not reported.
    pub async fn file(&mut self, raw: FileRaw) -> Option<FileEvent> {
        if !self.sensitive.matches(&raw.path) {
            return None;
        }
        let container = self.owner(raw.pid, raw.cgroup_id).await;
        (container.is_some() || self.host_processes).then_some(FileEvent {
            container,
            raw,
            count: 1,
        })
    }

    /// The container of process `pid`, or of kernel cgroup `cgroup_id` when
    /// the pid is not known (it may have exited), else from `/proc`.
    async fn owner(&mut self, pid: u32, cgroup_id: u64) -> Option<Arc<Container>> {
        let by_cgroup = (cgroup_id != 0).then(|| self.cgroups.get(&cgroup_id)).flatten();
        match (self.pids.get(&pid), by_cgroup) {
            (Some(c), _) | (None, Some(c)) => c.clone(),
            (None, None) => {
                let container = match procfs::read_process(&self.proc_root, pid)
                    .ok()
                    .and_then(|i| i.cgroup.container())
                {
                    Some(key) => Some(self.container(key).await),
                    None => None,
                };
                self.track(pid, container.clone());
                container
            }
        }
    }

    /// Polls the TCP socket tables of observed namespaces for what the
    /// sensor does not report (the netlink fallback); see [`proc_net`].
    ///
    /// [`proc_net`]: crate::sensor::proc_net
    pub fn with_socket_polling(mut self) -> Attributor {
        self.socket_poll = Some(SocketPoll::default());
        self
    }

    /// One poll of the socket tables, if [`Attributor::with_socket_polling`]:
    /// listens, connects, accepts and closes since the last one.
    pub fn poll_sockets(&mut self) -> Vec<NetworkEvent> {
        let Some(mut poll) = self.socket_poll.take() else {
            return Vec::new();
        };
        let mut by_netns: FastMap<u64, Vec<u32>> = FastMap::default();
        for (pid, container) in &self.pids {
            if (container.is_some() || self.host_processes)
                && let Ok(ns) = procfs::net_namespace(&self.proc_root, *pid)
            {
                by_netns.entry(ns).or_default().push(*pid);
            }
        }
        let tables: FastMap<u64, Vec<procfs::TcpSocket>> = by_netns
            .iter()
            .filter_map(|(ns, pids)| {
                Some((
                    *ns,
                    pids.iter()
                        .find_map(|p| procfs::tcp_sockets(&self.proc_root, *p).ok())?,
                ))
            })
            .collect();
        // Who holds which socket is read (from `fd/`) only for a namespace
        // with a new socket.
        let mut holders: FastMap<u64, FastMap<u64, u32>> = FastMap::default();
        let (root, pids) = (&self.proc_root, &self.pids);
        let events = poll.round(
            &tables,
            |ns, inode| {
                let of_ns = holders.entry(ns).or_insert_with(|| {
                    by_netns[&ns]
                        .iter()
                        .flat_map(|p| procfs::socket_inodes(root, *p).into_iter().map(move |i| (i, *p)))
                        .collect()
                });
                let pid = *of_ns.get(&inode)?;
                Some((pid, pids.get(&pid).cloned().flatten()))
            },
            procfs::now_unix_ns(),
        );
        self.socket_poll = Some(poll);
        events
    }

    /// Whether [`Attributor::poll_sockets`] has anything to do.
    pub fn polls_sockets(&self) -> bool {
        self.socket_poll.is_some()
    }

    /// Reports listening sockets found by [`Attributor::existing`] to `seeds`.
    pub fn with_listener_seeds(mut self, seeds: std::sync::mpsc::Sender<ListenerSeed>) -> Attributor {
        self.listener_seeds = Some(seeds);
        self
    }

    /// What already runs when the agent starts: every process in `/proc` is
    /// tracked (so later events need no `/proc` read), container processes are
    /// reported as [`Kind::Running`], and their TCP listening sockets and
    /// established connections as pre-existing network events (accepted when
    /// the local port is one the namespace listens on, else connected).
    pub async fn existing(&mut self) -> (Vec<Event>, Vec<NetworkEvent>) {
        use glasshouse_proto::v1::NetworkEventKind as NetKind;
        use procfs::{TCP_ESTABLISHED, TCP_LISTEN};
        let now = procfs::now_unix_ns();
        let pids = match procfs::pids(&self.proc_root) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list processes; those already running are not reported");
                return (Vec::new(), Vec::new());
            }
        };
        let mut events = Vec::new();
        let mut by_netns: HashMap<u64, Vec<u32>> = HashMap::new();
        for pid in pids {
            // A process that exited meanwhile is simply not there.
            let Ok(info) = procfs::read_process(&self.proc_root, pid) else {
                continue;
            };
            let container = match info.cgroup.container() {
                Some(key) => Some(self.container(key).await),
                None => None,
            };
            self.track(pid, container.clone());
            self.learn_cgroup(&container, &info);
            if container.is_none() && !self.host_processes {
                continue;
            }
            if let Ok(ns) = procfs::net_namespace(&self.proc_root, pid) {
                by_netns.entry(ns).or_default().push(pid);
            }
            events.push(Event {
                time_unix_ns: now,
                kind: Kind::Running,
                container,
                pid,
                ppid: info.ppid,
                uid: info.uid,
                gid: info.gid,
                parent_exe: procfs::exe_of(&self.proc_root, info.ppid),
                path: info.exe,
                argv: info.argv,
                cwd: info.cwd,
                exit_code: None,
                exec_in: false,
                drift: false,
                stdio_socket: false,
                count: 1,
            });
        }
        let mut network = Vec::new();
        for (netns, pids) in by_netns {
            let Some(sockets) = pids.iter().find_map(|p| procfs::tcp_sockets(&self.proc_root, *p).ok()) else {
                continue;
            };
            // Only sockets one of these processes holds: a namespace can be
            // shared with processes that are not reported (the host's).
            let owners: HashMap<u64, u32> = pids
                .iter()
                .flat_map(|p| {
                    procfs::socket_inodes(&self.proc_root, *p)
                        .into_iter()
                        .map(move |i| (i, *p))
                })
                .collect();
            let listening: HashSet<u16> = sockets
                .iter()
                .filter(|s| s.state == TCP_LISTEN)
                .map(|s| s.local.port())
                .collect();
            for s in sockets {
                let Some(&pid) = owners.get(&s.inode) else {
                    continue;
                };
                let kind = match s.state {
                    TCP_LISTEN => NetKind::Listen,
                    TCP_ESTABLISHED if listening.contains(&s.local.port()) => NetKind::Accept,
                    TCP_ESTABLISHED => NetKind::Connect,
                    _ => continue,
                };
                if kind == NetKind::Listen
                    && let (Some(seeds), Ok(netns)) = (&self.listener_seeds, u32::try_from(netns))
                {
                    // Ignored error: the sensor stopped; nothing left to seed.
                    let _ = seeds.send(ListenerSeed {
                        netns,
                        port: s.local.port(),
                        pid,
                    });
                }
                let container = self.pids.get(&pid).cloned().flatten();
                if let Some(poll) = &mut self.socket_poll {
                    poll.remember(netns, &s, kind, (pid, container.clone()));
                }
                network.push(NetworkEvent {
                    container,
                    raw: NetworkRaw {
                        time_unix_ns: now,
                        pid,
                        kind,
                        local: s.local,
                        remote: (kind != NetKind::Listen).then_some(s.remote),
                        bytes_sent: 0,
                        bytes_received: 0,
                        cgroup_id: 0,
                        pre_existing: true,
                    },
                });
            }
        }
        tracing::info!(
            processes = events.len(),
            sockets = network.len(),
            "reported what was already running"
        );
        (events, network)
    }

    /// Whether an exec of `pid` in `container` enters it from outside: its
    /// parent is not in the container (a runtime's exec, not a descendant of
    /// the container's init) while the container already runs another process
    /// (so this is not the init itself), or its parent already was an exec-in.
    fn is_exec_in(&self, pid: u32, ppid: Option<u32>, container: Option<&Arc<Container>>) -> bool {
        let (Some(container), Some(ppid)) = (container, ppid) else {
            return false;
        };
        if self.exec_in.contains(&pid) || self.exec_in.contains(&ppid) {
            return true;
        }
        let same = |c: &Option<Arc<Container>>| c.as_ref().is_some_and(|c| c.key.id == container.key.id);
        if self.pids.get(&ppid).is_some_and(same) {
            return false;
        }
        self.pids.iter().any(|(p, c)| *p != pid && same(c))
    }

    /// Attributes a TCP socket event to the container of the process that owns
    /// the socket; `None` when that is the host and host processes are not
    /// reported.
    pub async fn network(&mut self, raw: NetworkRaw) -> Option<NetworkEvent> {
        let container = self.owner(raw.pid, raw.cgroup_id).await;
        (container.is_some() || self.host_processes).then_some(NetworkEvent { container, raw })
    }

    /// Attributes a fork, and an exec held for its child (one whose process
    /// vanished before /proc was read, and whose fork was reported after it:
    /// the parent reports its fork only after the child already runs).
    pub async fn fork(&mut self, raw: ForkRaw) -> Vec<Event> {
        let fork = self.fork_event(raw).await;
        let late_exec = self.late_exec(raw.child_pid);
        fork.into_iter().chain(late_exec).collect()
    }

    /// Attributes an exit, after an exec held for that process.
    pub async fn exit(&mut self, raw: ExitRaw) -> Vec<Event> {
        let late_exec = self.late_exec(raw.pid);
        late_exec.into_iter().chain(self.exit_event(raw)).collect()
    }

    /// The exec held for `pid`, attributed now that its process is known.
    fn late_exec(&mut self, pid: u32) -> Option<Event> {
        self.unresolved.remove(&pid).and_then(|mut exec| {
            exec.container = self.pids.get(&pid).cloned().flatten();
            (exec.container.is_some() || self.host_processes).then_some(exec)
        })
    }

    /// Attributes an exec; `None` when it is not reported (a host process),
    /// or not yet (held until its fork or exit says where it ran).
    pub async fn exec(&mut self, raw: ExecRaw) -> Option<Event> {
        let ExecRaw {
            time_unix_ns,
            pid,
            info,
            parent_exe,
        } = raw;
        // A cgroup seen before (eBPF gives its id) skips parsing the
        // path, unless its container's metadata is still incomplete.
        let cached = info
            .as_ref()
            .filter(|i| i.cgroup_id != 0)
            .and_then(|i| self.cgroups.get(&i.cgroup_id))
            .filter(|c| c.as_ref().is_none_or(|c| c.complete))
            .cloned();
        let hit = cached.is_some();
        let container = match (cached, &info) {
            (Some(c), _) => c,
            (None, Some(info)) => match info.cgroup.container() {
                Some(key) => Some(self.container(key).await),
                None => None,
            },
            (None, None) => match self.pids.get(&pid) {
                Some(c) => c.clone(),
                None => {
                    self.remember_unresolved(time_unix_ns, pid, parent_exe);
                    return None;
                }
            },
        };
        if let Some(info) = info.as_ref().filter(|_| !hit) {
            self.learn_cgroup(&container, info);
        }
        let exec_in = self.is_exec_in(pid, info.as_ref().map(|i| i.ppid), container.as_ref());
        self.track(pid, container.clone());
        if exec_in {
            self.exec_in.insert(pid);
        }
        if container.is_none() && !self.host_processes {
            return None;
        }
        let info = info.unwrap_or_default();
        Some(Event {
            ppid: info.ppid,
            uid: info.uid,
            gid: info.gid,
            path: info.exe,
            argv: info.argv,
            cwd: info.cwd,
            parent_exe,
            exec_in,
            drift: info.drift,
            stdio_socket: info.stdio_socket,
            ..Event::process(Kind::Exec, time_unix_ns, container, pid)
        })
    }

    /// Keeps an unattributable exec until its fork or exit tells where it ran.
    fn remember_unresolved(&mut self, time_unix_ns: i64, pid: u32, parent_exe: Option<Bytes>) {
        if self.unresolved.len() >= MAX_UNRESOLVED {
            tracing::debug!(dropped = self.unresolved.len(), "unattributed execs expired");
            self.unresolved.clear();
        }
        self.unresolved.insert(
            pid,
            Event {
                parent_exe,
                ..Event::process(Kind::Exec, time_unix_ns, None, pid)
            },
        );
    }

    async fn fork_event(&mut self, raw: ForkRaw) -> Option<Event> {
        let ForkRaw {
            time_unix_ns,
            parent_pid,
            child_pid,
        } = raw;
        let container = match self.pids.get(&parent_pid) {
            Some(c) => c.clone(),
            None => match procfs::read_process(&self.proc_root, child_pid)
                .ok()
                .and_then(|i| i.cgroup.container())
            {
                Some(key) => Some(self.container(key).await),
                None => None,
            },
        };
        self.track(child_pid, container.clone());
        let exec_in = self.exec_in.contains(&parent_pid);
        if exec_in {
            self.exec_in.insert(child_pid);
        }
        if container.is_none() && !self.host_processes {
            return None;
        }
        Some(Event {
            ppid: parent_pid,
            exec_in,
            ..Event::process(Kind::Fork, time_unix_ns, container, child_pid)
        })
    }

    fn exit_event(&mut self, raw: ExitRaw) -> Option<Event> {
        let ExitRaw {
            time_unix_ns,
            pid,
            code,
        } = raw;
        let container = self.pids.remove(&pid).flatten();
        let exec_in = self.exec_in.remove(&pid);
        if container.is_none() && !self.host_processes {
            return None;
        }
        Some(Event {
            exit_code: Some(code),
            exec_in,
            ..Event::process(Kind::Exit, time_unix_ns, container, pid)
        })
    }

    fn track(&mut self, pid: u32, container: Option<Arc<Container>>) {
        if self.pids.len() >= MAX_PIDS && !self.pids.contains_key(&pid) {
            // Exits we missed leave stale pids; drop those whose process is gone.
            let root = self.proc_root.clone();
            self.pids.retain(|p, _| root.join(p.to_string()).exists());
            if self.pids.len() >= MAX_PIDS {
                tracing::warn!(tracked = self.pids.len(), "pid table full, forgetting all pids");
                self.pids.clear();
            }
            let pids = &self.pids;
            self.exec_in.retain(|p| pids.contains_key(p));
        }
        self.pids.insert(pid, container);
    }

    /// The container for `key`, asking the runtime on first sight (and again
    /// later if it did not answer).
    async fn container(&mut self, key: ContainerKey) -> Arc<Container> {
        if let Some(cached) = self.containers.get(&key.id) {
            match cached.retry_at {
                Some(at) if Instant::now() >= at => {}
                _ => return cached.container.clone(),
            }
        }
        let (meta, complete) = match self.runtime.inspect(&key.id).await {
            Ok(Some(meta)) => (meta, true),
            Ok(None) => {
                tracing::debug!(container = %key.id, "no runtime socket knows this container");
                (ContainerMeta::default(), false)
            }
            Err(error) => {
                tracing::warn!(container = %key.id, %error, "container metadata unavailable");
                (ContainerMeta::default(), false)
            }
        };
        let workload_id = workload::identity(&key.id, &meta);
        if complete || !self.containers.contains_key(&key.id) {
            tracing::info!(
                container = %key.id,
                runtime = key.runtime.as_str_name(),
                image = meta.image.as_deref().unwrap_or("?"),
                workload = %workload_id,
                "container discovered"
            );
        }
        let container = Arc::new(Container {
            key: key.clone(),
            reported: watched(&self.watch, &meta),
            meta,
            workload_id,
            complete,
        });
        if self.containers.len() >= MAX_CONTAINERS {
            self.evict_containers();
        }
        self.containers.insert(
            key.id,
            CachedContainer {
                container: container.clone(),
                retry_at: (!complete).then(|| Instant::now() + METADATA_RETRY),
            },
        );
        container
    }

    /// Forgets containers that no process tracked refers to any more.
    fn evict_containers(&mut self) {
        let live: HashSet<&str> = self.pids.values().flatten().map(|c| c.key.id.as_str()).collect();
        let before = self.containers.len();
        self.containers.retain(|id, _| live.contains(id.as_str()));
        tracing::debug!(
            before,
            after = self.containers.len(),
            "evicted containers without processes"
        );
    }
}

/// Whether a container with `meta` is reported under the name `patterns`
/// (empty: every container; a container not named yet: not until it is).
fn watched(patterns: &[String], meta: &ContainerMeta) -> bool {
    patterns.is_empty()
        || meta
            .name
            .as_deref()
            .is_some_and(|name| patterns.iter().any(|p| glob(p, name)))
}

/// Whether `name` matches `pattern`, where `*` matches any run of
/// characters (including none) and every other character itself.
fn glob(pattern: &str, name: &str) -> bool {
    let Some((first, rest)) = pattern.split_once('*') else {
        return pattern == name;
    };
    let Some(mut tail) = name.strip_prefix(first) else {
        return false;
    };
    let mut parts: Vec<&str> = rest.split('*').collect();
    let last = parts.pop().unwrap_or_default();
    for part in parts {
        match tail.find(part) {
            Some(at) => tail = &tail[at + part.len()..],
            None => return false,
        }
    }
    tail.len() >= last.len() && tail.ends_with(last)
}

/// The kernel id of the cgroup a `/proc/PID/cgroup` text names in the
/// hierarchy the eBPF sensor reads (v2, else v1 memory): its directory's inode.
fn cgroup_inode(text: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let root = Path::new("/sys/fs/cgroup");
    let dir = if root.join("cgroup.controllers").exists() {
        let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
        root.join(path.trim_start_matches('/'))
    } else {
        let path = text.lines().find_map(|l| {
            let mut p = l.splitn(3, ':');
            let (_, controllers, path) = (p.next()?, p.next()?, p.next()?);
            controllers.split(',').any(|c| c == "memory").then_some(path)
        })?;
        root.join("memory").join(path.trim_start_matches('/'))
    };
    std::fs::metadata(dir).ok().map(|m| m.ino())
}

/// Runs attribution and batching until the sensor queue closes, then sends the
/// last batch and returns.
pub async fn run(
    mut attributor: Attributor,
    mut batcher: Batcher,
    mut raw: mpsc::Receiver<RawEvent>,
    out: mpsc::Sender<PendingBatch>,
) {
    let mut ready: Vec<PendingBatch> = Vec::new();
    let mut received: Vec<RawEvent> = Vec::with_capacity(RECEIVE_AT_ONCE);
    let (events, network) = attributor.existing().await;
    ready.extend(events.into_iter().filter_map(|e| batcher.push(e)));
    ready.extend(network.into_iter().filter_map(|e| batcher.push_network(e)));
    let mut sample_tick = tokio::time::interval(attributor.sample_interval);
    sample_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut gap_tick = tokio::time::interval(GAP_INTERVAL);
    gap_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut socket_tick = tokio::time::interval(proc_net::POLL_INTERVAL);
    socket_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let polls_sockets = attributor.polls_sockets();
    // Inventories: a task of their own (file reads go to blocking threads);
    // targets are offered each tick and skipped while it is busy, results
    // come back here to be batched.
    let (inventory_targets, mut inventories, mut inventory_tick) = match attributor.inventory.clone() {
        Some(settings) => {
            let (targets_tx, targets_rx) = mpsc::channel(1);
            let (records_tx, records_rx) = mpsc::channel(64);
            let tick_every = settings.interval.min(Duration::from_secs(5));
            let scanner = crate::inventory::Scanner::new(settings, attributor.runtime.clone());
            tokio::spawn(crate::inventory::run(scanner, targets_rx, records_tx));
            let mut tick = tokio::time::interval(tick_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            (Some(targets_tx), Some(records_rx), Some(tick))
        }
        None => (None, None, None),
    };
    loop {
        for batch in ready.drain(..) {
            if out.send(batch).await.is_err() {
                tracing::error!("stream client stopped, pipeline stops");
                return;
            }
        }
        let deadline = batcher.deadline();
        tokio::select! {
            _ = sample_tick.tick() => {
                for r in attributor.sample_resources() {
                    ready.extend(batcher.push_sample(Sample::Resources(r)));
                }
            }
            _ = async { inventory_tick.as_mut()?.tick().await; Some(()) }, if inventory_tick.is_some() => {
                if let Some(tx) = &inventory_targets {
                    // Busy with the previous round: skipped (the next tick offers again).
                    let _ = tx.try_send(attributor.inventory_targets());
                }
            }
            Some(record) = async { inventories.as_mut()?.recv().await }, if inventories.is_some() => {
                ready.extend(batcher.push_sample(Sample::Inventory(record)));
            }
            _ = gap_tick.tick() => {
                for g in attributor.take_gaps() {
                    ready.extend(batcher.push_sample(Sample::Gap(g)));
                }
            }
            _ = socket_tick.tick(), if polls_sockets => {
                for e in attributor.poll_sockets() {
                    if attributor.admit(e.container.as_ref(), e.raw.time_unix_ns) {
                        ready.extend(batcher.push_network(e));
                    }
                }
            }
            // Everything waiting is taken at once: one wake-up and one pass of
            // this loop (timers re-armed) per burst, not per event.
            n = raw.recv_many(&mut received, RECEIVE_AT_ONCE) => {
                if n == 0 {
                    break;
                }
                for event in received.drain(..) {
                    handle(&mut attributor, &mut batcher, &mut ready, event).await;
                }
            }
            () = sleep_until(deadline), if deadline.is_some() => ready.extend(batcher.flush()),
        }
    }
    for g in attributor.take_gaps() {
        ready.extend(batcher.push_sample(Sample::Gap(g)));
    }
    ready.extend(batcher.flush());
    for batch in ready {
        // Ignored error: the client is gone and reports its own loss.
        let _ = out.send(batch).await;
    }
}

/// Sensor events taken from the queue per pass of [`run`]'s loop.
const RECEIVE_AT_ONCE: usize = 256;

/// Attributes one sensor event and batches what comes of it.
async fn handle(attributor: &mut Attributor, batcher: &mut Batcher, ready: &mut Vec<PendingBatch>, event: RawEvent) {
    match event {
        RawEvent::Syscalls(s) => {
            if let Some(sample) = attributor.syscalls(s) {
                ready.extend(batcher.push_sample(Sample::Syscalls(sample)));
            }
        }
        RawEvent::Drops(d) => attributor.kernel_drops(d),
        RawEvent::File(f) => {
            if let Some(e) = attributor.file(f).await
                && attributor.admit(e.container.as_ref(), e.raw.time_unix_ns)
            {
                attributor.note_inventory_write(&e);
                ready.extend(batcher.push_file(e));
            }
        }
        RawEvent::Network(n) => {
            if let Some(e) = attributor.network(n).await
                && attributor.admit(e.container.as_ref(), e.raw.time_unix_ns)
            {
                ready.extend(batcher.push_network(e));
            }
        }
        RawEvent::Exec(raw) => {
            let exec = attributor.exec(raw).await;
            admit_and_push(attributor, batcher, ready, exec);
        }
        RawEvent::Fork(raw) => {
            let events = attributor.fork(raw).await;
            admit_and_push(attributor, batcher, ready, events);
        }
        RawEvent::Exit(raw) => {
            let events = attributor.exit(raw).await;
            admit_and_push(attributor, batcher, ready, events);
        }
    }
}

/// Batches the process events the rate limit admits.
fn admit_and_push(
    attributor: &mut Attributor,
    batcher: &mut Batcher,
    ready: &mut Vec<PendingBatch>,
    events: impl IntoIterator<Item = Event>,
) {
    for e in events {
        if attributor.admit(e.container.as_ref(), e.time_unix_ns) {
            ready.extend(batcher.push(e));
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(d) = deadline {
        tokio::time::sleep_until(d.into()).await;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::procfs::ProcessInfo;
    use glasshouse_proto::v1::ContainerRuntime;

    impl Container {
        pub(crate) fn clone_for_test(&self) -> Container {
            Container {
                key: self.key.clone(),
                meta: self.meta.clone(),
                workload_id: self.workload_id.clone(),
                complete: self.complete,
                reported: self.reported,
            }
        }
    }

    impl Attributor {
        /// A process event of any kind through its own attribution, as the
        /// pipeline's `handle` does.
        async fn attribute(&mut self, raw: RawEvent) -> Vec<Event> {
            match raw {
                RawEvent::Exec(raw) => self.exec(raw).await.into_iter().collect(),
                RawEvent::Fork(raw) => self.fork(raw).await,
                RawEvent::Exit(raw) => self.exit(raw).await,
                other => panic!("not a process event: {other:?}"),
            }
        }
    }

    pub(crate) fn container(id: &str) -> Arc<Container> {
        Arc::new(Container {
            key: ContainerKey {
                runtime: ContainerRuntime::Podman,
                id: id.into(),
                pod_uid: None,
            },
            meta: ContainerMeta::default(),
            workload_id: "w".into(),
            complete: true,
            reported: true,
        })
    }

    pub(crate) fn exec(c: &Arc<Container>, pid: u32, argv: &[&str]) -> Event {
        Event {
            ppid: 1,
            path: Some(Bytes::from_static(b"/bin/busybox")),
            argv: argv.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())).collect(),
            cwd: Some(Bytes::from_static(b"/")),
            ..Event::process(Kind::Exec, 1_000 + i64::from(pid), Some(c.clone()), pid)
        }
    }

    #[test]
    fn only_watched_containers_are_admitted() {
        let patterns = vec!["gh-vulns-*".to_owned()];
        let meta = |name: Option<&str>| ContainerMeta {
            name: name.map(str::to_owned),
            ..ContainerMeta::default()
        };
        assert!(watched(&patterns, &meta(Some("gh-vulns-deb"))));
        assert!(!watched(&patterns, &meta(Some("other"))));
        assert!(!watched(&patterns, &meta(None)), "not named yet: not reported");
        assert!(watched(&[], &meta(None)), "no filter: every container");
        let mut a = Attributor::new(RuntimeClient::new(vec![]), PathBuf::from("/nonexistent-proc"), false)
            .with_container_filter(patterns.clone());
        let classified = |id: &str, name: Option<&str>| {
            let mut c = container(id).clone_for_test();
            c.reported = watched(&patterns, &meta(name));
            Arc::new(c)
        };
        assert!(a.admit(Some(&classified("c1", Some("gh-vulns-deb"))), 1));
        assert!(!a.admit(Some(&classified("c2", Some("other"))), 1));
        assert!(
            !a.admit(Some(&classified("c3", None)), 1),
            "not named yet: not reported"
        );
        // Host processes follow host_processes, not the filter.
        assert!(a.admit(None, 1));
        // Nothing refused by the filter is counted as a gap.
        assert!(a.take_gaps().is_empty());
    }

    #[test]
    fn container_name_patterns() {
        for (pattern, name, want) in [
            ("web", "web", true),
            ("web", "web-1", false),
            ("gh-vulns-*", "gh-vulns-deb-1", true),
            ("gh-vulns-*", "gh-other", false),
            ("*-db", "shop-db", true),
            ("*-db", "shop-db-1", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "acb", false),
            ("*", "", true),
            ("a*a", "a", false),
        ] {
            assert_eq!(glob(pattern, name), want, "{pattern} vs {name}");
        }
    }

    #[test]
    fn identical_execs_collapse_with_count() {
        let c = container("c1");
        let mut b = Batcher::new(100, Duration::from_secs(1));
        assert!(b.push(exec(&c, 10, &["cat", "/etc/hostname"])).is_none());
        assert!(b.push(exec(&c, 11, &["cat", "/etc/hostname"])).is_none());
        assert!(b.push(exec(&c, 12, &["cat", "/etc/passwd"])).is_none());
        let batch = b.flush().unwrap();
        assert_eq!(batch.sequence, 1);
        assert_eq!(batch.events.len(), 2);
        assert_eq!(batch.events[0].count, 2);
        assert_eq!(batch.events[0].pid, 10);
        assert_eq!(batch.events[1].count, 1);
        assert!(b.flush().is_none());
    }

    #[test]
    fn batches_close_by_size_and_sequences_increase() {
        let c = container("c1");
        let mut b = Batcher::new(2, Duration::from_secs(1));
        assert!(b.push(exec(&c, 1, &["a"])).is_none());
        assert!(b.deadline().is_some());
        let first = b.push(exec(&c, 2, &["b"])).unwrap();
        assert_eq!((first.sequence, first.events.len()), (1, 2));
        assert!(b.deadline().is_none());
        b.push(exec(&c, 3, &["c"]));
        assert_eq!(b.flush().unwrap().sequence, 2);
    }

    #[test]
    fn batches_close_by_expanded_bytes_within_the_contract() {
        use glasshouse_proto::limits::AGENT_BATCH_BYTES;
        let c = container("c1");
        let mut b = Batcher::new(100_000, Duration::from_secs(1));
        // The same 64 KiB argument on every exec: one string on the wire,
        // 64 KiB per row in the aggregator.
        let arg = "a".repeat(64 << 10);
        let mut pid = 0;
        let sealed = loop {
            pid += 1;
            if let Some(batch) = b.push(exec(&c, pid, &[&arg, &pid.to_string()])) {
                break batch;
            }
            assert!(pid < 1000, "no batch sealed after {pid} execs");
        };
        // Sealed by the event that reached the budget, not before.
        let sizes: Vec<usize> = sealed.events.iter().map(crate::batch::event_bytes).collect();
        let total: usize = sizes.iter().sum();
        assert!(total >= AGENT_BATCH_BYTES, "{total}");
        assert!(total - sizes[sizes.len() - 1] < AGENT_BATCH_BYTES, "{total}");
        assert!(sizes.len() < 200, "{} rows of 64 KiB", sizes.len());
    }

    #[tokio::test]
    async fn exit_is_attributed_through_the_fork_that_made_the_pid() {
        let mut a = Attributor::new(RuntimeClient::new(vec![]), PathBuf::from("/nonexistent-proc"), false);
        let c = container("c1");
        a.track(100, Some(c.clone()));
        let fork = a
            .attribute(RawEvent::Fork(ForkRaw {
                time_unix_ns: 1,
                parent_pid: 100,
                child_pid: 101,
            }))
            .await
            .remove(0);
        assert_eq!(fork.container.unwrap().key.id, "c1");
        let exit = a
            .attribute(RawEvent::Exit(ExitRaw {
                time_unix_ns: 2,
                pid: 101,
                code: 3,
            }))
            .await
            .remove(0);
        assert_eq!(exit.exit_code, Some(3));
        assert_eq!(exit.container.unwrap().key.id, "c1");
        // A host process is not reported unless host_processes is on.
        assert!(
            a.attribute(RawEvent::Exit(ExitRaw {
                time_unix_ns: 3,
                pid: 555,
                code: 0
            }))
            .await
            .is_empty()
        );
    }

    #[tokio::test]
    async fn exec_reported_before_its_fork_is_attributed_through_the_fork() {
        let mut a = Attributor::new(RuntimeClient::new(vec![]), PathBuf::from("/nonexistent-proc"), false);
        let c = container("c1");
        a.track(100, Some(c.clone()));
        // The child exec'd and exited before /proc was read; its fork comes later.
        let exec = RawEvent::Exec(ExecRaw {
            time_unix_ns: 5,
            pid: 101,
            info: None,
            parent_exe: None,
        });
        assert!(a.attribute(exec).await.is_empty());
        let events = a
            .attribute(RawEvent::Fork(ForkRaw {
                time_unix_ns: 4,
                parent_pid: 100,
                child_pid: 101,
            }))
            .await;
        let kinds: Vec<Kind> = events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, vec![Kind::Fork, Kind::Exec]);
        assert_eq!(events[1].container.as_ref().unwrap().key.id, "c1");
        assert_eq!(events[1].path, None, "what /proc could not tell stays unknown");
        // A host exec that is never claimed by a container fork is not reported.
        let host = RawEvent::Exec(ExecRaw {
            time_unix_ns: 6,
            pid: 300,
            info: None,
            parent_exe: None,
        });
        assert!(a.attribute(host).await.is_empty());
        assert!(
            a.attribute(RawEvent::Exit(ExitRaw {
                time_unix_ns: 7,
                pid: 300,
                code: 0
            }))
            .await
            .is_empty()
        );
    }

    fn exec_of(pid: u32, ppid: u32, container_hex: Option<char>) -> RawEvent {
        let cgroup = container_hex.map_or_else(
            || "0::/user.slice".to_owned(),
            |h| format!("0::/machine.slice/libpod-{}.scope", h.to_string().repeat(64)),
        );
        RawEvent::Exec(ExecRaw {
            time_unix_ns: i64::from(pid),
            pid,
            info: Some(ProcessInfo {
                pid,
                ppid,
                cgroup: procfs::Cgroup::Proc(cgroup),
                ..Default::default()
            }),
            parent_exe: None,
        })
    }

    #[tokio::test]
    async fn exec_ins_and_their_descendants_are_marked_init_and_its_children_not() {
        let mut a = Attributor::new(RuntimeClient::new(vec![]), PathBuf::from("/nonexistent-proc"), false);
        let exec_in = async |a: &mut Attributor, raw: RawEvent| a.attribute(raw).await.remove(0).exec_in;
        // The runtime (host pid 5) starts the container's init, pid 10.
        a.track(5, None);
        assert!(!exec_in(&mut a, exec_of(10, 5, Some('a'))).await, "init");
        // init's own child.
        a.attribute(RawEvent::Fork(ForkRaw {
            time_unix_ns: 11,
            parent_pid: 10,
            child_pid: 11,
        }))
        .await;
        assert!(!exec_in(&mut a, exec_of(11, 10, Some('a'))).await, "child of init");
        // `podman exec`: the runtime (host) starts pid 20 in the running container.
        assert!(exec_in(&mut a, exec_of(20, 5, Some('a'))).await, "exec-in");
        // ... whose shell forks and execs a child: still the exec-in session.
        let fork = a
            .attribute(RawEvent::Fork(ForkRaw {
                time_unix_ns: 21,
                parent_pid: 20,
                child_pid: 21,
            }))
            .await;
        assert!(fork[0].exec_in);
        assert!(
            exec_in(&mut a, exec_of(21, 20, Some('a'))).await,
            "descendant of an exec-in"
        );
        let exit = a
            .attribute(RawEvent::Exit(ExitRaw {
                time_unix_ns: 22,
                pid: 21,
                code: 0,
            }))
            .await;
        assert!(exit[0].exec_in);
        // The init of another container started by the same runtime is not an exec-in.
        assert!(
            !exec_in(&mut a, exec_of(30, 5, Some('b'))).await,
            "another container's init"
        );
    }

    #[tokio::test]
    async fn a_socket_closed_after_its_owner_exited_is_attributed_by_cgroup() {
        let mut a = Attributor::new(RuntimeClient::new(vec![]), PathBuf::from("/nonexistent-proc"), false);
        let RawEvent::Exec(ExecRaw {
            time_unix_ns,
            pid,
            info,
            parent_exe,
        }) = exec_of(10, 5, Some('a'))
        else {
            unreachable!()
        };
        let info = info.map(|i| ProcessInfo { cgroup_id: 77, ..i });
        a.attribute(RawEvent::Exec(ExecRaw {
            time_unix_ns,
            pid,
            info,
            parent_exe,
        }))
        .await;
        a.attribute(RawEvent::Exit(ExitRaw {
            time_unix_ns: 11,
            pid: 10,
            code: 0,
        }))
        .await;
        let close = |cgroup_id| NetworkRaw {
            time_unix_ns: 12,
            pid: 10,
            kind: glasshouse_proto::v1::NetworkEventKind::Close,
            local: "10.88.0.2:8080".parse().unwrap(),
            remote: Some("10.88.0.3:40000".parse().unwrap()),
            bytes_sent: 1,
            bytes_received: 2,
            cgroup_id,
            pre_existing: false,
        };
        let e = a.network(close(77)).await.expect("attributed through its cgroup");
        assert_eq!(e.container.unwrap().key.id, "a".repeat(64));
        // Unknown pid and cgroup: not a container's (and host processes are off).
        assert!(a.network(close(78)).await.is_none());
    }

    #[tokio::test]
    async fn writes_outside_sensitive_paths_are_dropped_and_repeats_collapse() {
        let mut a = Attributor::new(RuntimeClient::new(vec![]), PathBuf::from("/nonexistent-proc"), false);
        let c = container("c1");
        a.track(10, Some(c.clone()));
        let write = |path: &'static [u8]| FileRaw {
            time_unix_ns: 1,
            pid: 10,
            path: Bytes::from_static(path),
            exe: Some(Bytes::from_static(b"/bin/busybox")),
            flags: 1,
            created: false,
            cgroup_id: 0,
        };
        assert!(a.file(write(b"/tmp/x")).await.is_none(), "not sensitive");
        let mut b = Batcher::new(100, Duration::from_secs(1));
        for _ in 0..3 {
            let e = a.file(write(b"/etc/passwd")).await.expect("sensitive, in a container");
            assert!(b.push_file(e).is_none());
        }
        b.push_file(a.file(write(b"/etc/shadow")).await.unwrap());
        let batch = b.flush().unwrap();
        assert_eq!(batch.files.len(), 2);
        assert_eq!((batch.files[0].count, batch.files[1].count), (3, 1));
        assert_eq!(batch.len(), 2);
        // A host process's write is not reported.
        let host = FileRaw {
            pid: 99,
            ..write(b"/etc/passwd")
        };
        assert!(a.file(host).await.is_none());
    }

    #[test]
    fn a_noisy_container_is_limited_and_its_drops_become_a_gap() {
        let stats = Arc::new(crate::sensor::SensorStats::default());
        let mut a = Attributor::new(RuntimeClient::new(vec![]), PathBuf::from("/nonexistent-proc"), false)
            .with_rate_limit(10)
            .with_stats(stats.clone());
        let (noisy, quiet) = (container("noisy"), container("quiet"));
        // A burst of two seconds' worth passes, then the bucket is empty.
        let admitted = (0..100).filter(|i| a.admit(Some(&noisy), 1_000 + i)).count();
        assert_eq!(admitted, 20);
        assert!(a.admit(Some(&quiet), 5_000), "another container keeps its own budget");
        assert!(a.admit(None, 5_000), "host events are not limited");
        let gaps = a.take_gaps();
        assert_eq!(gaps.len(), 1);
        let g = &gaps[0];
        assert_eq!(g.container.as_ref().unwrap().key.id, "noisy");
        assert_eq!((g.dropped, g.start_unix_ns, g.end_unix_ns), (80, 1_020, 1_099));
        assert_eq!(g.reason, glasshouse_proto::v1::GapReason::RateLimited);
        assert_eq!(stats.rate_limited.get(), 80, "and counted in /metrics");
        assert!(a.take_gaps().is_empty(), "a gap is reported once");

        // Kernel drops of a known container's cgroup and of an unknown one.
        a.cgroups.insert(7, Some(quiet.clone()));
        a.kernel_drops(crate::sensor::DropsRaw {
            start_unix_ns: 1,
            end_unix_ns: 2,
            per_cgroup: vec![(7, 3), (8, 4)],
        });
        let mut gaps = a.take_gaps();
        gaps.sort_by_key(|g| g.dropped);
        assert_eq!(gaps.len(), 2);
        assert_eq!(gaps[0].container.as_ref().unwrap().key.id, "quiet");
        assert!(gaps[1].container.is_none(), "unknown cgroup: a host-wide gap");
    }
}
