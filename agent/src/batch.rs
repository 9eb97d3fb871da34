//! Batching: attributed records accumulate into [`PendingBatch`]es, sealed
//! by count, age or the bytes their rows will take in the aggregator
//! ([`glasshouse_proto::limits::AGENT_BATCH_BYTES`]); identical events and
//! writes **collapse** into one with a count.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glasshouse_proto::process::Kind;

use crate::record::{
    Container, Event, FileEvent, Gap, InventoryRecord, NetworkEvent, PendingBatch, ResourceSample, SyscallSample,
};

/// Maps on the per-event path: a fast, per-instance seeded hash (foldhash).
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Identical events collapse into one with a count: same container (the
/// `Arc`'s address, unique while the batch holds it), kind, flags, parent,
/// ids, executable, arguments, directory and exit code. Forks never do: each
/// creates the pid later events refer to.
fn collapses(e: &Event) -> bool {
    e.kind != Kind::Fork
}

/// The hash of an event's collapse fields (no copies of them).
fn collapse_hash(state: &foldhash::fast::RandomState, e: &Event) -> u64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut h = state.build_hasher();
    e.container.as_ref().map(|c| Arc::as_ptr(c) as usize).hash(&mut h);
    (e.kind as u8, e.exec_in, e.drift, e.stdio_socket).hash(&mut h);
    (e.ppid, e.uid, e.gid, e.exit_code).hash(&mut h);
    (&e.path, &e.argv, &e.cwd).hash(&mut h);
    h.finish()
}

/// Whether two events have the same collapse fields.
fn same_collapse(a: &Event, b: &Event) -> bool {
    a.container.as_ref().map(Arc::as_ptr) == b.container.as_ref().map(Arc::as_ptr)
        && (a.kind, a.exec_in, a.drift, a.stdio_socket) == (b.kind, b.exec_in, b.drift, b.stdio_socket)
        && (a.ppid, a.uid, a.gid, a.exit_code) == (b.ppid, b.uid, b.gid, b.exit_code)
        && (&a.path, &a.argv, &a.cwd) == (&b.path, &b.argv, &b.cwd)
}

/// (container, path, exe, flags, created): writes that collapse into one.
type FileKey = (Option<String>, Bytes, Option<Bytes>, u32, bool);

/// A periodic per-container sample.
#[derive(Debug)]
pub enum Sample {
    Syscalls(SyscallSample),
    Resources(ResourceSample),
    Gap(Gap),
    Inventory(InventoryRecord),
}

/// Accumulates events into [`PendingBatch`]es.
#[derive(Debug)]
pub struct Batcher {
    max_events: usize,
    max_age: Duration,
    next_sequence: u64,
    /// The batch being filled (its `sequence` is set when it is taken).
    open: PendingBatch,
    /// Identical writes → position in `files`.
    file_index: FastMap<FileKey, usize>,
    /// Collapse hash → position in `events` (checked field by field on a
    /// hit: a hash collision only means no collapse).
    index: FastMap<u64, usize>,
    collapse_state: foldhash::fast::RandomState,
    opened: Option<Instant>,
    /// What the open batch's rows will take in the aggregator (see
    /// [`glasshouse_proto::limits::AGENT_BATCH_BYTES`]).
    bytes: usize,
}

/// Bytes the aggregator writes on every row of a container (or of the host).
fn attribution_bytes(c: Option<&Arc<Container>>) -> usize {
    let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    c.map_or(128, |c| {
        128 + c.key.id.len() + c.workload_id.len() + opt(&c.meta.name) + opt(&c.meta.image) + opt(&c.meta.image_id)
    })
}

/// Bytes one event's row takes in the aggregator: its strings, each
/// argument with its list offset, and the container's attribution.
pub(crate) fn event_bytes(e: &Event) -> usize {
    let opt = |s: &Option<Bytes>| s.as_ref().map_or(0, Bytes::len);
    attribution_bytes(e.container.as_ref())
        + opt(&e.path)
        + opt(&e.cwd)
        + opt(&e.parent_exe)
        + e.argv.iter().map(|a| a.len() + 4).sum::<usize>()
}

/// Bytes a sample's rows take in the aggregator (a syscall profile is one
/// row per syscall, an inventory one row with every package inline).
fn sample_bytes(sample: &Sample) -> usize {
    match sample {
        Sample::Syscalls(s) => s.raw.counts.len().max(1) * (attribution_bytes(Some(&s.container)) + 64),
        Sample::Resources(r) => attribution_bytes(Some(&r.container)),
        Sample::Gap(g) => attribution_bytes(g.container.as_ref()),
        Sample::Inventory(i) => {
            let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
            attribution_bytes(Some(&i.container))
                + i.inventory
                    .packages
                    .iter()
                    .map(|p| {
                        32 + p.ecosystem.len() + p.name.len() + p.version.len() + opt(&p.source_name) + p.location.len()
                    })
                    .sum::<usize>()
                + i.inventory.errors.iter().map(|e| e.len() + 4).sum::<usize>()
        }
    }
}

impl Batcher {
    pub fn new(max_events: usize, max_age: Duration) -> Batcher {
        Batcher {
            max_events,
            max_age,
            next_sequence: 1,
            open: PendingBatch::default(),
            file_index: FastMap::default(),
            index: FastMap::default(),
            collapse_state: foldhash::fast::RandomState::default(),
            opened: None,
            bytes: 0,
        }
    }

    /// Adds an event; returns a batch when this one filled it.
    pub fn push(&mut self, event: Event) -> Option<PendingBatch> {
        if collapses(&event) {
            let hash = collapse_hash(&self.collapse_state, &event);
            match self.index.get(&hash) {
                Some(&i) if same_collapse(&self.open.events[i], &event) => {
                    let e = &mut self.open.events[i];
                    e.count = e.count.saturating_add(event.count);
                    return None;
                }
                _ => {
                    self.index.insert(hash, self.open.events.len());
                }
            }
        }
        self.opened.get_or_insert_with(Instant::now);
        self.bytes += event_bytes(&event);
        self.open.events.push(event);
        self.full().then(|| self.take())
    }

    /// Adds a network event (never collapsed: each socket's events are
    /// distinct); returns a batch when this one filled it.
    pub fn push_network(&mut self, event: NetworkEvent) -> Option<PendingBatch> {
        self.opened.get_or_insert_with(Instant::now);
        self.bytes += attribution_bytes(event.container.as_ref()) + 64;
        self.open.network.push(event);
        self.full().then(|| self.take())
    }

    /// Adds a file event; identical writes in the batch collapse with a count.
    pub fn push_file(&mut self, event: FileEvent) -> Option<PendingBatch> {
        let key = (
            event.container.as_ref().map(|c| c.key.id.clone()),
            event.raw.path.clone(),
            event.raw.exe.clone(),
            event.raw.flags,
            event.raw.created,
        );
        if let Some(i) = self.file_index.get(&key) {
            let e = &mut self.open.files[*i];
            e.count = e.count.saturating_add(event.count);
            return None;
        }
        self.file_index.insert(key, self.open.files.len());
        self.opened.get_or_insert_with(Instant::now);
        self.bytes += attribution_bytes(event.container.as_ref())
            + event.raw.path.len()
            + event.raw.exe.as_ref().map_or(0, Bytes::len);
        self.open.files.push(event);
        self.full().then(|| self.take())
    }

    /// Adds a syscall or resource sample; returns a batch when this one filled it.
    pub fn push_sample(&mut self, sample: Sample) -> Option<PendingBatch> {
        self.opened.get_or_insert_with(Instant::now);
        self.bytes += sample_bytes(&sample);
        match sample {
            Sample::Syscalls(s) => self.open.syscalls.push(s),
            Sample::Resources(r) => self.open.resources.push(r),
            Sample::Gap(g) => self.open.gaps.push(g),
            Sample::Inventory(i) => self.open.inventories.push(i),
        }
        self.full().then(|| self.take())
    }

    fn full(&self) -> bool {
        self.open.len() >= self.max_events || self.bytes >= glasshouse_proto::limits::AGENT_BATCH_BYTES
    }

    /// When the open batch must be sent, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.opened.map(|t| t + self.max_age)
    }

    /// Closes the open batch (if not empty).
    pub fn flush(&mut self) -> Option<PendingBatch> {
        (!self.open.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> PendingBatch {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.index.clear();
        self.file_index.clear();
        self.opened = None;
        self.bytes = 0;
        PendingBatch {
            sequence,
            ..std::mem::take(&mut self.open)
        }
    }
}
