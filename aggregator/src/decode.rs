//! Resolves wire batches of one agent stream into Arrow rows: string and
//! container references are looked up in the stream's tables, timestamps
//! rebuilt from deltas (one chain per event list), raw network addresses
//! turned into text, file paths required; each syscall profile becomes one
//! row per syscall (named for x86_64), each resource sample one row, each
//! gap one row (container 0: a gap of the whole host, under the host
//! workload id like host events).
//! Anything inconsistent is refused with a [`DecodeError`] naming the
//! problem; the tables stay bounded by the configured limits.
//!
//! The batch limit (`max_batch_events`, sent to the agent in the welcome)
//! counts events and samples: every process, network and file event, one per
//! syscall profile (whatever its number of syscalls) and one per resource
//! sample. Gaps are not counted: they are small, and the agent bounds them
//! (one per container and reason per second); a batch may still hold at most
//! `max_batch_events` of them. Inventories (a container's installed
//! packages, one row each) are not counted either: at most
//! `max_batch_events` per batch, [`MAX_PACKAGES`] packages each, strings of
//! at most 4096 bytes, a known container, a plausible time.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use glasshouse_proto::{file, gaps, inventory, network, process, resources, syscalls, v1};

/// Most packages in one inventory (a large distribution image holds a few
/// thousand; language lockfiles add some thousands more).
pub const MAX_PACKAGES: usize = 100_000;
/// Most read errors in one inventory.
const MAX_INVENTORY_ERRORS: usize = 64;
/// Longest string of an inventory (names, versions, paths, errors).
const MAX_INVENTORY_STRING: usize = 4096;

/// 2000-01-01 and 2200-01-01 in Unix ns: anything outside is a broken clock or input.
const MIN_TIME_NS: i64 = 946_684_800_000_000_000;
const MAX_TIME_NS: i64 = 7_258_118_400_000_000_000;

/// Which list of periodic samples a refusal is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleKind {
    SyscallProfile,
    ResourceSample,
}

impl fmt::Display for SampleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SampleKind::SyscallProfile => "syscall profile",
            SampleKind::ResourceSample => "resource sample",
        })
    }
}

/// Why a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// `events` counts events and samples (see the module documentation).
    #[error("batch {sequence} has {events} events, limit is {max}")]
    TooManyEvents { sequence: u64, events: usize, max: u32 },
    #[error("batch {sequence}: string dictionary would exceed {max} entries")]
    TooManyStrings { sequence: u64, max: u32 },
    /// The rows would take more than `max_batch_bytes` once built (every
    /// string reference counted with its string's length).
    #[error("batch {sequence}: rows would take more than max_batch_bytes = {max} bytes once built (at least {bytes})")]
    OverBatchBudget { sequence: u64, bytes: usize, max: usize },
    /// The batch's times spread wider than the time window allows.
    #[error("batch {sequence}: event times span {span_s} s, more than the {max_s} s one batch may cover")]
    TimeSpan { sequence: u64, span_s: i64, max_s: i64 },
    /// The stream's dictionary would hold more than `max_string_bytes`.
    #[error("batch {sequence}: string dictionary would hold {bytes} bytes, more than max_string_bytes = {max}")]
    OverStringBudget { sequence: u64, bytes: usize, max: usize },
    #[error("batch {sequence}: string id 0 is reserved")]
    StringIdZero { sequence: u64 },
    #[error("batch {sequence}: container ref 0 is reserved")]
    ContainerRefZero { sequence: u64 },
    #[error("batch {sequence}, event {index}: unknown string reference {id}")]
    UnknownString { sequence: u64, index: usize, id: u32 },
    #[error("batch {sequence}: container {container_ref} uses unknown string reference {id}")]
    UnknownContainerString { sequence: u64, container_ref: u32, id: u32 },
    #[error("batch {sequence}, event {index}: unknown container reference {container_ref}")]
    UnknownContainer {
        sequence: u64,
        index: usize,
        container_ref: u32,
    },
    #[error("batch {sequence}, event {index}: unknown process event kind {kind}")]
    UnknownKind { sequence: u64, index: usize, kind: i32 },
    #[error("batch {sequence}, event {index}: unknown network event kind {kind}")]
    UnknownNetworkKind { sequence: u64, index: usize, kind: i32 },
    #[error("batch {sequence}, event {index}: unknown file event kind {kind}")]
    UnknownFileKind { sequence: u64, index: usize, kind: i32 },
    #[error("batch {sequence}, event {index}: file event without a path")]
    MissingPath { sequence: u64, index: usize },
    #[error("batch {sequence}, event {index}: {side} address of {len} bytes, expected {expected}")]
    BadAddress {
        sequence: u64,
        index: usize,
        side: &'static str,
        len: usize,
        expected: &'static str,
    },
    #[error("batch {sequence}, event {index}: local and remote addresses of different families")]
    AddressFamilyMismatch { sequence: u64, index: usize },
    #[error("batch {sequence}, event {index}: {side} port {port} out of range")]
    BadPort {
        sequence: u64,
        index: usize,
        side: &'static str,
        port: u32,
    },
    #[error("batch {sequence}, event {index}: timestamp out of range")]
    BadTimestamp { sequence: u64, index: usize },
    /// Samples are per container: host processes are neither profiled nor sampled.
    #[error("batch {sequence}, {sample} {index}: container 0, a sample must name a container")]
    SampleWithoutContainer {
        sequence: u64,
        sample: SampleKind,
        index: usize,
    },
    #[error("batch {sequence}, {sample} {index}: unknown container reference {container_ref}")]
    UnknownSampleContainer {
        sequence: u64,
        sample: SampleKind,
        index: usize,
        container_ref: u32,
    },
    #[error("batch {sequence}, {sample} {index}: timestamp out of range")]
    BadSampleTimestamp {
        sequence: u64,
        sample: SampleKind,
        index: usize,
    },
    #[error(
        "batch {sequence}, syscall profile {index}: interval ends at {end_unix_ns}, before its start {start_unix_ns}"
    )]
    ReversedInterval {
        sequence: u64,
        index: usize,
        start_unix_ns: i64,
        end_unix_ns: i64,
    },
    #[error("batch {sequence}, syscall profile {index}: {numbers} syscall numbers but {counts} counts")]
    ProfileLengthMismatch {
        sequence: u64,
        index: usize,
        numbers: usize,
        counts: usize,
    },
    /// Gaps do not count against the event limit but have their own of the same size.
    #[error("batch {sequence} has {gaps} gaps, limit is {max}")]
    TooManyGaps { sequence: u64, gaps: usize, max: u32 },
    #[error("batch {sequence}, gap {index}: unknown gap reason {reason}")]
    UnknownGapReason { sequence: u64, index: usize, reason: i32 },
    #[error("batch {sequence}, gap {index}: unknown container reference {container_ref}")]
    UnknownGapContainer {
        sequence: u64,
        index: usize,
        container_ref: u32,
    },
    #[error("batch {sequence}, gap {index}: timestamp out of range")]
    BadGapTimestamp { sequence: u64, index: usize },
    #[error("batch {sequence}, gap {index}: window ends at {end_unix_ns}, before its start {start_unix_ns}")]
    ReversedGap {
        sequence: u64,
        index: usize,
        start_unix_ns: i64,
        end_unix_ns: i64,
    },
    /// A gap reports events that were not sent: zero of them is no gap.
    #[error("batch {sequence}, gap {index}: 0 events dropped")]
    EmptyGap { sequence: u64, index: usize },
    /// Inventories have their own limit (the event limit), packages per
    /// inventory [`MAX_PACKAGES`].
    #[error("batch {sequence} has {inventories} inventories, limit is {max}")]
    TooManyInventories {
        sequence: u64,
        inventories: usize,
        max: u32,
    },
    #[error("batch {sequence}, inventory {index}: {reason}")]
    BadInventory {
        sequence: u64,
        index: usize,
        reason: String,
    },
    #[error("batch sequence {sequence} is not after {previous}")]
    SequenceNotIncreasing { sequence: u64, previous: u64 },
}

impl DecodeError {
    /// The batch refused, when the error concerns one batch.
    pub fn sequence(&self) -> Option<u64> {
        match self {
            DecodeError::TooManyEvents { sequence, .. }
            | DecodeError::TooManyStrings { sequence, .. }
            | DecodeError::OverBatchBudget { sequence, .. }
            | DecodeError::OverStringBudget { sequence, .. }
            | DecodeError::TimeSpan { sequence, .. }
            | DecodeError::StringIdZero { sequence }
            | DecodeError::ContainerRefZero { sequence }
            | DecodeError::UnknownString { sequence, .. }
            | DecodeError::UnknownContainerString { sequence, .. }
            | DecodeError::UnknownContainer { sequence, .. }
            | DecodeError::UnknownKind { sequence, .. }
            | DecodeError::UnknownNetworkKind { sequence, .. }
            | DecodeError::UnknownFileKind { sequence, .. }
            | DecodeError::MissingPath { sequence, .. }
            | DecodeError::BadAddress { sequence, .. }
            | DecodeError::AddressFamilyMismatch { sequence, .. }
            | DecodeError::BadPort { sequence, .. }
            | DecodeError::BadTimestamp { sequence, .. }
            | DecodeError::SampleWithoutContainer { sequence, .. }
            | DecodeError::UnknownSampleContainer { sequence, .. }
            | DecodeError::BadSampleTimestamp { sequence, .. }
            | DecodeError::ReversedInterval { sequence, .. }
            | DecodeError::ProfileLengthMismatch { sequence, .. }
            | DecodeError::TooManyGaps { sequence, .. }
            | DecodeError::UnknownGapReason { sequence, .. }
            | DecodeError::UnknownGapContainer { sequence, .. }
            | DecodeError::BadGapTimestamp { sequence, .. }
            | DecodeError::ReversedGap { sequence, .. }
            | DecodeError::EmptyGap { sequence, .. }
            | DecodeError::TooManyInventories { sequence, .. }
            | DecodeError::BadInventory { sequence, .. } => Some(*sequence),
            // Not the batch's fault alone: a duplicate or reordered sequence.
            DecodeError::SequenceNotIncreasing { .. } => None,
        }
    }
}

#[derive(Debug, Clone)]
struct ContainerEntry {
    id: Arc<str>,
    name: Option<Arc<str>>,
    image: Option<Arc<str>>,
    image_id: Option<Arc<str>>,
    workload_id: Arc<str>,
}

/// The tables of one agent stream.
#[derive(Debug)]
pub struct StreamTables {
    agent_id: Arc<str>,
    boot_id: u64,
    host: Arc<str>,
    host_workload: Arc<str>,
    limits: Limits,
    strings: HashMap<u32, Arc<str>>,
    /// Bytes of the strings in `strings`.
    string_bytes: usize,
    containers: HashMap<u32, ContainerEntry>,
    last_sequence: u64,
}

/// Budgets of one agent stream (see the aggregator's config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Events and samples of one batch.
    pub max_batch_events: u32,
    /// Entries of the string (and container) dictionary.
    pub max_strings: u32,
    /// Bytes the rows of one batch may take once built.
    pub max_batch_bytes: usize,
    /// Bytes of the strings of the dictionary.
    pub max_string_bytes: usize,
    /// Event times must be plausible against the time a batch is received
    /// (`None`: only 2000–2200, for tests of fixed data).
    pub time_window: Option<TimeWindow>,
}

/// How far event times may be from the time a batch is received, and how
/// far apart the times of one batch may be (so that one batch touches a
/// bounded number of the lake's hourly partitions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    /// Oldest event accepted, before receipt (spooled batches replayed
    /// after an outage are this old at most).
    pub max_age_ns: i64,
    /// Latest event accepted, after receipt (clock skew).
    pub max_ahead_ns: i64,
    /// Widest spread of times within one batch.
    pub max_span_ns: i64,
}

/// The times a batch may carry, and the earliest and latest it did.
struct Times {
    range: std::ops::Range<i64>,
    seen: std::cell::Cell<(i64, i64)>,
}

impl Times {
    fn new(window: Option<TimeWindow>, now_ns: i64) -> Times {
        let range = match window {
            Some(w) => {
                MIN_TIME_NS.max(now_ns.saturating_sub(w.max_age_ns))
                    ..MAX_TIME_NS.min(now_ns.saturating_add(w.max_ahead_ns).saturating_add(1))
            }
            None => MIN_TIME_NS..MAX_TIME_NS,
        };
        Times {
            range,
            seen: std::cell::Cell::new((i64::MAX, i64::MIN)),
        }
    }

    /// Whether `t` is plausible; remembered for the batch's spread.
    fn accept(&self, t: i64) -> bool {
        if !self.range.contains(&t) {
            return false;
        }
        let (lo, hi) = self.seen.get();
        self.seen.set((lo.min(t), hi.max(t)));
        true
    }

    fn span_ns(&self) -> i64 {
        let (lo, hi) = self.seen.get();
        hi.saturating_sub(lo).max(0)
    }
}

/// What the rows of one batch will take once built, charged row by row
/// (each record's `approx_bytes`) before the next row is made; for a
/// process event the referenced argv is charged before its list is
/// allocated, so no batch can make the decoder hold more than the budget.
struct Budget {
    sequence: u64,
    used: usize,
    max: usize,
}

impl Budget {
    fn check(&self, more: usize) -> Result<(), DecodeError> {
        let bytes = self.used.saturating_add(more);
        if bytes > self.max {
            return Err(DecodeError::OverBatchBudget {
                sequence: self.sequence,
                bytes,
                max: self.max,
            });
        }
        Ok(())
    }

    fn charge(&mut self, bytes: usize) -> Result<(), DecodeError> {
        self.check(bytes)?;
        self.used += bytes;
        Ok(())
    }
}

/// Rows grouped by workload id (the Kafka key), in event order.
pub type RowsByWorkload<R> = Vec<(Arc<str>, Vec<R>)>;

/// The rows of one batch, per record type.
#[derive(Debug, Default)]
pub struct BatchRows {
    pub process: RowsByWorkload<process::Row>,
    pub network: RowsByWorkload<network::Row>,
    pub file: RowsByWorkload<file::Row>,
    /// One row per syscall of each profile.
    pub syscalls: RowsByWorkload<syscalls::Row>,
    pub resources: RowsByWorkload<resources::Row>,
    /// One row per gap.
    pub gaps: RowsByWorkload<gaps::Row>,
    /// One row per container inventory.
    pub inventory: RowsByWorkload<inventory::Row>,
    /// What the rows take once built (the sum of their `approx_bytes`, as
    /// charged against `max_batch_bytes`): the sink's flush accounting.
    pub bytes: usize,
}

impl BatchRows {
    /// Rows of every type: the batch is acknowledged at once only when this
    /// is 0, otherwise after every one of them is in Kafka.
    pub fn len(&self) -> usize {
        fn count<R>(groups: &RowsByWorkload<R>) -> usize {
            groups.iter().map(|(_, rows)| rows.len()).sum()
        }
        count(&self.process)
            + count(&self.network)
            + count(&self.file)
            + count(&self.syscalls)
            + count(&self.resources)
            + count(&self.gaps)
            + count(&self.inventory)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Appends `row` to the group of `workload`, creating it in first-seen order.
fn push_grouped<R>(out: &mut RowsByWorkload<R>, slots: &mut HashMap<Arc<str>, usize>, workload: Arc<str>, row: R) {
    let slot = *slots.entry(workload.clone()).or_insert_with(|| {
        out.push((workload, Vec::new()));
        out.len() - 1
    });
    out[slot].1.push(row);
}

/// An address from the wire: 4 bytes (IPv4), 16 (IPv6), or empty (`Some(None)`);
/// `None` for any other length.
fn ip_address(bytes: &[u8]) -> Option<Option<IpAddr>> {
    if bytes.is_empty() {
        return Some(None);
    }
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(Some(IpAddr::V4(Ipv4Addr::from(v4))));
    }
    <[u8; 16]>::try_from(bytes)
        .ok()
        .map(|v6| Some(IpAddr::V6(Ipv6Addr::from(v6))))
}

impl StreamTables {
    pub fn new(hello: &v1::Hello, limits: Limits) -> StreamTables {
        StreamTables {
            agent_id: hello.agent_id.as_str().into(),
            boot_id: hello.boot_id,
            host: hello.hostname.as_str().into(),
            host_workload: Arc::from(format!("host:{}", hello.hostname)),
            limits,
            strings: HashMap::new(),
            string_bytes: 0,
            containers: HashMap::new(),
            last_sequence: 0,
        }
    }

    /// Applies the batch's definitions and resolves its events. On error the
    /// tables may hold the batch's definitions; the stream is ended anyway.
    pub fn resolve(&mut self, batch: v1::Batch) -> Result<BatchRows, DecodeError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        self.resolve_at(batch, now)
    }

    /// [`resolve`](Self::resolve) as if received at `now_ns` (Unix ns).
    pub fn resolve_at(&mut self, batch: v1::Batch, now_ns: i64) -> Result<BatchRows, DecodeError> {
        let sequence = batch.sequence;
        let times = Times::new(self.limits.time_window, now_ns);
        if sequence <= self.last_sequence {
            return Err(DecodeError::SequenceNotIncreasing {
                sequence,
                previous: self.last_sequence,
            });
        }
        // Events and samples: see the module documentation.
        let events = batch.process_events.len()
            + batch.network_events.len()
            + batch.file_events.len()
            + batch.syscall_profiles.len()
            + batch.resource_samples.len();
        let max_events = self.limits.max_batch_events;
        let max_strings = self.limits.max_strings;
        if events > max_events as usize {
            return Err(DecodeError::TooManyEvents {
                sequence,
                events,
                max: max_events,
            });
        }
        if batch.gaps.len() > max_events as usize {
            return Err(DecodeError::TooManyGaps {
                sequence,
                gaps: batch.gaps.len(),
                max: max_events,
            });
        }
        if batch.inventories.len() > max_events as usize {
            return Err(DecodeError::TooManyInventories {
                sequence,
                inventories: batch.inventories.len(),
                max: max_events,
            });
        }
        if batch.reset_strings {
            self.strings.clear();
            self.containers.clear();
            self.string_bytes = 0;
        }
        if self.strings.len() + batch.strings.len() > max_strings as usize {
            return Err(DecodeError::TooManyStrings {
                sequence,
                max: max_strings,
            });
        }
        // Bytes of the dictionary once this batch's definitions are in
        // (a redefinition replaces its old string), checked before any is.
        let mut string_bytes = self.string_bytes;
        for def in &batch.strings {
            let replaced = self.strings.get(&def.id).map_or(0, |s| s.len());
            string_bytes = string_bytes.saturating_sub(replaced).saturating_add(def.value.len());
        }
        if string_bytes > self.limits.max_string_bytes {
            return Err(DecodeError::OverStringBudget {
                sequence,
                bytes: string_bytes,
                max: self.limits.max_string_bytes,
            });
        }
        for def in batch.strings {
            if def.id == 0 {
                return Err(DecodeError::StringIdZero { sequence });
            }
            let value: Arc<str> = Arc::from(String::from_utf8_lossy(&def.value));
            // Lossy decoding may lengthen invalid UTF-8 (3 bytes per bad byte).
            let added = value.len();
            let replaced = self.strings.insert(def.id, value).map_or(0, |s| s.len());
            self.string_bytes = self.string_bytes.saturating_sub(replaced).saturating_add(added);
        }
        if self.string_bytes > self.limits.max_string_bytes {
            return Err(DecodeError::OverStringBudget {
                sequence,
                bytes: self.string_bytes,
                max: self.limits.max_string_bytes,
            });
        }
        for c in batch.containers {
            if c.r#ref == 0 {
                return Err(DecodeError::ContainerRefZero { sequence });
            }
            let lookup = |id: u32| -> Result<Option<Arc<str>>, DecodeError> {
                if id == 0 {
                    return Ok(None);
                }
                self.strings
                    .get(&id)
                    .cloned()
                    .map(Some)
                    .ok_or(DecodeError::UnknownContainerString {
                        sequence,
                        container_ref: c.r#ref,
                        id,
                    })
            };
            let id = lookup(c.container_id)?.unwrap_or_else(|| Arc::from(""));
            let entry = ContainerEntry {
                workload_id: lookup(c.workload_id)?.unwrap_or_else(|| Arc::from(format!("container:{id}"))),
                id,
                name: lookup(c.name)?,
                image: lookup(c.image)?,
                image_id: lookup(c.image_id)?,
            };
            if self.containers.len() >= max_strings as usize && !self.containers.contains_key(&c.r#ref) {
                return Err(DecodeError::TooManyStrings {
                    sequence,
                    max: max_strings,
                });
            }
            self.containers.insert(c.r#ref, entry);
        }

        let mut groups: HashMap<Arc<str>, usize> = HashMap::new();
        let mut out = BatchRows::default();
        let mut budget = Budget {
            sequence,
            used: 0,
            max: self.limits.max_batch_bytes,
        };
        let process_events = batch.process_events.len();
        let network_events = batch.network_events.len();
        let mut time = batch.base_time_unix_ns;
        for (index, e) in batch.process_events.into_iter().enumerate() {
            time = time
                .checked_add(e.time_delta_ns)
                .filter(|t| times.accept(*t))
                .ok_or(DecodeError::BadTimestamp { sequence, index })?;
            let string = |id: u32| -> Result<Option<Arc<str>>, DecodeError> {
                if id == 0 {
                    return Ok(None);
                }
                self.strings
                    .get(&id)
                    .map(|s| Some(s.clone()))
                    .ok_or(DecodeError::UnknownString { sequence, index, id })
            };
            let kind = match v1::ProcessEventKind::try_from(e.kind) {
                Ok(v1::ProcessEventKind::Exec) => process::Kind::Exec,
                Ok(v1::ProcessEventKind::Fork) => process::Kind::Fork,
                Ok(v1::ProcessEventKind::Exit) => process::Kind::Exit,
                Ok(v1::ProcessEventKind::Running) => process::Kind::Running,
                _ => {
                    return Err(DecodeError::UnknownKind {
                        sequence,
                        index,
                        kind: e.kind,
                    });
                }
            };
            let container = match e.container {
                0 => None,
                r => Some(self.containers.get(&r).ok_or(DecodeError::UnknownContainer {
                    sequence,
                    index,
                    container_ref: r,
                })?),
            };
            // Charged before the list is made: one event may reference a
            // long string many times.
            budget.check(
                e.argv
                    .iter()
                    .map(|id| self.strings.get(id).map_or(0, |s| s.len()) + 4)
                    .fold(0usize, usize::saturating_add),
            )?;
            let argv = e
                .argv
                .iter()
                .map(|id| string(*id).map(Option::unwrap_or_default))
                .collect::<Result<Vec<_>, _>>()?;
            let workload = container.map_or_else(|| self.host_workload.clone(), |c| c.workload_id.clone());
            let text = |s: &Option<Arc<str>>| s.clone();
            let row = process::Row {
                agent_id: self.agent_id.clone(),
                boot_id: self.boot_id,
                batch_seq: sequence,
                event_index: u32::try_from(index).unwrap_or(u32::MAX),
                time_unix_ns: time,
                host: self.host.clone(),
                container_id: container.map(|c| c.id.clone()),
                container_name: container.and_then(|c| text(&c.name)),
                image: container.and_then(|c| text(&c.image)),
                image_id: container.and_then(|c| text(&c.image_id)),
                workload_id: workload.clone(),
                kind,
                pid: e.pid,
                ppid: e.ppid,
                uid: e.uid,
                gid: e.gid,
                path: string(e.path)?,
                argv,
                cwd: string(e.cwd)?,
                parent_exe: string(e.parent_exe)?,
                exit_code: e.exit_code,
                count: e.count.max(1),
                exec_in: e.exec_in,
                drift: e.drift,
                stdio_socket: e.stdio_socket,
            };
            budget.charge(row.approx_bytes())?;
            push_grouped(&mut out.process, &mut groups, workload, row);
        }

        // Network events: their own time chain; indexes continue after the
        // process events.
        groups.clear();
        let mut time = batch.base_time_unix_ns;
        for (i, e) in batch.network_events.into_iter().enumerate() {
            let index = process_events + i;
            time = time
                .checked_add(e.time_delta_ns)
                .filter(|t| times.accept(*t))
                .ok_or(DecodeError::BadTimestamp { sequence, index })?;
            let kind = match v1::NetworkEventKind::try_from(e.kind) {
                Ok(v1::NetworkEventKind::Listen) => network::Kind::Listen,
                Ok(v1::NetworkEventKind::Connect) => network::Kind::Connect,
                Ok(v1::NetworkEventKind::Accept) => network::Kind::Accept,
                Ok(v1::NetworkEventKind::Close) => network::Kind::Close,
                Ok(v1::NetworkEventKind::ConnectFailed) => network::Kind::ConnectFailed,
                _ => {
                    return Err(DecodeError::UnknownNetworkKind {
                        sequence,
                        index,
                        kind: e.kind,
                    });
                }
            };
            let container = match e.container {
                0 => None,
                r => Some(self.containers.get(&r).ok_or(DecodeError::UnknownContainer {
                    sequence,
                    index,
                    container_ref: r,
                })?),
            };
            let bad_address = |side, len, expected| DecodeError::BadAddress {
                sequence,
                index,
                side,
                len,
                expected,
            };
            let local = ip_address(&e.local_addr)
                .flatten()
                .ok_or_else(|| bad_address("local", e.local_addr.len(), "4 or 16"))?;
            let remote =
                ip_address(&e.remote_addr).ok_or_else(|| bad_address("remote", e.remote_addr.len(), "0, 4 or 16"))?;
            let family = network::Family::of(local);
            if remote.is_some_and(|r| network::Family::of(r) != family) {
                return Err(DecodeError::AddressFamilyMismatch { sequence, index });
            }
            let port = |side, port: u32| {
                u16::try_from(port).map_err(|_| DecodeError::BadPort {
                    sequence,
                    index,
                    side,
                    port,
                })
            };
            let workload = container.map_or_else(|| self.host_workload.clone(), |c| c.workload_id.clone());
            let row = network::Row {
                agent_id: self.agent_id.clone(),
                boot_id: self.boot_id,
                batch_seq: sequence,
                event_index: u32::try_from(index).unwrap_or(u32::MAX),
                time_unix_ns: time,
                host: self.host.clone(),
                container_id: container.map(|c| c.id.clone()),
                container_name: container.and_then(|c| c.name.clone()),
                image: container.and_then(|c| c.image.clone()),
                image_id: container.and_then(|c| c.image_id.clone()),
                workload_id: workload.clone(),
                kind,
                pid: e.pid,
                family,
                local_addr: Arc::from(local.to_string()),
                local_port: port("local", e.local_port)?,
                remote_addr: remote.map(|r| Arc::from(r.to_string())),
                remote_port: port("remote", e.remote_port)?,
                bytes_sent: e.bytes_sent,
                bytes_received: e.bytes_received,
                count: e.count.max(1),
                pre_existing: e.pre_existing,
            };
            budget.charge(row.approx_bytes())?;
            push_grouped(&mut out.network, &mut groups, workload, row);
        }

        // File events: their own time chain; indexes continue after the
        // process and network events.
        groups.clear();
        let mut time = batch.base_time_unix_ns;
        for (i, e) in batch.file_events.into_iter().enumerate() {
            let index = process_events + network_events + i;
            time = time
                .checked_add(e.time_delta_ns)
                .filter(|t| times.accept(*t))
                .ok_or(DecodeError::BadTimestamp { sequence, index })?;
            let string = |id: u32| -> Result<Option<Arc<str>>, DecodeError> {
                if id == 0 {
                    return Ok(None);
                }
                self.strings
                    .get(&id)
                    .map(|s| Some(s.clone()))
                    .ok_or(DecodeError::UnknownString { sequence, index, id })
            };
            let kind = match v1::FileEventKind::try_from(e.kind) {
                Ok(v1::FileEventKind::Write) => file::Kind::Write,
                Ok(v1::FileEventKind::Create) => file::Kind::Create,
                _ => {
                    return Err(DecodeError::UnknownFileKind {
                        sequence,
                        index,
                        kind: e.kind,
                    });
                }
            };
            let container = match e.container {
                0 => None,
                r => Some(self.containers.get(&r).ok_or(DecodeError::UnknownContainer {
                    sequence,
                    index,
                    container_ref: r,
                })?),
            };
            // A file event is about its path: without one there is nothing to report.
            let path = string(e.path)?.ok_or(DecodeError::MissingPath { sequence, index })?;
            let workload = container.map_or_else(|| self.host_workload.clone(), |c| c.workload_id.clone());
            let row = file::Row {
                agent_id: self.agent_id.clone(),
                boot_id: self.boot_id,
                batch_seq: sequence,
                event_index: u32::try_from(index).unwrap_or(u32::MAX),
                time_unix_ns: time,
                host: self.host.clone(),
                container_id: container.map(|c| c.id.clone()),
                container_name: container.and_then(|c| c.name.clone()),
                image: container.and_then(|c| c.image.clone()),
                image_id: container.and_then(|c| c.image_id.clone()),
                workload_id: workload.clone(),
                kind,
                pid: e.pid,
                path,
                exe: string(e.exe)?,
                flags: e.flags,
                count: e.count.max(1),
            };
            budget.charge(row.approx_bytes())?;
            push_grouped(&mut out.file, &mut groups, workload, row);
        }

        // Syscall profiles: absolute interval, one row per syscall.
        groups.clear();
        for (index, p) in batch.syscall_profiles.into_iter().enumerate() {
            let sample = SampleKind::SyscallProfile;
            let c = self.sample_container(sequence, sample, index, p.container)?;
            let in_range = |t: i64| {
                times.accept(t).then_some(t).ok_or(DecodeError::BadSampleTimestamp {
                    sequence,
                    sample,
                    index,
                })
            };
            let (start, end) = (in_range(p.start_unix_ns)?, in_range(p.end_unix_ns)?);
            if end < start {
                return Err(DecodeError::ReversedInterval {
                    sequence,
                    index,
                    start_unix_ns: start,
                    end_unix_ns: end,
                });
            }
            if p.nr.len() != p.count.len() {
                return Err(DecodeError::ProfileLengthMismatch {
                    sequence,
                    index,
                    numbers: p.nr.len(),
                    counts: p.count.len(),
                });
            }
            let arch: Arc<str> = Arc::from(p.arch);
            for (nr, count) in p.nr.into_iter().zip(p.count) {
                let row = syscalls::Row {
                    agent_id: self.agent_id.clone(),
                    boot_id: self.boot_id,
                    batch_seq: sequence,
                    host: self.host.clone(),
                    container_id: c.id.clone(),
                    container_name: c.name.clone(),
                    image: c.image.clone(),
                    image_id: c.image_id.clone(),
                    workload_id: c.workload_id.clone(),
                    start_unix_ns: start,
                    end_unix_ns: end,
                    arch: arch.clone(),
                    nr,
                    name: syscalls::name(&arch, nr),
                    count,
                };
                budget.charge(row.approx_bytes())?;
                push_grouped(&mut out.syscalls, &mut groups, c.workload_id.clone(), row);
            }
        }

        // Resource samples: absolute time, one row each.
        groups.clear();
        for (index, r) in batch.resource_samples.into_iter().enumerate() {
            let sample = SampleKind::ResourceSample;
            let c = self.sample_container(sequence, sample, index, r.container)?;
            if !times.accept(r.time_unix_ns) {
                return Err(DecodeError::BadSampleTimestamp {
                    sequence,
                    sample,
                    index,
                });
            }
            let row = resources::Row {
                agent_id: self.agent_id.clone(),
                boot_id: self.boot_id,
                batch_seq: sequence,
                host: self.host.clone(),
                container_id: c.id.clone(),
                container_name: c.name.clone(),
                image: c.image.clone(),
                image_id: c.image_id.clone(),
                workload_id: c.workload_id.clone(),
                time_unix_ns: r.time_unix_ns,
                counters: resources::Counters {
                    cpu_usage_ns: r.cpu_usage_ns,
                    memory_bytes: r.memory_bytes,
                    memory_limit_bytes: r.memory_limit_bytes,
                    io_read_bytes: r.io_read_bytes,
                    io_write_bytes: r.io_write_bytes,
                    pids: r.pids,
                    pids_limit: r.pids_limit,
                    net_rx_bytes: r.net_rx_bytes,
                    net_tx_bytes: r.net_tx_bytes,
                    net_rx_packets: r.net_rx_packets,
                    net_tx_packets: r.net_tx_packets,
                },
            };
            budget.charge(row.approx_bytes())?;
            push_grouped(&mut out.resources, &mut groups, c.workload_id.clone(), row);
        }

        // Gaps: absolute window, one row each; container 0 is the whole host.
        groups.clear();
        for (index, g) in batch.gaps.into_iter().enumerate() {
            let reason = match v1::GapReason::try_from(g.reason) {
                Ok(v1::GapReason::KernelBufferFull) => gaps::Reason::KernelBufferFull,
                Ok(v1::GapReason::RateLimited) => gaps::Reason::RateLimited,
                Ok(v1::GapReason::QueueFull) => gaps::Reason::QueueFull,
                Ok(v1::GapReason::Unspecified) | Err(_) => {
                    return Err(DecodeError::UnknownGapReason {
                        sequence,
                        index,
                        reason: g.reason,
                    });
                }
            };
            let container = match g.container {
                0 => None,
                r => Some(self.containers.get(&r).ok_or(DecodeError::UnknownGapContainer {
                    sequence,
                    index,
                    container_ref: r,
                })?),
            };
            let in_range = |t: i64| {
                times
                    .accept(t)
                    .then_some(t)
                    .ok_or(DecodeError::BadGapTimestamp { sequence, index })
            };
            let (start, end) = (in_range(g.start_unix_ns)?, in_range(g.end_unix_ns)?);
            if end < start {
                return Err(DecodeError::ReversedGap {
                    sequence,
                    index,
                    start_unix_ns: start,
                    end_unix_ns: end,
                });
            }
            if g.dropped == 0 {
                return Err(DecodeError::EmptyGap { sequence, index });
            }
            let workload = container.map_or_else(|| self.host_workload.clone(), |c| c.workload_id.clone());
            let row = gaps::Row {
                agent_id: self.agent_id.clone(),
                boot_id: self.boot_id,
                batch_seq: sequence,
                host: self.host.clone(),
                container_id: container.map(|c| c.id.clone()),
                container_name: container.and_then(|c| c.name.clone()),
                image: container.and_then(|c| c.image.clone()),
                image_id: container.and_then(|c| c.image_id.clone()),
                workload_id: workload.clone(),
                start_unix_ns: start,
                end_unix_ns: end,
                reason,
                dropped: g.dropped,
            };
            budget.charge(row.approx_bytes())?;
            push_grouped(&mut out.gaps, &mut groups, workload, row);
        }

        // Inventories: one row each, strings inline and bounded.
        groups.clear();
        for (index, inv) in batch.inventories.into_iter().enumerate() {
            let row = self.inventory_row(sequence, index, inv, &times)?;
            let workload = row.workload_id.clone();
            budget.charge(row.approx_bytes())?;
            push_grouped(&mut out.inventory, &mut groups, workload, row);
        }
        if let Some(window) = self.limits.time_window
            && times.span_ns() > window.max_span_ns
        {
            return Err(DecodeError::TimeSpan {
                sequence,
                span_s: times.span_ns() / 1_000_000_000,
                max_s: window.max_span_ns / 1_000_000_000,
            });
        }
        self.last_sequence = sequence;
        out.bytes = budget.used;
        Ok(out)
    }

    fn inventory_row(
        &self,
        sequence: u64,
        index: usize,
        inv: v1::Inventory,
        times: &Times,
    ) -> Result<inventory::Row, DecodeError> {
        let bad = |reason: String| DecodeError::BadInventory {
            sequence,
            index,
            reason,
        };
        let c = match inv.container {
            0 => return Err(bad("names no container".into())),
            r => self
                .containers
                .get(&r)
                .ok_or_else(|| bad(format!("unknown container reference {r}")))?,
        };
        if !times.accept(inv.time_unix_ns) {
            return Err(bad("timestamp out of range".into()));
        }
        if inv.packages.len() > MAX_PACKAGES {
            return Err(bad(format!("{} packages, limit is {MAX_PACKAGES}", inv.packages.len())));
        }
        if inv.errors.len() > MAX_INVENTORY_ERRORS {
            return Err(bad(format!(
                "{} errors, limit is {MAX_INVENTORY_ERRORS}",
                inv.errors.len()
            )));
        }
        let text = |what: &str, s: String, required: bool| -> Result<Arc<str>, DecodeError> {
            if s.len() > MAX_INVENTORY_STRING {
                return Err(bad(format!("{what} longer than {MAX_INVENTORY_STRING} bytes")));
            }
            if required && s.is_empty() {
                return Err(bad(format!("empty {what}")));
            }
            Ok(s.into())
        };
        let opt = |what: &str, s: String| -> Result<Option<Arc<str>>, DecodeError> {
            if s.is_empty() {
                Ok(None)
            } else {
                text(what, s, true).map(Some)
            }
        };
        let packages = inv
            .packages
            .into_iter()
            .map(|p| {
                Ok(inventory::Package {
                    ecosystem: text("package ecosystem", p.ecosystem, true)?,
                    name: text("package name", p.name, true)?,
                    version: text("package version", p.version, true)?,
                    source_name: opt("source package", p.source_name)?,
                    location: text("package location", p.location, true)?,
                })
            })
            .collect::<Result<Vec<_>, DecodeError>>()?;
        let errors = inv
            .errors
            .into_iter()
            .map(|e| text("error", e, true))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(inventory::Row {
            agent_id: self.agent_id.clone(),
            boot_id: self.boot_id,
            batch_seq: sequence,
            host: self.host.clone(),
            container_id: c.id.clone(),
            container_name: c.name.clone(),
            image: c.image.clone(),
            image_id: c.image_id.clone(),
            image_digest: opt("image digest", inv.image_digest)?,
            workload_id: c.workload_id.clone(),
            time_unix_ns: inv.time_unix_ns,
            distro: opt("distro", inv.distro)?,
            packages,
            errors,
        })
    }

    /// The container a sample names: never 0 (host processes are not
    /// sampled), always defined.
    fn sample_container(
        &self,
        sequence: u64,
        sample: SampleKind,
        index: usize,
        container_ref: u32,
    ) -> Result<&ContainerEntry, DecodeError> {
        if container_ref == 0 {
            return Err(DecodeError::SampleWithoutContainer {
                sequence,
                sample,
                index,
            });
        }
        self.containers
            .get(&container_ref)
            .ok_or(DecodeError::UnknownSampleContainer {
                sequence,
                sample,
                index,
                container_ref,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> v1::Hello {
        v1::Hello {
            agent_id: "a1".into(),
            boot_id: 9,
            hostname: "h1".into(),
            ..Default::default()
        }
    }

    fn s(id: u32, v: &str) -> v1::StringDef {
        v1::StringDef {
            id,
            value: v.as_bytes().to_vec().into(),
        }
    }

    fn good_batch() -> v1::Batch {
        v1::Batch {
            sequence: 1,
            base_time_unix_ns: 1_700_000_000_000_000_000,
            reset_strings: false,
            strings: vec![
                s(1, "c0ffee"),
                s(2, "localhost/app:1"),
                s(3, "localhost/app"),
                s(4, "/bin/cat"),
                s(5, "cat"),
                s(6, "/etc/hostname"),
                s(7, "/etc/passwd"),
                s(8, "/bin/busybox"),
                s(9, "/root/.ssh/authorized_keys"),
            ],
            containers: vec![v1::ContainerDef {
                r#ref: 1,
                runtime: v1::ContainerRuntime::Podman as i32,
                container_id: 1,
                image: 2,
                workload_id: 3,
                ..Default::default()
            }],
            process_events: vec![
                v1::ProcessEvent {
                    time_delta_ns: 0,
                    kind: v1::ProcessEventKind::Exec as i32,
                    container: 1,
                    pid: 10,
                    path: 4,
                    argv: vec![5, 6],
                    count: 1,
                    drift: true,
                    stdio_socket: false,
                    ..Default::default()
                },
                v1::ProcessEvent {
                    time_delta_ns: 5,
                    kind: v1::ProcessEventKind::Exit as i32,
                    container: 0,
                    pid: 11,
                    exit_code: Some(1),
                    ..Default::default()
                },
            ],
            network_events: vec![
                v1::NetworkEvent {
                    time_delta_ns: 3,
                    kind: v1::NetworkEventKind::Close as i32,
                    container: 1,
                    pid: 10,
                    local_addr: vec![10, 0, 0, 2],
                    local_port: 43122,
                    remote_addr: vec![93, 184, 216, 34],
                    remote_port: 443,
                    bytes_sent: 3000,
                    bytes_received: 500,
                    count: 0,
                    pre_existing: true,
                },
                v1::NetworkEvent {
                    time_delta_ns: 4,
                    kind: v1::NetworkEventKind::Listen as i32,
                    container: 0,
                    pid: 12,
                    local_addr: Ipv6Addr::LOCALHOST.octets().to_vec(),
                    local_port: 8080,
                    count: 2,
                    ..Default::default()
                },
            ],
            file_events: vec![
                v1::FileEvent {
                    time_delta_ns: 2,
                    kind: v1::FileEventKind::Write as i32,
                    container: 1,
                    pid: 10,
                    path: 7,
                    exe: 8,
                    // O_WRONLY | O_TRUNC
                    flags: 0o1001,
                    count: 0,
                },
                v1::FileEvent {
                    time_delta_ns: 6,
                    kind: v1::FileEventKind::Create as i32,
                    container: 0,
                    pid: 12,
                    path: 9,
                    exe: 0,
                    // O_WRONLY | O_CREAT | O_EXCL
                    flags: 0o301,
                    count: 4,
                },
            ],
            syscall_profiles: vec![v1::SyscallProfile {
                container: 1,
                start_unix_ns: 1_700_000_000_000_000_000,
                end_unix_ns: 1_700_000_010_000_000_000,
                // read, openat, and a number past the x86_64 table.
                nr: vec![0, 257, 999],
                count: vec![12, 3, 1],
                arch: "x86_64".into(),
            }],
            resource_samples: vec![
                v1::ResourceSample {
                    container: 1,
                    time_unix_ns: 1_700_000_010_000_000_000,
                    cpu_usage_ns: 1,
                    memory_bytes: 2,
                    memory_limit_bytes: 3,
                    io_read_bytes: 4,
                    io_write_bytes: 5,
                    pids: 6,
                    pids_limit: 7,
                    net_rx_bytes: 8,
                    net_tx_bytes: 9,
                    net_rx_packets: 10,
                    net_tx_packets: 11,
                },
                v1::ResourceSample {
                    container: 1,
                    time_unix_ns: 1_700_000_020_000_000_000,
                    ..Default::default()
                },
            ],
            gaps: Vec::new(),
            inventories: Vec::new(),
        }
    }

    /// 100 events and strings, 1 MiB of rows and of dictionary.
    const SMALL: Limits = Limits {
        max_batch_events: 100,
        max_strings: 100,
        max_batch_bytes: 1 << 20,
        max_string_bytes: 1 << 20,
        time_window: None,
    };

    #[test]
    fn event_times_must_be_plausible_against_receipt_and_one_batch_spans_little() {
        const HOUR: i64 = 3_600_000_000_000;
        let limits = Limits {
            time_window: Some(TimeWindow {
                max_age_ns: 24 * HOUR,
                max_ahead_ns: HOUR / 6,
                max_span_ns: HOUR,
            }),
            ..SMALL
        };
        // good_batch's events start at 1_700_000_000 s and its samples end
        // 20 s later.
        let base: i64 = 1_700_000_000_000_000_000;
        let at = |now: i64| StreamTables::new(&hello(), limits).resolve_at(good_batch(), now);
        assert!(at(base + 24 * HOUR).is_ok(), "a day old at most");
        assert!(matches!(
            at(base + 24 * HOUR + 1).unwrap_err(),
            DecodeError::BadTimestamp { index: 0, .. }
        ));
        assert!(at(base - HOUR / 6 + 20_000_000_000).is_ok(), "10 minutes ahead at most");
        assert!(at(base - HOUR / 6 + 20_000_000_000 - 1).is_err());
        // Two events an hour and a second apart: one batch may not cover them.
        let mut wide = good_batch();
        wide.process_events[1].time_delta_ns += HOUR + 1_000_000_000;
        let e = StreamTables::new(&hello(), limits)
            .resolve_at(wide, base + 2 * HOUR)
            .unwrap_err();
        assert!(
            matches!(
                e,
                DecodeError::TimeSpan {
                    sequence: 1,
                    span_s: 3601,
                    max_s: 3600
                }
            ),
            "{e}"
        );
    }

    /// One container and `refs` process events whose argv references one
    /// string of `len` bytes `per_event` times.
    fn expanding_batch(sequence: u64, len: usize, refs: usize, per_event: usize) -> v1::Batch {
        v1::Batch {
            sequence,
            base_time_unix_ns: 1_700_000_000_000_000_000,
            strings: vec![v1::StringDef {
                id: 1,
                value: vec![b'a'; len].into(),
            }],
            process_events: (0..refs)
                .map(|_| v1::ProcessEvent {
                    kind: v1::ProcessEventKind::Exec as i32,
                    argv: vec![1; per_event],
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_batch_one_byte_over_its_expanded_budget_is_refused_and_the_stream_goes_on() {
        // Find what a batch of 10 references takes, then set the budget
        // one byte under it.
        let mut probe = StreamTables::new(&hello(), SMALL);
        let rows = probe.resolve(expanding_batch(1, 1000, 10, 1)).unwrap();
        let exact: usize = rows.process.iter().flat_map(|(_, r)| r).map(|r| r.approx_bytes()).sum();
        let limits = Limits {
            max_batch_bytes: exact,
            ..SMALL
        };
        assert!(
            StreamTables::new(&hello(), limits)
                .resolve(expanding_batch(1, 1000, 10, 1))
                .is_ok()
        );
        let mut t = StreamTables::new(
            &hello(),
            Limits {
                max_batch_bytes: exact - 1,
                ..SMALL
            },
        );
        let e = t.resolve(expanding_batch(1, 1000, 10, 1)).unwrap_err();
        assert!(
            matches!(e, DecodeError::OverBatchBudget { sequence: 1, max, .. } if max == exact - 1),
            "{e}"
        );
        assert!(e.to_string().contains("max_batch_bytes"), "{e}");
        // The next, smaller batch of the same stream is served.
        let ok = t.resolve(expanding_batch(2, 10, 10, 1)).unwrap();
        assert_eq!(ok.len(), 10);
    }

    #[test]
    fn one_event_referencing_a_long_string_many_times_is_refused_before_its_argv_is_built() {
        // 1 KiB referenced a million times: ~1 GiB once built, ~1 MiB on the wire.
        let mut t = StreamTables::new(&hello(), SMALL);
        let e = t.resolve(expanding_batch(1, 1024, 1, 1_000_000)).unwrap_err();
        assert!(matches!(e, DecodeError::OverBatchBudget { .. }), "{e}");
    }

    #[test]
    fn the_dictionary_is_bounded_in_bytes_and_a_reset_frees_it() {
        let limits = Limits {
            max_string_bytes: 3000,
            ..SMALL
        };
        let mut t = StreamTables::new(&hello(), limits);
        let def = |id: u32, len: usize| v1::StringDef {
            id,
            value: vec![b'x'; len].into(),
        };
        let batch = |sequence: u64, reset: bool, strings: Vec<v1::StringDef>| v1::Batch {
            sequence,
            reset_strings: reset,
            strings,
            ..Default::default()
        };
        t.resolve(batch(1, false, vec![def(1, 1000), def(2, 1000)])).unwrap();
        // Redefining id 1 replaces its bytes: exactly at the budget.
        t.resolve(batch(2, false, vec![def(1, 1000), def(3, 1000)])).unwrap();
        let e = t.resolve(batch(3, false, vec![def(4, 1)])).unwrap_err();
        assert_eq!(
            e,
            DecodeError::OverStringBudget {
                sequence: 3,
                bytes: 3001,
                max: 3000
            }
        );
        t.resolve(batch(4, true, vec![def(1, 3000)])).unwrap();
    }

    #[test]
    fn resolves_references_deltas_and_groups_by_workload() {
        let mut t = StreamTables::new(&hello(), SMALL);
        let out = t.resolve(good_batch()).unwrap();
        assert_eq!(out.len(), 6 + 3 + 2, "events, one row per syscall, one per sample");
        let groups = &out.process;
        assert_eq!(groups.len(), 2);
        let (w, rows) = &groups[0];
        assert_eq!(&**w, "localhost/app");
        let r = &rows[0];
        assert_eq!(r.container_id.as_deref(), Some("c0ffee"));
        assert_eq!(r.image.as_deref(), Some("localhost/app:1"));
        assert_eq!(
            r.argv.iter().map(|a| &**a).collect::<Vec<_>>(),
            vec!["cat", "/etc/hostname"]
        );
        assert_eq!((&*r.agent_id, r.boot_id, r.batch_seq, r.event_index), ("a1", 9, 1, 0));
        assert!(r.drift, "drift maps through");
        let (w, rows) = &groups[1];
        assert_eq!(&**w, "host:h1");
        assert_eq!(rows[0].time_unix_ns, 1_700_000_000_000_000_005);
        assert_eq!(rows[0].event_index, 1);
        assert_eq!(rows[0].count, 1, "0 on the wire reads as 1");
        assert!(!rows[0].drift);

        // Network events: own time chain, indexes after the process events,
        // addresses as text, grouped by workload like process rows.
        let groups = &out.network;
        assert_eq!(groups.len(), 2);
        let (w, rows) = &groups[0];
        assert_eq!(&**w, "localhost/app");
        assert_eq!(
            rows[0],
            network::Row {
                agent_id: "a1".into(),
                boot_id: 9,
                batch_seq: 1,
                event_index: 2,
                time_unix_ns: 1_700_000_000_000_000_003,
                host: "h1".into(),
                container_id: Some("c0ffee".into()),
                container_name: None,
                image: Some("localhost/app:1".into()),
                image_id: None,
                workload_id: "localhost/app".into(),
                kind: network::Kind::Close,
                pid: 10,
                family: network::Family::Ipv4,
                local_addr: "10.0.0.2".into(),
                local_port: 43122,
                remote_addr: Some("93.184.216.34".into()),
                remote_port: 443,
                bytes_sent: 3000,
                bytes_received: 500,
                count: 1,
                pre_existing: true,
            }
        );
        let (w, rows) = &groups[1];
        assert_eq!(&**w, "host:h1");
        let r = &rows[0];
        assert_eq!((r.event_index, r.time_unix_ns), (3, 1_700_000_000_000_000_007));
        assert_eq!(
            (r.kind, r.family, &*r.local_addr, r.local_port),
            (network::Kind::Listen, network::Family::Ipv6, "::1", 8080)
        );
        assert_eq!(
            (
                r.remote_addr.as_deref(),
                r.remote_port,
                r.container_id.as_deref(),
                r.count
            ),
            (None, 0, None, 2)
        );

        // File events: own time chain, indexes after the process and network
        // events, path and executable resolved, grouped by workload.
        let groups = &out.file;
        assert_eq!(groups.len(), 2);
        let (w, rows) = &groups[0];
        assert_eq!(&**w, "localhost/app");
        assert_eq!(
            rows[..],
            [file::Row {
                agent_id: "a1".into(),
                boot_id: 9,
                batch_seq: 1,
                event_index: 4,
                time_unix_ns: 1_700_000_000_000_000_002,
                host: "h1".into(),
                container_id: Some("c0ffee".into()),
                container_name: None,
                image: Some("localhost/app:1".into()),
                image_id: None,
                workload_id: "localhost/app".into(),
                kind: file::Kind::Write,
                pid: 10,
                path: "/etc/passwd".into(),
                exe: Some("/bin/busybox".into()),
                flags: 0o1001,
                count: 1,
            }]
        );
        let (w, rows) = &groups[1];
        assert_eq!(&**w, "host:h1");
        let r = &rows[0];
        assert_eq!((r.event_index, r.time_unix_ns), (5, 1_700_000_000_000_000_008));
        assert_eq!(
            (
                r.kind,
                &*r.path,
                r.exe.as_deref(),
                r.flags,
                r.count,
                r.container_id.as_deref()
            ),
            (file::Kind::Create, "/root/.ssh/authorized_keys", None, 0o301, 4, None)
        );

        // Syscall profile: one row per syscall, all in the profile's
        // container and interval, named from the x86_64 table when known.
        let syscall = |nr: u32, name: Option<&str>, count: u64| syscalls::Row {
            agent_id: "a1".into(),
            boot_id: 9,
            batch_seq: 1,
            host: "h1".into(),
            container_id: "c0ffee".into(),
            container_name: None,
            image: Some("localhost/app:1".into()),
            image_id: None,
            workload_id: "localhost/app".into(),
            start_unix_ns: 1_700_000_000_000_000_000,
            end_unix_ns: 1_700_000_010_000_000_000,
            arch: "x86_64".into(),
            nr,
            name: name.map(Into::into),
            count,
        };
        assert_eq!(out.syscalls.len(), 1);
        let (w, rows) = &out.syscalls[0];
        assert_eq!(&**w, "localhost/app");
        assert_eq!(
            rows[..],
            [
                syscall(0, Some("read"), 12),
                syscall(257, Some("openat"), 3),
                syscall(999, None, 1)
            ]
        );

        // Resource samples: one row each, absolute times, every counter.
        assert_eq!(out.resources.len(), 1);
        let (w, rows) = &out.resources[0];
        assert_eq!(&**w, "localhost/app");
        let sample = |time_unix_ns: i64, counters: resources::Counters| resources::Row {
            agent_id: "a1".into(),
            boot_id: 9,
            batch_seq: 1,
            host: "h1".into(),
            container_id: "c0ffee".into(),
            container_name: None,
            image: Some("localhost/app:1".into()),
            image_id: None,
            workload_id: "localhost/app".into(),
            time_unix_ns,
            counters,
        };
        assert_eq!(
            rows[..],
            [
                sample(
                    1_700_000_010_000_000_000,
                    resources::Counters::from_values([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11])
                ),
                sample(1_700_000_020_000_000_000, resources::Counters::default()),
            ]
        );

        // Definitions persist for the stream: a later batch may only reference.
        let mut next = good_batch();
        next.sequence = 2;
        next.strings.clear();
        next.containers.clear();
        assert!(t.resolve(next).is_ok());
    }

    #[test]
    fn inconsistent_batches_are_refused_with_a_reason() {
        type Mutation = Box<dyn Fn(&mut v1::Batch)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (
                Box::new(|b| b.process_events[0].argv.push(99)),
                "unknown string reference 99",
            ),
            (
                Box::new(|b| b.process_events[0].container = 7),
                "unknown container reference 7",
            ),
            (
                Box::new(|b| b.process_events[0].kind = 42),
                "unknown process event kind 42",
            ),
            (
                Box::new(|b| b.process_events[1].time_delta_ns = i64::MAX),
                "timestamp out of range",
            ),
            (Box::new(|b| b.base_time_unix_ns = 5), "timestamp out of range"),
            (Box::new(|b| b.strings[0].id = 0), "string id 0 is reserved"),
            (Box::new(|b| b.containers[0].image = 77), "unknown string reference 77"),
            (Box::new(|b| b.sequence = 0), "is not after 0"),
            (
                Box::new(|b| b.strings.extend((10..200).map(|i| s(i, "x")))),
                "exceed 100 entries",
            ),
            (
                Box::new(|b| b.process_events.extend((0..200).map(|_| v1::ProcessEvent::default()))),
                "limit is 100",
            ),
            (
                Box::new(|b| b.network_events[1].container = 8),
                "event 3: unknown container reference 8",
            ),
            (
                Box::new(|b| b.network_events[0].kind = 42),
                "event 2: unknown network event kind 42",
            ),
            (
                Box::new(|b| b.network_events[0].kind = v1::NetworkEventKind::Unspecified as i32),
                "unknown network event kind 0",
            ),
            (
                Box::new(|b| b.network_events[1].time_delta_ns = i64::MAX),
                "event 3: timestamp out of range",
            ),
            (
                Box::new(|b| b.network_events[0].time_delta_ns = -1_000_000_000_000_000_000),
                "event 2: timestamp out of range",
            ),
            (
                Box::new(|b| b.network_events[0].local_addr = vec![10, 0, 0]),
                "local address of 3 bytes, expected 4 or 16",
            ),
            (
                Box::new(|b| b.network_events[0].local_addr = Vec::new()),
                "local address of 0 bytes, expected 4 or 16",
            ),
            (
                Box::new(|b| b.network_events[0].remote_addr = vec![0; 5]),
                "remote address of 5 bytes, expected 0, 4 or 16",
            ),
            (
                Box::new(|b| b.network_events[0].remote_addr = vec![0; 16]),
                "event 2: local and remote addresses of different families",
            ),
            (
                Box::new(|b| b.network_events[1].local_port = 65_536),
                "local port 65536 out of range",
            ),
            (
                Box::new(|b| b.network_events[0].remote_port = u32::MAX),
                "remote port 4294967295 out of range",
            ),
            (
                Box::new(|b| b.file_events[0].kind = 42),
                "event 4: unknown file event kind 42",
            ),
            (
                Box::new(|b| b.file_events[1].kind = v1::FileEventKind::Unspecified as i32),
                "event 5: unknown file event kind 0",
            ),
            (
                Box::new(|b| b.file_events[1].container = 9),
                "event 5: unknown container reference 9",
            ),
            (
                Box::new(|b| b.file_events[0].path = 99),
                "event 4: unknown string reference 99",
            ),
            (
                Box::new(|b| b.file_events[0].exe = 98),
                "event 4: unknown string reference 98",
            ),
            (
                Box::new(|b| b.file_events[1].path = 0),
                "event 5: file event without a path",
            ),
            (
                Box::new(|b| b.file_events[1].time_delta_ns = i64::MAX),
                "event 5: timestamp out of range",
            ),
            (
                Box::new(|b| b.file_events[0].time_delta_ns = -1_000_000_000_000_000_000),
                "event 4: timestamp out of range",
            ),
            // Every list counts against the limit: 2 process + 94 network + 2 file
            // events + 1 syscall profile + 2 resource samples,
            (
                Box::new(|b| b.network_events.extend((0..92).map(|_| v1::NetworkEvent::default()))),
                "101 events, limit is 100",
            ),
            // 2 process + 2 network + 94 file events + 3 samples,
            (
                Box::new(|b| b.file_events.extend((0..92).map(|_| v1::FileEvent::default()))),
                "101 events, limit is 100",
            ),
            // 6 events + 93 syscall profiles (one each, whatever their
            // syscalls) + 2 resource samples,
            (
                Box::new(|b| {
                    let p = b.syscall_profiles[0].clone();
                    b.syscall_profiles.extend(std::iter::repeat_n(p, 92));
                }),
                "101 events, limit is 100",
            ),
            // and 6 events + 1 profile + 94 resource samples.
            (
                Box::new(|b| {
                    let r = b.resource_samples[0];
                    b.resource_samples.extend(std::iter::repeat_n(r, 92));
                }),
                "101 events, limit is 100",
            ),
            // Samples name a defined container; host processes are not sampled.
            (
                Box::new(|b| b.syscall_profiles[0].container = 0),
                "batch 1, syscall profile 0: container 0, a sample must name a container",
            ),
            (
                Box::new(|b| b.resource_samples[1].container = 0),
                "batch 1, resource sample 1: container 0, a sample must name a container",
            ),
            (
                Box::new(|b| b.syscall_profiles[0].container = 5),
                "batch 1, syscall profile 0: unknown container reference 5",
            ),
            (
                Box::new(|b| b.resource_samples[1].container = 6),
                "batch 1, resource sample 1: unknown container reference 6",
            ),
            (
                Box::new(|b| b.syscall_profiles[0].count.truncate(2)),
                "batch 1, syscall profile 0: 3 syscall numbers but 2 counts",
            ),
            (
                Box::new(|b| b.syscall_profiles[0].nr.push(1)),
                "batch 1, syscall profile 0: 4 syscall numbers but 3 counts",
            ),
            (
                Box::new(|b| b.syscall_profiles[0].end_unix_ns = 1_699_999_999_999_999_999),
                "batch 1, syscall profile 0: interval ends at 1699999999999999999, before its start 1700000000000000000",
            ),
            (
                Box::new(|b| b.syscall_profiles[0].start_unix_ns = i64::MIN),
                "batch 1, syscall profile 0: timestamp out of range",
            ),
            (
                Box::new(|b| b.syscall_profiles[0].end_unix_ns = i64::MAX),
                "batch 1, syscall profile 0: timestamp out of range",
            ),
            (
                Box::new(|b| b.resource_samples[0].time_unix_ns = 0),
                "batch 1, resource sample 0: timestamp out of range",
            ),
            (
                Box::new(|b| b.resource_samples[1].time_unix_ns = i64::MAX),
                "batch 1, resource sample 1: timestamp out of range",
            ),
        ];
        for (mutate, want) in cases {
            let mut t = StreamTables::new(&hello(), SMALL);
            let mut b = good_batch();
            mutate(&mut b);
            let err = t.resolve(b).unwrap_err().to_string();
            assert!(err.contains(want), "{err} should contain {want}");
        }
    }

    #[test]
    fn every_event_list_counts_against_the_limit() {
        let mut at_limit = good_batch();
        let close = at_limit.network_events[0].clone();
        at_limit.network_events.extend(std::iter::repeat_n(close, 44));
        let write = at_limit.file_events[0];
        at_limit.file_events.extend(std::iter::repeat_n(write, 45));
        let profile = at_limit.syscall_profiles[0].clone();
        at_limit.syscall_profiles.push(profile);
        let sample = at_limit.resource_samples[0];
        at_limit.resource_samples.push(sample);
        assert_eq!(
            (
                at_limit.process_events.len(),
                at_limit.network_events.len(),
                at_limit.file_events.len(),
                at_limit.syscall_profiles.len(),
                at_limit.resource_samples.len()
            ),
            (2, 46, 47, 2, 3)
        );
        let out = StreamTables::new(&hello(), SMALL).resolve(at_limit).unwrap();
        // A profile counts once against the limit but gives a row per syscall.
        assert_eq!(out.len(), 2 + 46 + 47 + 2 * 3 + 3);
        let range = |indexes: Vec<u32>| (indexes.iter().min().copied(), indexes.iter().max().copied());
        let network: Vec<u32> = out
            .network
            .iter()
            .flat_map(|(_, rows)| rows)
            .map(|r| r.event_index)
            .collect();
        let file: Vec<u32> = out
            .file
            .iter()
            .flat_map(|(_, rows)| rows)
            .map(|r| r.event_index)
            .collect();
        assert_eq!(range(network), (Some(2), Some(47)));
        assert_eq!(range(file), (Some(48), Some(94)));
    }

    #[test]
    fn a_batch_of_samples_only_has_rows_to_deliver() {
        // The service acknowledges a batch at once only when it has no rows:
        // samples are rows, so a batch of samples waits for Kafka.
        let mut t = StreamTables::new(&hello(), SMALL);
        let mut b = good_batch();
        b.process_events.clear();
        b.network_events.clear();
        b.file_events.clear();
        let out = t.resolve(b).unwrap();
        assert_eq!((out.syscalls.len(), out.resources.len(), out.len()), (1, 1, 5));

        // A profile without syscalls (an idle container) has nothing to write.
        let mut idle = good_batch();
        idle.sequence = 2;
        idle.process_events.clear();
        idle.network_events.clear();
        idle.file_events.clear();
        idle.resource_samples.clear();
        idle.syscall_profiles[0].nr.clear();
        idle.syscall_profiles[0].count.clear();
        assert!(t.resolve(idle).unwrap().is_empty());
    }

    /// `good_batch` with a rate-limit gap of container 1 and a queue-full gap
    /// of the host.
    fn gap_batch() -> v1::Batch {
        let t = 1_700_000_001_000_000_000;
        v1::Batch {
            gaps: vec![
                v1::Gap {
                    container: 1,
                    start_unix_ns: t,
                    end_unix_ns: t + 1_000_000_000,
                    dropped: 1234,
                    reason: v1::GapReason::RateLimited as i32,
                },
                v1::Gap {
                    container: 0,
                    start_unix_ns: t,
                    end_unix_ns: t,
                    dropped: u64::MAX,
                    reason: v1::GapReason::QueueFull as i32,
                },
            ],
            ..good_batch()
        }
    }

    #[test]
    fn gaps_become_rows_host_gaps_under_the_host_workload() {
        let out = StreamTables::new(&hello(), SMALL).resolve(gap_batch()).unwrap();
        let gap = |container: bool, reason, end_unix_ns, dropped| gaps::Row {
            agent_id: "a1".into(),
            boot_id: 9,
            batch_seq: 1,
            host: "h1".into(),
            container_id: container.then(|| "c0ffee".into()),
            container_name: None,
            image: container.then(|| "localhost/app:1".into()),
            image_id: None,
            workload_id: if container { "localhost/app" } else { "host:h1" }.into(),
            start_unix_ns: 1_700_000_001_000_000_000,
            end_unix_ns,
            reason,
            dropped,
        };
        let groups: Vec<_> = out.gaps.iter().map(|(w, rows)| (&**w, rows.clone())).collect();
        assert_eq!(
            groups,
            [
                (
                    "localhost/app",
                    vec![gap(true, gaps::Reason::RateLimited, 1_700_000_002_000_000_000, 1234)]
                ),
                (
                    "host:h1",
                    vec![gap(false, gaps::Reason::QueueFull, 1_700_000_001_000_000_000, u64::MAX)]
                ),
            ]
        );
        // Gaps are rows to deliver (the batch waits for Kafka) but no events.
        let plain = StreamTables::new(&hello(), SMALL).resolve(good_batch()).unwrap();
        assert_eq!(out.len(), plain.len() + 2);

        let mut only_gaps = v1::Batch {
            sequence: 2,
            base_time_unix_ns: 1_700_000_000_000_000_000,
            ..gap_batch()
        };
        only_gaps.strings.clear();
        only_gaps.containers.clear();
        only_gaps.process_events.clear();
        only_gaps.network_events.clear();
        only_gaps.file_events.clear();
        only_gaps.syscall_profiles.clear();
        only_gaps.resource_samples.clear();
        only_gaps.gaps[1].reason = v1::GapReason::KernelBufferFull as i32;
        let mut t = StreamTables::new(&hello(), SMALL);
        t.resolve(good_batch()).unwrap();
        let out = t.resolve(only_gaps).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out.gaps[1].1[0].reason, gaps::Reason::KernelBufferFull);
    }

    #[test]
    fn gaps_do_not_count_as_events_but_have_the_same_limit() {
        // 100 events and samples (the limit) plus 100 gaps: accepted.
        let mut b = gap_batch();
        let close = b.network_events[0].clone();
        b.network_events.extend(std::iter::repeat_n(close, 91));
        let gap = b.gaps[0];
        b.gaps.extend(std::iter::repeat_n(gap, 98));
        assert_eq!(b.gaps.len(), 100);
        let mut t = StreamTables::new(&hello(), SMALL);
        assert_eq!(t.resolve(b.clone()).unwrap().gaps[0].1.len(), 99);
        // One gap more: refused as too large, whatever the events.
        b.sequence = 2;
        b.gaps.push(gap);
        let err = t.resolve(b).unwrap_err();
        assert_eq!(
            err,
            DecodeError::TooManyGaps {
                sequence: 2,
                gaps: 101,
                max: 100
            }
        );
        assert_eq!(err.to_string(), "batch 2 has 101 gaps, limit is 100");
    }

    #[test]
    fn bad_gaps_refuse_their_batch_with_a_reason() {
        type Mutation = Box<dyn Fn(&mut v1::Gap)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (
                Box::new(|g| g.reason = v1::GapReason::Unspecified as i32),
                "batch 1, gap 1: unknown gap reason 0",
            ),
            (Box::new(|g| g.reason = 42), "batch 1, gap 1: unknown gap reason 42"),
            (
                Box::new(|g| g.container = 7),
                "batch 1, gap 1: unknown container reference 7",
            ),
            (
                Box::new(|g| g.end_unix_ns = g.start_unix_ns - 1),
                "batch 1, gap 1: window ends at 1700000000999999999, before its start 1700000001000000000",
            ),
            (
                Box::new(|g| g.start_unix_ns = 0),
                "batch 1, gap 1: timestamp out of range",
            ),
            (
                Box::new(|g| g.end_unix_ns = i64::MAX),
                "batch 1, gap 1: timestamp out of range",
            ),
            (Box::new(|g| g.dropped = 0), "batch 1, gap 1: 0 events dropped"),
        ];
        for (mutate, want) in cases {
            let mut b = gap_batch();
            mutate(&mut b.gaps[1]);
            let err = StreamTables::new(&hello(), SMALL).resolve(b).unwrap_err();
            assert_eq!(err.sequence(), Some(1), "{err}");
            assert_eq!(err.to_string(), want);
        }
    }

    #[test]
    fn reset_forgets_definitions() {
        let mut t = StreamTables::new(&hello(), SMALL);
        t.resolve(good_batch()).unwrap();
        let mut b = good_batch();
        b.sequence = 2;
        b.reset_strings = true;
        b.strings.clear();
        assert!(matches!(t.resolve(b), Err(DecodeError::UnknownContainerString { .. })));
    }

    fn inventory(container: u32) -> v1::Inventory {
        v1::Inventory {
            container,
            time_unix_ns: 1_700_000_000_500_000_000,
            image_digest: "sha256:9f86".into(),
            distro: "Debian:12".into(),
            packages: vec![v1::Package {
                ecosystem: "Debian:12".into(),
                name: "libssl3".into(),
                version: "3.0.11-1~deb12u1".into(),
                source_name: "openssl".into(),
                location: "/var/lib/dpkg/status".into(),
            }],
            errors: vec!["/lib/apk/db/installed: not found".into()],
        }
    }

    #[test]
    fn inventories_become_rows_of_their_container() {
        let mut b = good_batch();
        b.inventories.push(inventory(1));
        let out = StreamTables::new(&hello(), SMALL).resolve(b).unwrap();
        assert_eq!(out.inventory.len(), 1);
        let (workload, rows) = &out.inventory[0];
        assert_eq!(&**workload, "localhost/app");
        let row = &rows[0];
        assert_eq!(&*row.container_id, "c0ffee");
        assert_eq!(row.image.as_deref(), Some("localhost/app:1"));
        assert_eq!(row.image_digest.as_deref(), Some("sha256:9f86"));
        assert_eq!(row.distro.as_deref(), Some("Debian:12"));
        assert_eq!(row.packages.len(), 1);
        assert_eq!(row.packages[0].source_name.as_deref(), Some("openssl"));
        assert_eq!(row.errors.len(), 1);
        assert_eq!(row.batch_seq, 1);
    }

    #[test]
    fn bad_inventories_refuse_their_batch_with_the_reason() {
        let refused = |inv: v1::Inventory| {
            let mut b = good_batch();
            b.inventories.push(inv);
            let e = StreamTables::new(&hello(), SMALL).resolve(b).unwrap_err();
            assert_eq!(e.sequence(), Some(1));
            e.to_string()
        };
        assert_eq!(refused(inventory(0)), "batch 1, inventory 0: names no container");
        assert_eq!(
            refused(inventory(7)),
            "batch 1, inventory 0: unknown container reference 7"
        );
        let mut empty_name = inventory(1);
        empty_name.packages[0].name.clear();
        assert_eq!(refused(empty_name), "batch 1, inventory 0: empty package name");
        let mut long = inventory(1);
        long.packages[0].version = "1".repeat(MAX_INVENTORY_STRING + 1);
        assert!(refused(long).contains("package version longer than 4096 bytes"));
        let mut many = inventory(1);
        many.packages = vec![many.packages[0].clone(); MAX_PACKAGES + 1];
        assert!(refused(many).contains("100001 packages, limit is 100000"));
        let mut old = inventory(1);
        old.time_unix_ns = 5;
        assert!(refused(old).contains("timestamp out of range"));
        let mut b = good_batch();
        b.inventories = vec![inventory(1); 101];
        let e = StreamTables::new(&hello(), SMALL).resolve(b).unwrap_err();
        assert!(
            matches!(e, DecodeError::TooManyInventories { inventories: 101, .. }),
            "{e}"
        );
    }
}
