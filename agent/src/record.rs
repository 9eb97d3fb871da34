//! What the agent reports, attributed: the records the pipeline builds from
//! raw sensor events and readers, batched, then encoded for the stream
//! ([`crate::encode`]). Types only: sensors, readers and the pipeline all
//! depend on this module, it depends on none of them.

use std::sync::Arc;

use bytes::Bytes;
use glasshouse_proto::process::Kind;

use crate::attribute::ContainerKey;
use crate::resources::Counters;
use crate::runtime::ContainerMeta;
use crate::sensor::{FileRaw, NetworkRaw, SyscallRaw};

/// A container with what the runtime told about it.
#[derive(Debug)]
pub struct Container {
    pub key: ContainerKey,
    pub meta: ContainerMeta,
    pub workload_id: String,
    /// Whether the runtime answered; when not, metadata is retried later.
    pub complete: bool,
    /// Whether it passes the agent's `containers` name filter (decided when
    /// its metadata arrives, not per event); one that does not is not
    /// reported.
    pub reported: bool,
}

/// An attributed event, strings still raw bytes.
#[derive(Debug, Clone)]
pub struct Event {
    pub time_unix_ns: i64,
    pub kind: Kind,
    pub container: Option<Arc<Container>>,
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub path: Option<Bytes>,
    pub argv: Vec<Bytes>,
    pub cwd: Option<Bytes>,
    pub parent_exe: Option<Bytes>,
    pub exit_code: Option<i32>,
    /// Entered from outside the container (`podman exec`, `kubectl exec`, a
    /// probe) or a descendant of such a process, not of the container's init.
    pub exec_in: bool,
    /// Exec of a file created or modified after the container started.
    pub drift: bool,
    /// The new program's stdin or stdout is a socket.
    pub stdio_socket: bool,
    pub count: u32,
}

impl Event {
    /// A process event of `kind` with nothing known but its time, container
    /// and pid (no parent, ids, path, arguments or exit code), counted once.
    pub fn process(kind: Kind, time_unix_ns: i64, container: Option<Arc<Container>>, pid: u32) -> Event {
        Event {
            time_unix_ns,
            kind,
            container,
            pid,
            ppid: 0,
            uid: 0,
            gid: 0,
            path: None,
            argv: Vec::new(),
            cwd: None,
            parent_exe: None,
            exit_code: None,
            exec_in: false,
            drift: false,
            stdio_socket: false,
            count: 1,
        }
    }
}

/// An attributed TCP socket event.
#[derive(Debug, Clone)]
pub struct NetworkEvent {
    pub container: Option<Arc<Container>>,
    pub raw: NetworkRaw,
}

/// An attributed write under a sensitive path.
#[derive(Debug, Clone)]
pub struct FileEvent {
    pub container: Option<Arc<Container>>,
    pub raw: FileRaw,
    pub count: u32,
}

/// One container's syscall counts over an interval.
#[derive(Debug, Clone)]
pub struct SyscallSample {
    pub container: Arc<Container>,
    pub raw: SyscallRaw,
}

/// One container's resource counters at one instant.
#[derive(Debug, Clone)]
pub struct ResourceSample {
    pub container: Arc<Container>,
    pub time_unix_ns: i64,
    pub counters: Counters,
}

/// Events the agent knows it did not report, for one container (or, without
/// one, the whole host) over a window.
#[derive(Debug, Clone)]
pub struct Gap {
    pub container: Option<Arc<Container>>,
    pub start_unix_ns: i64,
    pub end_unix_ns: i64,
    pub dropped: u64,
    pub reason: glasshouse_proto::v1::GapReason,
}

/// A batch waiting to be sent and acknowledged.
#[derive(Debug, Clone, Default)]
pub struct PendingBatch {
    pub sequence: u64,
    pub events: Vec<Event>,
    pub network: Vec<NetworkEvent>,
    pub files: Vec<FileEvent>,
    pub syscalls: Vec<SyscallSample>,
    pub resources: Vec<ResourceSample>,
    pub gaps: Vec<Gap>,
    /// Container inventories (installed packages).
    pub inventories: Vec<InventoryRecord>,
}

impl PendingBatch {
    /// Records of every kind in the batch.
    pub fn len(&self) -> usize {
        self.events.len()
            + self.network.len()
            + self.files.len()
            + self.syscalls.len()
            + self.resources.len()
            + self.gaps.len()
            + self.inventories.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub ecosystem: String,
    pub name: String,
    pub version: String,
    pub source_name: Option<String>,
    pub location: String,
}

/// What one scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    pub distro: Option<String>,
    pub packages: Vec<Package>,
    pub errors: Vec<String>,
}

/// An inventory to send, attributed.
#[derive(Debug, Clone)]
pub struct InventoryRecord {
    pub container: Arc<Container>,
    pub time_unix_ns: i64,
    pub image_digest: Option<String>,
    pub inventory: Arc<Inventory>,
}
