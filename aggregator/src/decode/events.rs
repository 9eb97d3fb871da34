//! One function per event family: wire events of one list → attributed
//! rows grouped by workload, each row charged against the batch budget
//! before the next is made.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use glasshouse_proto::record::Str;
use glasshouse_proto::{file, gaps, inventory, network, process, resources, syscalls, v1};

use super::cursor::{Cursor, TimeChain};
use super::{DecodeError, Grouped, RowsByWorkload, SampleKind};

use glasshouse_proto::limits::MAX_INVENTORY_PACKAGES as MAX_PACKAGES;
/// Most read errors in one inventory.
const MAX_INVENTORY_ERRORS: usize = 64;
/// Longest string of an inventory (names, versions, paths, errors).
pub(super) const MAX_INVENTORY_STRING: usize = 4096;

/// The event index as stored (a batch holds far fewer than 2^32 events).
fn event_index(index: usize) -> u32 {
    u32::try_from(index).unwrap_or(u32::MAX)
}

/// Process events: one time chain, indexes from 0.
pub(super) fn process(
    c: &mut Cursor<'_>,
    base_unix_ns: i64,
    events: Vec<v1::ProcessEvent>,
) -> Result<RowsByWorkload<process::Row>, DecodeError> {
    let sequence = c.sequence;
    let mut out = Grouped::new();
    let mut chain = TimeChain::new(base_unix_ns);
    for (index, e) in events.into_iter().enumerate() {
        let time_unix_ns = chain.next(c, e.time_delta_ns, index)?;
        let kind =
            process::Kind::try_from(e.kind).map_err(|kind| DecodeError::UnknownKind { sequence, index, kind })?;
        let attribution = c.event_attribution(index, e.container)?;
        let argv = e
            .argv
            .iter()
            .map(|id| c.string(index, *id).map(Option::unwrap_or_default))
            .collect::<Result<Vec<_>, _>>()?;
        // Checked before the row is made: one event may reference a long
        // string many times (the list itself shares the strings, so it is
        // no larger than the wire's list of ids).
        c.budget
            .check(argv.iter().map(|arg| arg.len() + 4).fold(0usize, usize::saturating_add))?;
        let row = process::Row {
            attribution,
            event_index: event_index(index),
            time_unix_ns,
            kind,
            pid: e.pid,
            ppid: e.ppid,
            uid: e.uid,
            gid: e.gid,
            path: c.string(index, e.path)?,
            argv,
            cwd: c.string(index, e.cwd)?,
            parent_exe: c.string(index, e.parent_exe)?,
            exit_code: e.exit_code,
            count: e.count.max(1),
            exec_in: e.exec_in,
            drift: e.drift,
            stdio_socket: e.stdio_socket,
        };
        c.budget.charge(row.approx_bytes())?;
        out.push(row);
    }
    Ok(out.groups)
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

/// Network events: their own time chain; indexes continue from `first_index`
/// (after the process events).
pub(super) fn network(
    c: &mut Cursor<'_>,
    base_unix_ns: i64,
    first_index: usize,
    events: Vec<v1::NetworkEvent>,
) -> Result<RowsByWorkload<network::Row>, DecodeError> {
    let sequence = c.sequence;
    let mut out = Grouped::new();
    let mut chain = TimeChain::new(base_unix_ns);
    for (i, e) in events.into_iter().enumerate() {
        let index = first_index + i;
        let time_unix_ns = chain.next(c, e.time_delta_ns, index)?;
        let kind = network::Kind::try_from(e.kind).map_err(|kind| DecodeError::UnknownNetworkKind {
            sequence,
            index,
            kind,
        })?;
        let attribution = c.event_attribution(index, e.container)?;
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
        let row = network::Row {
            attribution,
            event_index: event_index(index),
            time_unix_ns,
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
            remote_scope: remote.map_or(network::Scope::None, network::Scope::of),
        };
        c.budget.charge(row.approx_bytes())?;
        out.push(row);
    }
    Ok(out.groups)
}

/// File events: their own time chain; indexes continue from `first_index`
/// (after the process and network events).
pub(super) fn file(
    c: &mut Cursor<'_>,
    base_unix_ns: i64,
    first_index: usize,
    events: Vec<v1::FileEvent>,
) -> Result<RowsByWorkload<file::Row>, DecodeError> {
    let sequence = c.sequence;
    let mut out = Grouped::new();
    let mut chain = TimeChain::new(base_unix_ns);
    for (i, e) in events.into_iter().enumerate() {
        let index = first_index + i;
        let time_unix_ns = chain.next(c, e.time_delta_ns, index)?;
        let kind =
            file::Kind::try_from(e.kind).map_err(|kind| DecodeError::UnknownFileKind { sequence, index, kind })?;
        let attribution = c.event_attribution(index, e.container)?;
        // A file event is about its path: without one there is nothing to report.
        let path = c
            .string(index, e.path)?
            .ok_or(DecodeError::MissingPath { sequence, index })?;
        let row = file::Row {
            attribution,
            event_index: event_index(index),
            time_unix_ns,
            kind,
            pid: e.pid,
            generated_name: file::generated_name(&path),
            path,
            exe: c.string(index, e.exe)?,
            flags: e.flags,
            count: e.count.max(1),
        };
        c.budget.charge(row.approx_bytes())?;
        out.push(row);
    }
    Ok(out.groups)
}

/// The attribution of a sample: it names a container (host processes are
/// neither profiled nor sampled), a defined one.
fn sample_attribution(
    c: &Cursor<'_>,
    sample: SampleKind,
    index: usize,
    container_ref: u32,
) -> Result<glasshouse_proto::record::Attribution, DecodeError> {
    let sequence = c.sequence;
    if container_ref == 0 {
        return Err(DecodeError::SampleWithoutContainer {
            sequence,
            sample,
            index,
        });
    }
    c.attribution(container_ref, |container_ref| DecodeError::UnknownSampleContainer {
        sequence,
        sample,
        index,
        container_ref,
    })
}

/// Syscall profiles: an absolute interval each, one row per syscall.
pub(super) fn syscalls(
    c: &mut Cursor<'_>,
    profiles: Vec<v1::SyscallProfile>,
) -> Result<RowsByWorkload<syscalls::Row>, DecodeError> {
    let sequence = c.sequence;
    let sample = SampleKind::SyscallProfile;
    let mut out = Grouped::new();
    for (index, p) in profiles.into_iter().enumerate() {
        let attribution = sample_attribution(c, sample, index, p.container)?;
        for t in [p.start_unix_ns, p.end_unix_ns] {
            if !c.accept_time(t) {
                return Err(DecodeError::BadSampleTimestamp {
                    sequence,
                    sample,
                    index,
                });
            }
        }
        let (start, end) = (p.start_unix_ns, p.end_unix_ns);
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
        let arch: Str = Arc::from(p.arch);
        for (nr, count) in p.nr.into_iter().zip(p.count) {
            let row = syscalls::Row {
                attribution: attribution.clone(),
                start_unix_ns: start,
                end_unix_ns: end,
                arch: arch.clone(),
                nr,
                name: syscalls::name(&arch, nr),
                count,
            };
            c.budget.charge(row.approx_bytes())?;
            out.push(row);
        }
    }
    Ok(out.groups)
}

/// Resource samples: an absolute time each, one row each.
pub(super) fn resources(
    c: &mut Cursor<'_>,
    samples: Vec<v1::ResourceSample>,
) -> Result<RowsByWorkload<resources::Row>, DecodeError> {
    let sample = SampleKind::ResourceSample;
    let mut out = Grouped::new();
    for (index, r) in samples.into_iter().enumerate() {
        let attribution = sample_attribution(c, sample, index, r.container)?;
        if !c.accept_time(r.time_unix_ns) {
            return Err(DecodeError::BadSampleTimestamp {
                sequence: c.sequence,
                sample,
                index,
            });
        }
        let row = resources::Row {
            attribution,
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
        c.budget.charge(row.approx_bytes())?;
        out.push(row);
    }
    Ok(out.groups)
}

/// Gaps: an absolute window each, one row each; container 0 is the whole host.
pub(super) fn gaps(c: &mut Cursor<'_>, gaps: Vec<v1::Gap>) -> Result<RowsByWorkload<gaps::Row>, DecodeError> {
    let sequence = c.sequence;
    let mut out = Grouped::new();
    for (index, g) in gaps.into_iter().enumerate() {
        let reason = gaps::Reason::try_from(g.reason).map_err(|reason| DecodeError::UnknownGapReason {
            sequence,
            index,
            reason,
        })?;
        let attribution = c.attribution(g.container, |container_ref| DecodeError::UnknownGapContainer {
            sequence,
            index,
            container_ref,
        })?;
        for t in [g.start_unix_ns, g.end_unix_ns] {
            if !c.accept_time(t) {
                return Err(DecodeError::BadGapTimestamp { sequence, index });
            }
        }
        let (start, end) = (g.start_unix_ns, g.end_unix_ns);
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
        let row = gaps::Row {
            attribution,
            start_unix_ns: start,
            end_unix_ns: end,
            reason,
            dropped: g.dropped,
        };
        c.budget.charge(row.approx_bytes())?;
        out.push(row);
    }
    Ok(out.groups)
}

/// Inventories: one row each, strings inline and bounded.
pub(super) fn inventories(
    c: &mut Cursor<'_>,
    inventories: Vec<v1::Inventory>,
) -> Result<RowsByWorkload<inventory::Row>, DecodeError> {
    let mut out = Grouped::new();
    for (index, inv) in inventories.into_iter().enumerate() {
        let row = inventory(c, index, inv)?;
        c.budget.charge(row.approx_bytes())?;
        out.push(row);
    }
    Ok(out.groups)
}

fn inventory(c: &mut Cursor<'_>, index: usize, inv: v1::Inventory) -> Result<inventory::Row, DecodeError> {
    let sequence = c.sequence;
    let bad = |reason: String| DecodeError::BadInventory {
        sequence,
        index,
        reason,
    };
    if inv.container == 0 {
        return Err(bad("names no container".into()));
    }
    let attribution = c.attribution(inv.container, |r| bad(format!("unknown container reference {r}")))?;
    if !c.accept_time(inv.time_unix_ns) {
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
    let text = |what: &str, s: String, required: bool| -> Result<Str, DecodeError> {
        if s.len() > MAX_INVENTORY_STRING {
            return Err(bad(format!("{what} longer than {MAX_INVENTORY_STRING} bytes")));
        }
        if required && s.is_empty() {
            return Err(bad(format!("empty {what}")));
        }
        Ok(s.into())
    };
    let opt = |what: &str, s: String| -> Result<Option<Str>, DecodeError> {
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
        attribution,
        image_digest: opt("image digest", inv.image_digest)?,
        time_unix_ns: inv.time_unix_ns,
        distro: opt("distro", inv.distro)?,
        packages,
        errors,
    })
}
