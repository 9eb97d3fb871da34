//! What the agent reports about a container that was already running when it
//! started, and about processes entered into a container from outside: a
//! container listening on a port starts first; then the agent (eBPF sensor)
//! starts and must report the container's processes as `running` and its
//! listening socket as pre-existing; a `podman exec` into it must be marked
//! `exec_in` (while the container's own processes are not); and a connection
//! from another container to the pre-existing listener must be reported as an
//! accept attributed to the listening container (the kernel side learnt the
//! listener from the agent's scan of `/proc`).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use glasshouse_proto::record::RecordType;
use glasshouse_proto::{ipc, network, process};
use glasshouse_tests::{Broker, PodmanService, TEST_IMAGE, free_port, init_logging, podman, require_test_image};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn running_containers_sockets_and_exec_ins_are_reported() -> anyhow::Result<()> {
    init_logging();
    require_test_image()?;
    let broker = Broker::start()?;
    let podman_api = PodmanService::start()?;
    let cancel = CancellationToken::new();

    // Before the agent: a container whose shell runs a listener on 9000.
    let tag = free_port()?;
    let (server, client) = (format!("gh-start-srv-{tag}"), format!("gh-start-cli-{tag}"));
    let server_id = podman(&[
        "run",
        "-d",
        "--name",
        &server,
        TEST_IMAGE,
        "sh",
        "-c",
        "sleep 120 | nc -l -p 9000 > /dev/null",
    ])?;
    let server_ip = podman(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", &server])?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let ingest = listener.local_addr()?;
    let aggregator_config: glasshouse_aggregator::Config = glasshouse_proto::service::parse_config(
        "test",
        &format!("brokers = \"{}\"\nflush_max_age_ms = 20", broker.bootstrap()),
    )?;
    let aggregator = tokio::spawn(glasshouse_aggregator::serve(
        aggregator_config,
        listener,
        cancel.clone(),
    ));
    let agent_config: glasshouse_agent::Config = glasshouse_proto::service::parse_config(
        "test",
        &format!(
            "agent_id = \"start-agent\"\nspool = false\nsensor = \"bpf\"\naggregators = [\"http://{ingest}\"]\nruntime_sockets = [\"{}\"]\nbatch_max_age_ms = 50",
            podman_api.socket.display()
        ),
    )?;
    let agent = tokio::spawn(glasshouse_agent::run(agent_config, cancel.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    ensure!(!agent.is_finished(), "agent exited early: {:?}", agent.await);

    // An exec-in, then a container process of its own, then a client.
    let result = tokio::task::spawn_blocking({
        let (server, client, ip) = (server.clone(), client.clone(), server_ip.clone());
        move || {
            podman(&["exec", &server, "cat", "/etc/hostname"])?;
            let client_id = podman(&[
                "run",
                "--name",
                &client,
                TEST_IMAGE,
                "sh",
                "-c",
                &format!("echo hello | nc {ip} 9000"),
            ])?;
            anyhow::Ok(client_id)
        }
    })
    .await?;
    let _ = podman(&["rm", "-f", "-t", "0", &server, &client]);
    let client_id = result?;

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", format!("start-{}", free_port()?))
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[RecordType::Process.topic(), RecordType::Network.topic()])?;
    let ours = |id: &Option<process::Str>| id.as_deref() == Some(server_id.as_str());
    let mut procs: Vec<process::Row> = Vec::new();
    let mut nets: Vec<network::Row> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let complete = |procs: &[process::Row], nets: &[network::Row]| {
        procs
            .iter()
            .any(|r| ours(&r.attribution.container_id) && r.exec_in && r.argv.first().map(|a| &**a) == Some("cat"))
            && nets
                .iter()
                .any(|r| ours(&r.attribution.container_id) && r.kind == network::Kind::Accept)
            && nets.iter().any(|r| ours(&r.attribution.container_id) && r.pre_existing)
    };
    while !complete(&procs, &nets) {
        ensure!(
            Instant::now() < deadline,
            "incomplete after 30 s:\nprocess rows {procs:#?}\nnetwork rows {nets:#?}"
        );
        let Ok(msg) = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await else {
            continue;
        };
        let msg = msg?;
        let batch = ipc::decode(msg.payload().context("empty payload")?)?;
        if msg.topic() == RecordType::Network.topic() {
            nets.extend(network::read_rows(&batch)?);
        } else {
            procs.extend(process::read_rows(&batch)?);
        }
    }
    // Leave the group and close while the broker runs (a late close waits it out).
    consumer.unsubscribe();
    drop(consumer);

    // The shell and nc of the container were running before the agent.
    let running: HashSet<&str> = procs
        .iter()
        .filter(|r| ours(&r.attribution.container_id) && r.kind == process::Kind::Running)
        .filter_map(|r| r.argv.first().map(|a| &**a))
        .collect();
    for want in ["sh", "nc", "sleep"] {
        ensure!(running.contains(want), "no running {want} in {running:?}: {procs:#?}");
    }
    // Only the exec from outside is an exec-in (its exit is marked too); the
    // container's own processes are not.
    let exec_ins: Vec<_> = procs
        .iter()
        .filter(|r| r.exec_in && r.kind == process::Kind::Exec)
        .collect();
    ensure!(
        exec_ins
            .iter()
            .all(|r| ours(&r.attribution.container_id) && r.argv.first().map(|a| &**a) == Some("cat")),
        "unexpected exec-ins: {exec_ins:#?}"
    );
    ensure!(
        !procs
            .iter()
            .any(|r| r.exec_in && r.attribution.container_id.as_deref() == Some(client_id.as_str())),
        "the client container's own processes are not exec-ins"
    );
    // The listener was found open; the later connection is accepted by nc.
    let nc_pid = procs
        .iter()
        .find(|r| {
            ours(&r.attribution.container_id)
                && r.kind == process::Kind::Running
                && r.argv.first().map(|a| &**a) == Some("nc")
        })
        .map(|r| r.pid)
        .context("no running nc")?;
    let listen = nets
        .iter()
        .find(|r| ours(&r.attribution.container_id) && r.pre_existing)
        .context("no pre-existing socket")?;
    assert_eq!(
        (listen.kind, listen.local_port, listen.pid),
        (network::Kind::Listen, 9000, nc_pid)
    );
    let accept = nets
        .iter()
        .find(|r| ours(&r.attribution.container_id) && r.kind == network::Kind::Accept)
        .context("no accept")?;
    assert_eq!(
        (accept.local_port, accept.pid, accept.pre_existing),
        (9000, nc_pid, false)
    );
    assert_eq!(accept.local_addr.as_ref(), server_ip.as_str());

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(20), agent).await???;
    tokio::time::timeout(Duration::from_secs(20), aggregator).await???;
    drop(podman_api);
    drop(broker);
    Ok(())
}
