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
use std::time::Duration;

use anyhow::{Context, ensure};
use glasshouse_proto::record::RecordType;
use glasshouse_proto::{network, process};
use glasshouse_tests::stack::wait_listening;
use glasshouse_tests::{Stack, TEST_IMAGE, free_port, podman};

#[derive(Default)]
struct Seen {
    procs: Vec<process::Row>,
    nets: Vec<network::Row>,
}

impl Seen {
    fn take(&mut self, record: RecordType, batch: &arrow_array::RecordBatch) -> anyhow::Result<()> {
        match record {
            RecordType::Network => self.nets.extend(network::read_rows(batch)?),
            _ => self.procs.extend(process::read_rows(batch)?),
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn running_containers_sockets_and_exec_ins_are_reported() -> anyhow::Result<()> {
    let mut stack = Stack::builder().start().await?;

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
    // Listening before the agent starts.
    wait_listening(&server, 9000, Duration::from_secs(10))?;

    stack.start_agent("start-agent", "sensor = \"bpf\"").await?;
    let ours = |id: &Option<process::Str>| id.as_deref() == Some(server_id.as_str());
    // The agent is watching once its start-up scan reported the listener
    // (and handed it to the kernel side, which happens before the row).
    let mut tail = stack.tail(&[RecordType::Process, RecordType::Network])?;
    let mut seen = Seen::default();
    let scanned = tail
        .until(Duration::from_secs(30), |record, batch| {
            seen.take(record, batch)?;
            Ok(seen
                .nets
                .iter()
                .any(|r| ours(&r.attribution.container_id) && r.pre_existing))
        })
        .await?;
    ensure!(scanned, "no pre-existing listener after 30 s: {:#?}", seen.nets);

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

    let complete = |seen: &Seen| {
        seen.procs
            .iter()
            .any(|r| ours(&r.attribution.container_id) && r.exec_in && r.argv.first().map(|a| &**a) == Some("cat"))
            && seen
                .nets
                .iter()
                .any(|r| ours(&r.attribution.container_id) && r.kind == network::Kind::Accept)
    };
    let done = tail
        .until(Duration::from_secs(30), |record, batch| {
            seen.take(record, batch)?;
            Ok(complete(&seen))
        })
        .await?;
    drop(tail);
    let Seen { procs, nets } = seen;
    ensure!(
        done,
        "incomplete after 30 s:\nprocess rows {procs:#?}\nnetwork rows {nets:#?}"
    );

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

    stack.stop().await
}
