//! Network events through the real ingest path: the real agent stream client
//! (fed a synthetic batch holding process AND network events, IPv4 and IPv6,
//! in a container and on the host) streams to an in-process aggregator; an
//! independent consumer reads `glasshouse.network` back and finds every row
//! resolved: addresses as text, ports, byte counts, the event index after the
//! batch's process events, the workload id as the Kafka key. The process
//! events of the same batch reach `glasshouse.process`, and each batch is
//! acknowledged only once all its rows of both types are in Kafka.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use glasshouse_agent::client;
use glasshouse_agent::pipeline::{Container, NetworkEvent};
use glasshouse_agent::sensor::NetworkRaw;
use glasshouse_proto::network::{self, Family, Kind, Row};
use glasshouse_proto::record::Attribution;
use glasshouse_proto::record::{HEADER_RECORD_TYPE, RecordType};
use glasshouse_proto::{ipc, v1};
use glasshouse_tests::{Stack, free_port, simulated};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const AGENT: &str = "net-sim";
const BOOT: u64 = 5;
const WORKLOAD: &str = "localhost/net-sim";
const PROCESS_EVENTS: usize = 3;
/// Time of the first event of batch 1 (see `simulated::batch`).
static T0: std::sync::LazyLock<i64> = std::sync::LazyLock::new(|| glasshouse_tests::epoch() + 1000);

fn event(
    container: Option<&Arc<Container>>,
    time_unix_ns: i64,
    kind: v1::NetworkEventKind,
    local: &str,
    remote: Option<&str>,
    bytes: (u64, u64),
) -> anyhow::Result<NetworkEvent> {
    Ok(NetworkEvent {
        container: container.cloned(),
        raw: NetworkRaw {
            time_unix_ns,
            pid: 4242,
            kind,
            local: local.parse()?,
            remote: remote.map(str::parse::<SocketAddr>).transpose()?,
            bytes_sent: bytes.0,
            bytes_received: bytes.1,
            cgroup_id: 0,
            pre_existing: false,
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn network_events_reach_their_topic_resolved_and_keyed() -> anyhow::Result<()> {
    let mut stack = Stack::builder().no_containers().start().await?;
    let broker = &stack.broker;
    let endpoint = stack.endpoint();

    // Batch 1: three execs, then a container's connection (v4) from connect
    // to close, a host listener (v6) and an accept (v6) in the container.
    // Batch 2: network events only (its time chain starts at the first one).
    use v1::NetworkEventKind as K;
    let c = simulated::container(1, WORKLOAD);
    let mut first = simulated::batch(&c, 1, PROCESS_EVENTS);
    first.network = vec![
        event(
            Some(&c),
            *T0 + 10,
            K::Connect,
            "10.0.0.2:43122",
            Some("93.184.216.34:443"),
            (0, 0),
        )?,
        event(
            Some(&c),
            *T0 + 20,
            K::Close,
            "10.0.0.2:43122",
            Some("93.184.216.34:443"),
            (3000, 500),
        )?,
        // Found open at agent start.
        NetworkEvent {
            raw: NetworkRaw {
                pre_existing: true,
                ..event(None, *T0 + 5, K::Listen, "[::]:8080", None, (0, 0))?.raw
            },
            container: None,
        },
        event(
            Some(&c),
            *T0 + 30,
            K::Accept,
            "[fd00::3]:8080",
            Some("[fd00::2]:50000"),
            (0, 0),
        )?,
    ];
    let mut second = simulated::batch(&c, 2, 0);
    second.network = vec![event(
        Some(&c),
        *T0 + 5000,
        K::ConnectFailed,
        "10.0.0.2:43124",
        Some("10.0.0.9:5432"),
        (0, 0),
    )?];
    let (tx, rx) = mpsc::channel(2);
    tx.send(first).await?;
    tx.send(second).await?;
    drop(tx);
    let agent = simulated::agent(AGENT, BOOT, vec![endpoint], 8);
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        client::run(agent, rx, CancellationToken::new()),
    )
    .await?;
    ensure!(
        (report.batches_acked, report.batches_unacked, report.batches_refused) == (2, 0, 0),
        "agent: {report:?}"
    );

    // Acknowledged means in Kafka: every row is there now.
    let rows = read_network(&broker.bootstrap(), 5, Duration::from_secs(30)).await?;
    let host_workload = format!("host:{AGENT}-host");
    let container_id = format!("{:064x}", 1);
    let row = |batch_seq: u64, event_index: u32, time_unix_ns: i64, kind: Kind, in_container: bool| Row {
        attribution: Attribution {
            agent_id: AGENT.into(),
            boot_id: BOOT,
            batch_seq,
            host: format!("{AGENT}-host").into(),
            container_id: in_container.then(|| container_id.as_str().into()),
            image: in_container.then(|| format!("{WORKLOAD}:1").into()),
            workload_id: if in_container { WORKLOAD } else { &host_workload }.into(),
            ..Default::default()
        },
        event_index,
        time_unix_ns,
        kind,
        pid: 4242,
        family: Family::Ipv4,
        local_addr: "10.0.0.2".into(),
        local_port: 43122,
        remote_addr: Some("93.184.216.34".into()),
        remote_port: 443,
        bytes_sent: 0,
        bytes_received: 0,
        count: 1,
        pre_existing: false,
        remote_scope: network::Scope::Public,
    };
    let first_net = u32::try_from(PROCESS_EVENTS)?;
    let expected = vec![
        row(1, first_net, *T0 + 10, Kind::Connect, true),
        Row {
            bytes_sent: 3000,
            bytes_received: 500,
            ..row(1, first_net + 1, *T0 + 20, Kind::Close, true)
        },
        Row {
            family: Family::Ipv6,
            local_addr: "::".into(),
            local_port: 8080,
            remote_addr: None,
            remote_port: 0,
            pre_existing: true,
            remote_scope: network::Scope::None,
            ..row(1, first_net + 2, *T0 + 5, Kind::Listen, false)
        },
        Row {
            family: Family::Ipv6,
            local_addr: "fd00::3".into(),
            local_port: 8080,
            remote_addr: Some("fd00::2".into()),
            remote_port: 50000,
            remote_scope: network::Scope::Private,
            ..row(1, first_net + 3, *T0 + 30, Kind::Accept, true)
        },
        Row {
            local_port: 43124,
            remote_addr: Some("10.0.0.9".into()),
            remote_port: 5432,
            remote_scope: network::Scope::Private,
            ..row(2, 0, *T0 + 5000, Kind::ConnectFailed, true)
        },
    ];
    assert_eq!(rows, expected);

    // The process events of batch 1 went to their own topic, indexes 0..3.
    let ids = simulated::collect_ids(&broker.bootstrap(), PROCESS_EVENTS, Duration::from_secs(30)).await?;
    let mut ids: Vec<_> = ids.into_keys().collect();
    ids.sort();
    let want: Vec<_> = (0..first_net).map(|i| (AGENT.to_owned(), BOOT, 1, i)).collect();
    assert_eq!(ids, want);

    stack.stop().await?;
    Ok(())
}

/// Reads `glasshouse.network` from the start until `expected` rows arrived;
/// returns them ordered by event id. Checks every message's key is its rows'
/// workload id and its record-type header says `network`.
async fn read_network(brokers: &str, expected: usize, within: Duration) -> anyhow::Result<Vec<Row>> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("network-{}", free_port()?))
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[RecordType::Network.topic()])?;
    let deadline = Instant::now() + within;
    let mut rows = Vec::new();
    while rows.len() < expected {
        ensure!(
            Instant::now() < deadline,
            "only {} of {expected} network rows after {within:?}: {rows:#?}",
            rows.len()
        );
        let Ok(msg) = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await else {
            continue;
        };
        let msg = msg?;
        let record_type = msg
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == HEADER_RECORD_TYPE))
            .and_then(|h| h.value);
        ensure!(
            record_type == Some(b"network".as_slice()),
            "record type header {record_type:?}"
        );
        let batch = ipc::decode(msg.payload().context("empty payload")?)?;
        let key = msg.key().map(|k| String::from_utf8_lossy(k).into_owned());
        for row in network::read_rows(&batch)? {
            ensure!(
                key.as_deref() == Some(&*row.attribution.workload_id),
                "key {key:?} is not the workload id of {row:?}"
            );
            rows.push(row);
        }
    }
    consumer.unsubscribe();
    rows.sort_by_key(|r| (r.attribution.batch_seq, r.event_index));
    Ok(rows)
}
