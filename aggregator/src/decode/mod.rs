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
//!
//! # Layout
//! - this module: the tables of one stream ([`StreamTables`]: strings,
//!   containers, limits) and [`StreamTables::resolve`], which applies a
//!   batch's definitions and hands each event list to its family;
//! - `cursor`: what every family shares while one batch is resolved: the
//!   time chains, the byte budget, string lookup and container →
//!   [`Attribution`], each written once;
//! - `events`: one short function per event family;
//! - `error`: [`DecodeError`], why a batch was refused.

use std::collections::HashMap;
use std::sync::Arc;

use glasshouse_proto::record::{Attribution, Record, Str};
use glasshouse_proto::{file, gaps, inventory, network, process, resources, syscalls, v1};

mod cursor;
mod error;
mod events;
#[cfg(test)]
mod tests;

use cursor::{Budget, Cursor, Times};
pub use error::{DecodeError, SampleKind};

/// Most packages in one inventory (the contract's limit).
pub use glasshouse_proto::limits::MAX_INVENTORY_PACKAGES as MAX_PACKAGES;

/// The tables of one agent stream.
#[derive(Debug)]
pub struct StreamTables {
    /// The attribution of host events (no container), `batch_seq` 0.
    host: Attribution,
    limits: Limits,
    strings: HashMap<u32, Str>,
    /// Bytes of the strings in `strings`.
    string_bytes: usize,
    /// The attribution of each defined container, `batch_seq` 0.
    containers: HashMap<u32, Attribution>,
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

/// Rows of one record type grouped by workload id as they are made, groups
/// in first-seen order.
#[derive(Debug)]
struct Grouped<R> {
    groups: RowsByWorkload<R>,
    slots: HashMap<Str, usize>,
    /// The group the last row went to.
    last: usize,
}

impl<R: Record> Grouped<R> {
    fn new() -> Grouped<R> {
        Grouped {
            groups: Vec::new(),
            slots: HashMap::new(),
            last: 0,
        }
    }

    fn push(&mut self, row: R) {
        let workload = &row.attribution().workload_id;
        // Consecutive rows nearly always share their container's workload
        // id (the same `Arc`): no hashing for them.
        if let Some((last, rows)) = self.groups.get_mut(self.last)
            && Str::ptr_eq(last, workload)
        {
            rows.push(row);
            return;
        }
        let slot = match self.slots.get(workload) {
            Some(slot) => *slot,
            None => {
                self.groups.push((workload.clone(), Vec::new()));
                self.slots.insert(workload.clone(), self.groups.len() - 1);
                self.groups.len() - 1
            }
        };
        self.last = slot;
        self.groups[slot].1.push(row);
    }
}

impl StreamTables {
    pub fn new(hello: &v1::Hello, limits: Limits) -> StreamTables {
        StreamTables {
            host: Attribution {
                boot_id: hello.boot_id,
                cluster: hello.cluster.as_str().into(),
                ..Attribution::host(hello.agent_id.as_str().into(), hello.hostname.as_str().into())
            },
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
    pub fn resolve_at(&mut self, mut batch: v1::Batch, now_ns: i64) -> Result<BatchRows, DecodeError> {
        let sequence = batch.sequence;
        if sequence <= self.last_sequence {
            return Err(DecodeError::SequenceNotIncreasing {
                sequence,
                previous: self.last_sequence,
            });
        }
        self.check_counts(&batch)?;
        self.define_strings(sequence, batch.reset_strings, std::mem::take(&mut batch.strings))?;
        self.define_containers(sequence, std::mem::take(&mut batch.containers))?;

        let mut cursor = Cursor {
            sequence,
            strings: &self.strings,
            containers: &self.containers,
            host: &self.host,
            times: Times::new(self.limits.time_window, now_ns),
            budget: Budget::new(sequence, self.limits.max_batch_bytes),
        };
        let base = batch.base_time_unix_ns;
        let process_events = batch.process_events.len();
        let network_events = batch.network_events.len();
        let out = BatchRows {
            process: events::process(&mut cursor, base, batch.process_events)?,
            network: events::network(&mut cursor, base, process_events, batch.network_events)?,
            file: events::file(&mut cursor, base, process_events + network_events, batch.file_events)?,
            syscalls: events::syscalls(&mut cursor, batch.syscall_profiles)?,
            resources: events::resources(&mut cursor, batch.resource_samples)?,
            gaps: events::gaps(&mut cursor, batch.gaps)?,
            inventory: events::inventories(&mut cursor, batch.inventories)?,
            bytes: 0,
        };
        if let Some(window) = self.limits.time_window
            && cursor.times.span_ns() > window.max_span_ns
        {
            return Err(DecodeError::TimeSpan {
                sequence,
                span_s: cursor.times.span_ns() / 1_000_000_000,
                max_s: window.max_span_ns / 1_000_000_000,
            });
        }
        let bytes = cursor.budget.used();
        self.last_sequence = sequence;
        Ok(BatchRows { bytes, ..out })
    }

    /// The batch's lists against the limits (see the module documentation).
    fn check_counts(&self, batch: &v1::Batch) -> Result<(), DecodeError> {
        let sequence = batch.sequence;
        let events = batch.process_events.len()
            + batch.network_events.len()
            + batch.file_events.len()
            + batch.syscall_profiles.len()
            + batch.resource_samples.len();
        let max = self.limits.max_batch_events;
        if events > max as usize {
            return Err(DecodeError::TooManyEvents { sequence, events, max });
        }
        if batch.gaps.len() > max as usize {
            return Err(DecodeError::TooManyGaps {
                sequence,
                gaps: batch.gaps.len(),
                max,
            });
        }
        if batch.inventories.len() > max as usize {
            return Err(DecodeError::TooManyInventories {
                sequence,
                inventories: batch.inventories.len(),
                max,
            });
        }
        Ok(())
    }

    /// Applies string definitions within the dictionary's count and byte budgets.
    fn define_strings(&mut self, sequence: u64, reset: bool, defs: Vec<v1::StringDef>) -> Result<(), DecodeError> {
        if reset {
            self.strings.clear();
            self.containers.clear();
            self.string_bytes = 0;
        }
        let max_strings = self.limits.max_strings;
        if self.strings.len() + defs.len() > max_strings as usize {
            return Err(DecodeError::TooManyStrings {
                sequence,
                max: max_strings,
            });
        }
        // Bytes of the dictionary once this batch's definitions are in
        // (a redefinition replaces its old string), checked before any is.
        let mut string_bytes = self.string_bytes;
        for def in &defs {
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
        for def in defs {
            if def.id == 0 {
                return Err(DecodeError::StringIdZero { sequence });
            }
            let value: Str = Arc::from(String::from_utf8_lossy(&def.value));
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
        Ok(())
    }

    /// Applies container definitions: each becomes the [`Attribution`] of
    /// its events.
    fn define_containers(&mut self, sequence: u64, defs: Vec<v1::ContainerDef>) -> Result<(), DecodeError> {
        let max_strings = self.limits.max_strings;
        for c in defs {
            if c.r#ref == 0 {
                return Err(DecodeError::ContainerRefZero { sequence });
            }
            let lookup = |id: u32| -> Result<Option<Str>, DecodeError> {
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
            let attribution = Attribution {
                workload_id: lookup(c.workload_id)?.unwrap_or_else(|| Arc::from(format!("container:{id}"))),
                container_id: Some(id),
                container_name: lookup(c.name)?,
                image: lookup(c.image)?,
                image_id: lookup(c.image_id)?,
                ..self.host.clone()
            };
            if self.containers.len() >= max_strings as usize && !self.containers.contains_key(&c.r#ref) {
                return Err(DecodeError::TooManyStrings {
                    sequence,
                    max: max_strings,
                });
            }
            self.containers.insert(c.r#ref, attribution);
        }
        Ok(())
    }
}
