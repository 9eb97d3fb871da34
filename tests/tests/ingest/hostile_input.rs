//! Hostile input against every decoder that takes bytes from outside:
//! property tests with thousands of cases each, from mutated valid inputs
//! (bytes overwritten, inserted, removed, truncated) and from random bytes.
//! The property is the same everywhere: a clear error or a result, never a
//! panic, and no allocation driven by a length field the input chose: a
//! counting allocator records the largest single allocation while a decoder
//! runs, and the decoding properties assert it stays within
//! [`LARGEST_ALLOCATION`] (ingest) or the decoder's own bound on what a
//! message may claim (Arrow) for inputs of a few kilobytes.
//!
//! - the aggregator's ingest decoding (protobuf batch → rows, with string
//!   and container references resolved) of mutated agent batches;
//! - the analyzer's Arrow IPC decoding of mutated messages of every topic;
//! - operator commands on `glasshouse.control`;
//! - config parsing of the three binaries (mutated shipped configs);
//! - the agent's cgroup path parsing (mutated real paths of every runtime).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use glasshouse_proto::record::Attribution;
use glasshouse_proto::v1;
use glasshouse_proto::{file, gaps, ipc, network, process, resources, syscalls};
use glasshouse_tests::wire;
use proptest::prelude::*;
use prost::Message;

/// The largest single allocation the ingest decoder may make for an input
/// of a few kilobytes: more can only come from a size the input claims.
const LARGEST_ALLOCATION: usize = 16 << 20;

/// The system allocator, noting the largest request of each thread.
struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // Ignored: the thread-local is gone while the thread exits.
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

// SAFETY: every call is passed on to `System` unchanged; `note` neither
// allocates nor panics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f`; the largest single allocation it made on this thread.
fn largest_allocation(f: impl FnOnce()) -> usize {
    LARGEST.with(|l| l.set(0));
    f();
    LARGEST.with(Cell::get)
}

#[test]
fn the_allocation_check_sees_a_claimed_size() {
    // The check itself must be able to fail: a decoder trusting a length.
    let claimed = u32::MAX as usize / 2;
    let largest = largest_allocation(|| {
        let v: Vec<u8> = Vec::with_capacity(claimed);
        std::hint::black_box(&v);
    });
    assert!(largest >= claimed && largest > LARGEST_ALLOCATION);
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        1 => (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, v)| Edit::Insert(i, v)),
        1 => (any::<usize>(), 1usize..32).prop_map(|(i, n)| Edit::Remove(i, n)),
        1 => any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let len = bytes.len().max(1);
        match e {
            Edit::Set(i, b) => {
                if !bytes.is_empty() {
                    bytes[i % len] = *b;
                }
            }
            Edit::Insert(i, v) => {
                let at = i % (bytes.len() + 1);
                bytes.splice(at..at, v.iter().copied());
            }
            Edit::Remove(i, n) => {
                if !bytes.is_empty() {
                    let at = i % len;
                    let end = (at + n).min(bytes.len());
                    bytes.drain(at..end);
                }
            }
            Edit::Truncate(i) => bytes.truncate(i % len),
        }
    }
    bytes
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 3000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Valid agent batches with every kind of event and sample, encoded.
fn seed_batches() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    let Some(v1::agent_frame::Frame::Batch(mut b)) = wire::batch(1, 8, true).frame else {
        unreachable!("wire::batch makes a batch")
    };
    seeds.push(b.encode_to_vec());
    b.network_events.push(v1::NetworkEvent {
        time_delta_ns: 5,
        kind: v1::NetworkEventKind::Connect as i32,
        container: 1,
        pid: 7,
        local_addr: vec![10, 0, 0, 2],
        remote_addr: vec![93, 184, 216, 34],
        local_port: 40000,
        remote_port: 443,
        ..Default::default()
    });
    b.file_events.push(v1::FileEvent {
        time_delta_ns: 5,
        container: 1,
        pid: 7,
        path: 4,
        ..Default::default()
    });
    b.syscall_profiles.push(v1::SyscallProfile {
        container: 1,
        start_unix_ns: 1_800_000_000_000_000_000,
        end_unix_ns: 1_800_000_001_000_000_000,
        nr: vec![0, 1, 257],
        count: vec![5, 6, 7],
        arch: "x86_64".into(),
    });
    b.resource_samples.push(v1::ResourceSample {
        container: 1,
        time_unix_ns: 1_800_000_000_000_000_000,
        cpu_usage_ns: 5,
        memory_bytes: 6,
        ..Default::default()
    });
    b.gaps.push(v1::Gap {
        container: 1,
        start_unix_ns: 1_800_000_000_000_000_000,
        end_unix_ns: 1_800_000_001_000_000_000,
        reason: v1::GapReason::RateLimited as i32,
        dropped: 3,
    });
    seeds.push(b.encode_to_vec());
    seeds
}

fn hello() -> v1::Hello {
    let Some(v1::agent_frame::Frame::Hello(h)) = wire::hello("fuzz").frame else {
        unreachable!("wire::hello makes a hello")
    };
    h
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn ingest_decoding_refuses_or_resolves_mutated_batches(
        seed in 0usize..2,
        edits in proptest::collection::vec(edit(), 1..6),
    ) {
        let bytes = apply(seed_batches()[seed].clone(), &edits);
        let mut tables = glasshouse_aggregator::decode::StreamTables::new(&hello(), LIMITS);
        let largest = largest_allocation(|| {
            if let Ok(batch) = v1::Batch::decode(bytes.as_slice()) {
                // Either rows or a decode error naming the problem: never a panic.
                let _ = tables.resolve(batch);
            }
        });
        prop_assert!(largest <= LARGEST_ALLOCATION, "{largest} bytes at once for {} input bytes", bytes.len());
    }

    #[test]
    fn ingest_decoding_survives_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut tables = glasshouse_aggregator::decode::StreamTables::new(&hello(), LIMITS);
        let largest = largest_allocation(|| {
            if let Ok(batch) = v1::Batch::decode(bytes.as_slice()) {
                let _ = tables.resolve(batch);
            }
        });
        prop_assert!(largest <= LARGEST_ALLOCATION, "{largest} bytes at once for {} input bytes", bytes.len());
    }
}

/// One valid Arrow IPC message per topic.
fn seed_messages() -> Vec<Vec<u8>> {
    let s = |v: &str| -> process::Str { v.into() };
    let p = process::Row {
        attribution: Attribution {
            agent_id: s("a"),
            boot_id: 1,
            batch_seq: 2,
            host: s("h"),
            container_id: Some(s("c")),
            container_name: Some(s("n")),
            workload_id: s("w"),
            ..Default::default()
        },
        event_index: 3,
        time_unix_ns: 1_800_000_000_000_000_000,
        kind: process::Kind::Exec,
        pid: 1,
        ppid: 0,
        uid: 0,
        gid: 0,
        path: Some(s("/bin/sh")),
        argv: vec![s("sh"), s("-c"), s("x")],
        cwd: None,
        parent_exe: None,
        exit_code: None,
        count: 1,
        exec_in: false,
        drift: true,
        stdio_socket: false,
    };
    let mut pb = process::Builder::default();
    pb.append(&p);
    pb.append(&p);
    let mut out = vec![ipc::encode(&pb.finish()).expect("encode")];
    let mut fb = file::Builder::default();
    fb.append(&file::Row {
        attribution: Attribution {
            agent_id: s("a"),
            boot_id: 1,
            batch_seq: 2,
            host: s("h"),
            container_id: Some(s("c")),
            workload_id: s("w"),
            ..Default::default()
        },
        event_index: 3,
        time_unix_ns: 1,
        kind: file::Kind::Create,
        pid: 1,
        path: s("/etc/passwd"),
        flags: 1,
        count: 1,
        ..Default::default()
    });
    out.push(ipc::encode(&fb.finish()).expect("encode"));
    let mut gb = gaps::Builder::default();
    gb.append(&gaps::Row {
        attribution: Attribution {
            agent_id: s("a"),
            boot_id: 1,
            batch_seq: 2,
            host: s("h"),
            workload_id: s("host:h"),
            ..Default::default()
        },
        start_unix_ns: 1,
        end_unix_ns: 2,
        reason: gaps::Reason::QueueFull,
        dropped: 9,
    });
    out.push(ipc::encode(&gb.finish()).expect("encode"));
    out
}

/// Every reader the analyzer has, on one decoded batch.
fn read_all(batch: &arrow_array::RecordBatch) {
    let _ = process::read_rows(batch);
    let _ = network::read_rows(batch);
    let _ = file::read_rows(batch);
    let _ = syscalls::read_rows(batch);
    let _ = resources::read_rows(batch);
    let _ = gaps::read_rows(batch);
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arrow_decoding_refuses_or_reads_mutated_messages(
        seed in 0usize..3,
        edits in proptest::collection::vec(edit(), 1..4),
    ) {
        let bytes = apply(seed_messages()[seed].clone(), &edits);
        let largest = largest_allocation(|| {
            if let Ok(batch) = ipc::decode(&bytes) {
                read_all(&batch);
            }
        });
        // Arrow allocates what a compressed buffer claims; the decoder
        // bounds the claims of a message by `MAX_DECODED_BYTES`.
        let bound = ipc::MAX_DECODED_BYTES as usize;
        prop_assert!(largest <= bound, "{largest} bytes at once for {} input bytes", bytes.len());
    }

    #[test]
    fn control_messages_are_parsed_or_refused(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = glasshouse_analyzer::control::parse(&bytes);
    }

    #[test]
    fn mutated_control_messages_are_parsed_or_refused(edits in proptest::collection::vec(edit(), 1..6)) {
        let seed = br#"{"command":"lock","workload":"default/web/server","by":"op@h"}"#.to_vec();
        let _ = glasshouse_analyzer::control::parse(&apply(seed, &edits));
    }

    #[test]
    fn configs_are_parsed_or_refused_with_a_message(
        which in 0usize..3,
        edits in proptest::collection::vec(edit(), 1..6),
    ) {
        let root = glasshouse_tests::manifest_dir().join("../deploy/local");
        let name = ["agent.toml", "aggregator.toml", "analyzer.toml"][which];
        let text = std::fs::read(root.join(name)).expect("shipped config");
        let text = String::from_utf8_lossy(&apply(text, &edits)).into_owned();
        let message = match which {
            0 => glasshouse_runtime::service::parse_config::<glasshouse_agent::Config>(name, &text).err().map(|e| e.to_string()),
            1 => glasshouse_runtime::service::parse_config::<glasshouse_aggregator::Config>(name, &text).err().map(|e| e.to_string()),
            _ => glasshouse_runtime::service::parse_config::<glasshouse_analyzer::Config>(name, &text).err().map(|e| e.to_string()),
        };
        if let Some(m) = message {
            prop_assert!(m.contains(name), "an error names the file: {m}");
        }
    }

    #[test]
    fn cgroup_paths_are_parsed_or_ignored(
        seed in 0usize..5,
        edits in proptest::collection::vec(edit(), 0..6),
    ) {
        const ID: &str = "4f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";
        let seeds = [
            format!("/machine.slice/libpod-{ID}.scope/container"),
            format!("/system.slice/docker-{ID}.scope"),
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c_3d4e.slice/cri-containerd-{ID}.scope"),
            format!("/kubepods/besteffort/pod1b2c-3d4e/{ID}"),
            format!("/kubepods.slice/kubepods-pod1b2c_3d4e.slice/crio-{ID}.scope"),
        ];
        let path = String::from_utf8_lossy(&apply(seeds[seed].clone().into_bytes(), &edits)).into_owned();
        if let Some(key) = glasshouse_agent::attribute::parse_cgroup_path(&path) {
            // Whatever it found is an id taken from the path itself.
            prop_assert!(path.contains(&key.id), "{key:?} not in {path}");
        }
    }
}

/// The aggregator's default budgets, without the time window (the inputs
/// carry fixed times).
const LIMITS: glasshouse_aggregator::decode::Limits = glasshouse_aggregator::decode::Limits {
    max_batch_events: 16_384,
    max_strings: 65_536,
    max_batch_bytes: 64 << 20,
    max_string_bytes: 64 << 20,
    time_window: None,
};
