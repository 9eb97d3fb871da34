use super::events::MAX_INVENTORY_STRING;
use super::*;
use std::net::Ipv6Addr;

/// The attribution of the test container `c0ffee` in batch 1.
fn app() -> Attribution {
    Attribution {
        agent_id: "a1".into(),
        boot_id: 9,
        batch_seq: 1,
        host: "h1".into(),
        container_id: Some("c0ffee".into()),
        image: Some("localhost/app:1".into()),
        workload_id: "localhost/app".into(),
        ..Default::default()
    }
}

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
fn rows_carry_the_cluster_of_the_hello() {
    let prod = v1::Hello {
        cluster: "prod".into(),
        ..hello()
    };
    let out = StreamTables::new(&prod, SMALL).resolve(good_batch()).unwrap();
    let clusters: Vec<&str> = out
        .process
        .iter()
        .flat_map(|(_, rows)| rows)
        .map(|r| &*r.attribution.cluster)
        .chain(
            out.resources
                .iter()
                .flat_map(|(_, rows)| rows)
                .map(|r| &*r.attribution.cluster),
        )
        .collect();
    assert!(
        clusters.len() >= 3 && clusters.iter().all(|c| *c == "prod"),
        "{clusters:?}"
    );
    // Without one, the column is empty.
    let out = StreamTables::new(&hello(), SMALL).resolve(good_batch()).unwrap();
    assert!(
        out.process
            .iter()
            .flat_map(|(_, rows)| rows)
            .all(|r| r.attribution.cluster.is_empty())
    );
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
    assert_eq!(r.attribution, app());
    assert_eq!(
        r.argv.iter().map(|a| &**a).collect::<Vec<_>>(),
        vec!["cat", "/etc/hostname"]
    );
    assert_eq!(r.event_index, 0);
    assert!(r.drift, "drift maps through");
    let (w, rows) = &groups[1];
    assert_eq!(&**w, "host:h1");
    assert_eq!(rows[0].time_unix_ns, 1_700_000_000_000_000_005);
    assert_eq!(rows[0].event_index, 1);
    assert_eq!(rows[0].count, 1, "0 on the wire reads as 1");
    assert!(!rows[0].drift);
}

#[test]
fn network_events_resolve_on_their_own_time_chain() {
    let out = StreamTables::new(&hello(), SMALL).resolve(good_batch()).unwrap();
    // Network events: own time chain, indexes after the process events,
    // addresses as text, grouped by workload like process rows.
    let groups = &out.network;
    assert_eq!(groups.len(), 2);
    let (w, rows) = &groups[0];
    assert_eq!(&**w, "localhost/app");
    assert_eq!(
        rows[0],
        network::Row {
            attribution: app(),
            event_index: 2,
            time_unix_ns: 1_700_000_000_000_000_003,
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
            remote_scope: network::Scope::Public,
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
            r.attribution.container_id.as_deref(),
            r.count
        ),
        (None, 0, None, 2)
    );
}

#[test]
fn file_events_resolve_after_process_and_network_events() {
    let out = StreamTables::new(&hello(), SMALL).resolve(good_batch()).unwrap();
    // File events: own time chain, indexes after the process and network
    // events, path and executable resolved, grouped by workload.
    let groups = &out.file;
    assert_eq!(groups.len(), 2);
    let (w, rows) = &groups[0];
    assert_eq!(&**w, "localhost/app");
    assert_eq!(
        rows[..],
        [file::Row {
            attribution: app(),
            event_index: 4,
            time_unix_ns: 1_700_000_000_000_000_002,
            kind: file::Kind::Write,
            pid: 10,
            path: "/etc/passwd".into(),
            exe: Some("/bin/busybox".into()),
            flags: 0o1001,
            count: 1,
            generated_name: false,
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
            r.attribution.container_id.as_deref()
        ),
        (file::Kind::Create, "/root/.ssh/authorized_keys", None, 0o301, 4, None)
    );
}

#[test]
fn samples_resolve_one_row_per_syscall_and_per_sample() {
    let out = StreamTables::new(&hello(), SMALL).resolve(good_batch()).unwrap();
    // Syscall profile: one row per syscall, all in the profile's
    // container and interval, named from the x86_64 table when known.
    let syscall = |nr: u32, name: Option<&str>, count: u64| syscalls::Row {
        attribution: app(),
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
        attribution: app(),
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
}

#[test]
fn definitions_persist_for_the_stream() {
    let mut t = StreamTables::new(&hello(), SMALL);
    t.resolve(good_batch()).unwrap();
    // Definitions persist for the stream: a later batch may only reference.
    let mut next = good_batch();
    next.sequence = 2;
    next.strings.clear();
    next.containers.clear();
    assert!(t.resolve(next).is_ok());
}

/// A change that makes [`good_batch`] inconsistent, and what its refusal says.
type Mutation = Box<dyn Fn(&mut v1::Batch)>;

/// Each mutated batch is refused, with a reason naming what is wrong.
fn refused_with_a_reason(cases: Vec<(Mutation, &str)>) {
    for (mutate, want) in cases {
        let mut t = StreamTables::new(&hello(), SMALL);
        let mut b = good_batch();
        mutate(&mut b);
        let err = t.resolve(b).unwrap_err().to_string();
        assert!(err.contains(want), "{err} should contain {want}");
    }
}

#[test]
fn inconsistent_process_events_and_stream_tables_are_refused_with_a_reason() {
    refused_with_a_reason(vec![
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
    ]);
}

#[test]
fn inconsistent_network_events_are_refused_with_a_reason() {
    refused_with_a_reason(vec![
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
    ]);
}

#[test]
fn inconsistent_file_events_are_refused_with_a_reason() {
    refused_with_a_reason(vec![
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
    ]);
}

#[test]
fn inconsistent_limits_and_samples_are_refused_with_a_reason() {
    refused_with_a_reason(vec![
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
    ]);
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
        attribution: if container {
            app()
        } else {
            Attribution {
                boot_id: 9,
                batch_seq: 1,
                ..Attribution::host("a1".into(), "h1".into())
            }
        },
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
    assert_eq!(row.attribution, app());
    assert_eq!(row.image_digest.as_deref(), Some("sha256:9f86"));
    assert_eq!(row.distro.as_deref(), Some("Debian:12"));
    assert_eq!(row.packages.len(), 1);
    assert_eq!(row.packages[0].source_name.as_deref(), Some("openssl"));
    assert_eq!(row.errors.len(), 1);
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
