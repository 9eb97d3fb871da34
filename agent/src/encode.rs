//! Per-stream encoding of [`PendingBatch`]es into wire batches: strings and
//! containers are **interned** (defined once per stream, then referred to by
//! number) and timestamps become deltas. A new stream starts a new encoder, so a
//! batch re-sent after reconnecting carries the definitions it needs.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use glasshouse_proto::v1;

use crate::record::{Container, PendingBatch};

fn ip_bytes(ip: std::net::IpAddr) -> Vec<u8> {
    match ip {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Bytes of every string `batch` could define, with an allowance of 1 KiB
/// per row for container strings (runtimes' names are short; the
/// aggregator's budget is twice the agent's, `limits::MIN_STRING_BYTES`).
fn worst_string_bytes(batch: &PendingBatch) -> usize {
    let opt = |s: &Option<Bytes>| s.as_ref().map_or(0, Bytes::len);
    let events = batch
        .events
        .iter()
        .map(|e| opt(&e.path) + opt(&e.cwd) + opt(&e.parent_exe) + e.argv.iter().map(Bytes::len).sum::<usize>())
        .sum::<usize>();
    let files = batch
        .files
        .iter()
        .map(|f| f.raw.path.len() + opt(&f.raw.exe))
        .sum::<usize>();
    events + files + 1024 * batch.len()
}

/// Interning state of one stream.
#[derive(Debug)]
pub struct StreamEncoder {
    max_strings: usize,
    strings: HashMap<Bytes, u32>,
    /// Bytes of the strings in `strings`, kept within
    /// [`glasshouse_proto::limits::AGENT_STRING_TABLE_BYTES`].
    string_bytes: usize,
    /// container id → (ref, the definition last sent).
    containers: HashMap<String, (u32, Arc<Container>)>,
}

impl StreamEncoder {
    pub fn new(max_strings: usize) -> StreamEncoder {
        StreamEncoder {
            max_strings,
            strings: HashMap::new(),
            string_bytes: 0,
            containers: HashMap::new(),
        }
    }

    /// Distinct strings currently defined on this stream.
    pub fn interned(&self) -> usize {
        self.strings.len()
    }

    pub fn encode(&mut self, batch: &PendingBatch) -> v1::Batch {
        let mut out = v1::Batch {
            sequence: batch.sequence,
            base_time_unix_ns: batch
                .events
                .first()
                .map(|e| e.time_unix_ns)
                .or_else(|| batch.network.first().map(|e| e.raw.time_unix_ns))
                .or_else(|| batch.files.first().map(|e| e.raw.time_unix_ns))
                .or_else(|| batch.resources.first().map(|r| r.time_unix_ns))
                .or_else(|| batch.syscalls.first().map(|s| s.raw.start_unix_ns))
                .unwrap_or(0),
            ..Default::default()
        };
        // Worst case every string of the batch is new: reset first if that could
        // overflow the dictionary, so the aggregator's table stays bounded too.
        // The same in bytes, against the aggregator's dictionary budget.
        let worst = batch.events.iter().map(|e| 4 + e.argv.len()).sum::<usize>() + 6 * batch.len();
        if self.strings.len() + worst > self.max_strings
            || self.string_bytes + worst_string_bytes(batch) > glasshouse_proto::limits::AGENT_STRING_TABLE_BYTES
        {
            self.strings.clear();
            self.containers.clear();
            self.string_bytes = 0;
            out.reset_strings = true;
        }
        self.process_events(batch, &mut out);
        self.network_events(batch, &mut out);
        self.file_events(batch, &mut out);
        self.samples(batch, &mut out);
        out
    }

    fn process_events(&mut self, batch: &PendingBatch, out: &mut v1::Batch) {
        let mut previous = out.base_time_unix_ns;
        for e in &batch.events {
            let container = e.container.as_ref().map_or(0, |c| self.container_ref(c, out));
            let mut s = |v: &Option<Bytes>| v.as_ref().map_or(0, |v| self.intern(v, &mut out.strings));
            let path = s(&e.path);
            let cwd = s(&e.cwd);
            let parent_exe = s(&e.parent_exe);
            let argv = e.argv.iter().map(|a| self.intern(a, &mut out.strings)).collect();
            out.process_events.push(v1::ProcessEvent {
                time_delta_ns: e.time_unix_ns.saturating_sub(previous),
                kind: v1::ProcessEventKind::from(e.kind) as i32,
                container,
                pid: e.pid,
                ppid: e.ppid,
                uid: e.uid,
                gid: e.gid,
                path,
                argv,
                cwd,
                parent_exe,
                exit_code: e.exit_code,
                count: e.count,
                exec_in: e.exec_in,
                drift: e.drift,
                stdio_socket: e.stdio_socket,
            });
            previous = e.time_unix_ns;
        }
    }

    fn network_events(&mut self, batch: &PendingBatch, out: &mut v1::Batch) {
        let mut previous = out.base_time_unix_ns;
        for e in &batch.network {
            let container = e.container.as_ref().map_or(0, |c| self.container_ref(c, out));
            let n = &e.raw;
            let (remote_addr, remote_port) = n.remote.map_or((Vec::new(), 0), |r| (ip_bytes(r.ip()), r.port()));
            out.network_events.push(v1::NetworkEvent {
                time_delta_ns: n.time_unix_ns.saturating_sub(previous),
                kind: n.kind as i32,
                container,
                pid: n.pid,
                local_addr: ip_bytes(n.local.ip()),
                local_port: u32::from(n.local.port()),
                remote_addr,
                remote_port: u32::from(remote_port),
                bytes_sent: n.bytes_sent,
                bytes_received: n.bytes_received,
                count: 1,
                pre_existing: n.pre_existing,
            });
            previous = n.time_unix_ns;
        }
    }

    fn file_events(&mut self, batch: &PendingBatch, out: &mut v1::Batch) {
        let mut previous = out.base_time_unix_ns;
        for e in &batch.files {
            let container = e.container.as_ref().map_or(0, |c| self.container_ref(c, out));
            let f = &e.raw;
            let path = self.intern(&f.path, &mut out.strings);
            let exe = f.exe.as_ref().map_or(0, |x| self.intern(x, &mut out.strings));
            let kind = if f.created {
                v1::FileEventKind::Create
            } else {
                v1::FileEventKind::Write
            };
            out.file_events.push(v1::FileEvent {
                time_delta_ns: f.time_unix_ns.saturating_sub(previous),
                kind: kind as i32,
                container,
                pid: f.pid,
                path,
                exe,
                flags: f.flags,
                count: e.count,
            });
            previous = f.time_unix_ns;
        }
    }

    /// Syscall profiles, inventories, gaps and resource samples (no time deltas).
    fn samples(&mut self, batch: &PendingBatch, out: &mut v1::Batch) {
        for s in &batch.syscalls {
            let container = self.container_ref(&s.container, out);
            let (nr, count) = s.raw.counts.iter().copied().unzip();
            out.syscall_profiles.push(v1::SyscallProfile {
                container,
                start_unix_ns: s.raw.start_unix_ns,
                end_unix_ns: s.raw.end_unix_ns,
                nr,
                count,
                arch: std::env::consts::ARCH.to_owned(),
            });
        }
        for i in &batch.inventories {
            let container = self.container_ref(&i.container, out);
            let inv = &i.inventory;
            out.inventories.push(v1::Inventory {
                container,
                time_unix_ns: i.time_unix_ns,
                image_digest: i.image_digest.clone().unwrap_or_default(),
                packages: inv
                    .packages
                    .iter()
                    .map(|p| v1::Package {
                        ecosystem: p.ecosystem.clone(),
                        name: p.name.clone(),
                        version: p.version.clone(),
                        source_name: p.source_name.clone().unwrap_or_default(),
                        location: p.location.clone(),
                    })
                    .collect(),
                errors: inv.errors.clone(),
                distro: inv.distro.clone().unwrap_or_default(),
            });
        }
        for g in &batch.gaps {
            let container = g.container.as_ref().map_or(0, |c| self.container_ref(c, out));
            out.gaps.push(v1::Gap {
                container,
                start_unix_ns: g.start_unix_ns,
                end_unix_ns: g.end_unix_ns,
                dropped: g.dropped,
                reason: g.reason as i32,
            });
        }
        for r in &batch.resources {
            let container = self.container_ref(&r.container, out);
            let c = &r.counters;
            out.resource_samples.push(v1::ResourceSample {
                container,
                time_unix_ns: r.time_unix_ns,
                cpu_usage_ns: c.cpu_usage_ns,
                memory_bytes: c.memory_bytes,
                memory_limit_bytes: c.memory_limit_bytes,
                io_read_bytes: c.io_read_bytes,
                io_write_bytes: c.io_write_bytes,
                pids: c.pids,
                pids_limit: c.pids_limit,
                net_rx_bytes: c.net_rx_bytes,
                net_tx_bytes: c.net_tx_bytes,
                net_rx_packets: c.net_rx_packets,
                net_tx_packets: c.net_tx_packets,
            });
        }
    }

    fn intern(&mut self, value: &Bytes, defs: &mut Vec<v1::StringDef>) -> u32 {
        if let Some(id) = self.strings.get(value) {
            return *id;
        }
        // Ids start at 1: 0 means absent. Bounded by `max_strings` (see encode).
        let id = u32::try_from(self.strings.len() + 1).unwrap_or(u32::MAX);
        self.strings.insert(value.clone(), id);
        self.string_bytes += value.len();
        defs.push(v1::StringDef {
            id,
            value: value.clone(),
        });
        id
    }

    fn container_ref(&mut self, c: &Arc<Container>, out: &mut v1::Batch) -> u32 {
        if let Some((r, sent)) = self.containers.get(&c.key.id)
            && Arc::ptr_eq(sent, c)
        {
            return *r;
        }
        let next = u32::try_from(self.containers.len() + 1).unwrap_or(u32::MAX);
        let r = self.containers.get(&c.key.id).map_or(next, |(r, _)| *r);
        let mut s = |v: Option<&str>| {
            v.map_or(0, |v| {
                self.intern(&Bytes::copy_from_slice(v.as_bytes()), &mut out.strings)
            })
        };
        let def = v1::ContainerDef {
            r#ref: r,
            runtime: c.key.runtime as i32,
            container_id: s(Some(&c.key.id)),
            name: s(c.meta.name.as_deref()),
            image: s(c.meta.image.as_deref()),
            image_id: s(c.meta.image_id.as_deref()),
            workload_id: s(Some(&c.workload_id)),
            pod_uid: s(c.key.pod_uid.as_deref()),
        };
        out.containers.push(def);
        self.containers.insert(c.key.id.clone(), (r, c.clone()));
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Batcher;
    use crate::pipeline::tests::{container, exec};
    use std::time::Duration;

    #[test]
    fn strings_and_containers_are_sent_once_per_stream() {
        let c = container("c1");
        let mut b = Batcher::new(100, Duration::from_secs(1));
        b.push(exec(&c, 10, &["cat", "/etc/hostname"]));
        let first = b.flush().unwrap();
        b.push(exec(&c, 11, &["cat", "/etc/passwd"]));
        let second = b.flush().unwrap();

        let mut enc = StreamEncoder::new(10_000);
        let w1 = enc.encode(&first);
        assert_eq!(w1.containers.len(), 1);
        assert_eq!(w1.process_events[0].time_delta_ns, 0);
        assert_eq!(w1.base_time_unix_ns, 1_010);
        let defined = w1.strings.len();
        assert!(defined >= 5, "path, cwd, 2 args, container strings");
        let w2 = enc.encode(&second);
        assert!(w2.containers.is_empty());
        assert_eq!(w2.strings.len(), 1, "only /etc/passwd is new");
        assert_eq!(w2.process_events[0].container, w1.process_events[0].container);
        assert_eq!(w2.process_events[0].argv[0], w1.process_events[0].argv[0]);

        // A new stream (reconnect) defines everything again.
        let mut fresh = StreamEncoder::new(10_000);
        assert_eq!(fresh.encode(&second).containers.len(), 1);
    }

    #[test]
    fn dictionary_resets_instead_of_growing() {
        let c = container("c1");
        let mut enc = StreamEncoder::new(1024);
        let mut resets = 0;
        for i in 0..2000u32 {
            let mut b = Batcher::new(100, Duration::from_secs(1));
            b.push(exec(&c, i, &[&format!("arg-{i}")]));
            let w = enc.encode(&b.flush().unwrap());
            if w.reset_strings {
                resets += 1;
                assert_eq!(w.containers.len(), 1, "containers are redefined after a reset");
            }
            assert!(enc.interned() <= 1024);
        }
        assert!(resets >= 1);
    }

    #[test]
    fn dictionary_resets_before_its_bytes_pass_the_contract() {
        use glasshouse_proto::limits::AGENT_STRING_TABLE_BYTES;
        let c = container("c1");
        let mut enc = StreamEncoder::new(1 << 20);
        let long = 1 << 20;
        let mut resets = 0;
        for i in 0..(2 * AGENT_STRING_TABLE_BYTES / long) {
            let mut b = Batcher::new(100, Duration::from_secs(1));
            // Each batch defines one new 1 MiB argument.
            let arg = format!("{i:08}{}", "x".repeat(long - 8));
            b.push(exec(&c, u32::try_from(i).unwrap(), &[&arg]));
            let w = enc.encode(&b.flush().unwrap());
            resets += usize::from(w.reset_strings);
            assert!(
                enc.string_bytes <= AGENT_STRING_TABLE_BYTES,
                "{} bytes interned",
                enc.string_bytes
            );
        }
        assert!(resets >= 1, "64 MiB of distinct strings: at least one reset");
    }
}
