//! Resolves wire batches of one agent stream into Arrow rows: string and
//! container references are looked up in the stream's tables, timestamps
//! rebuilt from deltas. Anything inconsistent is refused with a [`DecodeError`]
//! naming the problem; the tables stay bounded by the configured limits.

use std::collections::HashMap;
use std::sync::Arc;

use glasshouse_proto::process::{Kind, Row};
use glasshouse_proto::v1;

/// 2000-01-01 and 2200-01-01 in Unix ns: anything outside is a broken clock or input.
const MIN_TIME_NS: i64 = 946_684_800_000_000_000;
const MAX_TIME_NS: i64 = 7_258_118_400_000_000_000;

/// Why a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("batch {sequence} has {events} events, limit is {max}")]
    TooManyEvents { sequence: u64, events: usize, max: u32 },
    #[error("batch {sequence}: string dictionary would exceed {max} entries")]
    TooManyStrings { sequence: u64, max: u32 },
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
    #[error("batch {sequence}, event {index}: timestamp out of range")]
    BadTimestamp { sequence: u64, index: usize },
    #[error("batch sequence {sequence} is not after {previous}")]
    SequenceNotIncreasing { sequence: u64, previous: u64 },
}

impl DecodeError {
    /// The batch refused, when the error concerns one batch.
    pub fn sequence(&self) -> Option<u64> {
        match self {
            DecodeError::TooManyEvents { sequence, .. }
            | DecodeError::TooManyStrings { sequence, .. }
            | DecodeError::StringIdZero { sequence }
            | DecodeError::ContainerRefZero { sequence }
            | DecodeError::UnknownString { sequence, .. }
            | DecodeError::UnknownContainerString { sequence, .. }
            | DecodeError::UnknownContainer { sequence, .. }
            | DecodeError::UnknownKind { sequence, .. }
            | DecodeError::BadTimestamp { sequence, .. } => Some(*sequence),
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
    max_events: u32,
    max_strings: u32,
    strings: HashMap<u32, Arc<str>>,
    containers: HashMap<u32, ContainerEntry>,
    last_sequence: u64,
}

/// Rows of one batch grouped by workload id (the Kafka key), in event order.
pub type RowsByWorkload = Vec<(Arc<str>, Vec<Row>)>;

impl StreamTables {
    pub fn new(hello: &v1::Hello, max_events: u32, max_strings: u32) -> StreamTables {
        StreamTables {
            agent_id: hello.agent_id.as_str().into(),
            boot_id: hello.boot_id,
            host: hello.hostname.as_str().into(),
            host_workload: Arc::from(format!("host:{}", hello.hostname)),
            max_events,
            max_strings,
            strings: HashMap::new(),
            containers: HashMap::new(),
            last_sequence: 0,
        }
    }

    /// Applies the batch's definitions and resolves its events. On error the
    /// tables may hold the batch's definitions; the stream is ended anyway.
    pub fn resolve(&mut self, batch: v1::Batch) -> Result<RowsByWorkload, DecodeError> {
        let sequence = batch.sequence;
        if sequence <= self.last_sequence {
            return Err(DecodeError::SequenceNotIncreasing {
                sequence,
                previous: self.last_sequence,
            });
        }
        if batch.process_events.len() > self.max_events as usize {
            return Err(DecodeError::TooManyEvents {
                sequence,
                events: batch.process_events.len(),
                max: self.max_events,
            });
        }
        if batch.reset_strings {
            self.strings.clear();
            self.containers.clear();
        }
        if self.strings.len() + batch.strings.len() > self.max_strings as usize {
            return Err(DecodeError::TooManyStrings {
                sequence,
                max: self.max_strings,
            });
        }
        for def in batch.strings {
            if def.id == 0 {
                return Err(DecodeError::StringIdZero { sequence });
            }
            self.strings
                .insert(def.id, Arc::from(String::from_utf8_lossy(&def.value)));
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
            if self.containers.len() >= self.max_strings as usize && !self.containers.contains_key(&c.r#ref) {
                return Err(DecodeError::TooManyStrings {
                    sequence,
                    max: self.max_strings,
                });
            }
            self.containers.insert(c.r#ref, entry);
        }

        let mut groups: HashMap<Arc<str>, usize> = HashMap::new();
        let mut out: RowsByWorkload = Vec::new();
        let mut time = batch.base_time_unix_ns;
        for (index, e) in batch.process_events.into_iter().enumerate() {
            time = time
                .checked_add(e.time_delta_ns)
                .filter(|t| (MIN_TIME_NS..MAX_TIME_NS).contains(t))
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
                Ok(v1::ProcessEventKind::Exec) => Kind::Exec,
                Ok(v1::ProcessEventKind::Fork) => Kind::Fork,
                Ok(v1::ProcessEventKind::Exit) => Kind::Exit,
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
            let argv = e
                .argv
                .iter()
                .map(|id| string(*id).map(Option::unwrap_or_default))
                .collect::<Result<Vec<_>, _>>()?;
            let workload = container.map_or_else(|| self.host_workload.clone(), |c| c.workload_id.clone());
            let text = |s: &Option<Arc<str>>| s.clone();
            let row = Row {
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
            };
            let slot = *groups.entry(workload.clone()).or_insert_with(|| {
                out.push((workload, Vec::new()));
                out.len() - 1
            });
            out[slot].1.push(row);
        }
        self.last_sequence = sequence;
        Ok(out)
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
        }
    }

    #[test]
    fn resolves_references_deltas_and_groups_by_workload() {
        let mut t = StreamTables::new(&hello(), 100, 100);
        let groups = t.resolve(good_batch()).unwrap();
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
        let (w, rows) = &groups[1];
        assert_eq!(&**w, "host:h1");
        assert_eq!(rows[0].time_unix_ns, 1_700_000_000_000_000_005);
        assert_eq!(rows[0].event_index, 1);
        assert_eq!(rows[0].count, 1, "0 on the wire reads as 1");

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
        ];
        for (mutate, want) in cases {
            let mut t = StreamTables::new(&hello(), 100, 100);
            let mut b = good_batch();
            mutate(&mut b);
            let err = t.resolve(b).unwrap_err().to_string();
            assert!(err.contains(want), "{err} should contain {want}");
        }
    }

    #[test]
    fn reset_forgets_definitions() {
        let mut t = StreamTables::new(&hello(), 100, 100);
        t.resolve(good_batch()).unwrap();
        let mut b = good_batch();
        b.sequence = 2;
        b.reset_strings = true;
        b.strings.clear();
        assert!(matches!(t.resolve(b), Err(DecodeError::UnknownContainerString { .. })));
    }
}
