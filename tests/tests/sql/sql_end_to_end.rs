//! Events of a real container become queryable through real `psql` within
//! seconds: Podman container → agent (eBPF) → aggregator → broker → analyzer
//! (its lake writer commits Iceberg tables) → query service (`[sql]`). The
//! row is counted once, from a data file in the table's hour partition; the
//! `containers` view knows the container; an alert (an interactive shell)
//! is in `alerts`, joined with the exec that raised it. The query service
//! is a process of its own: the analyzer has no SQL port.

use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use glasshouse_tests::{TEST_IMAGE, free_port, init_logging, podman};
use tokio_util::sync::CancellationToken;

/// One query through real `psql`; its output, trimmed.
fn psql(port: u16, password: &str, sql: &str) -> anyhow::Result<String> {
    let (ok, out, err) = glasshouse_tests::psql(([127, 0, 0, 1], port).into(), password, &[sql])?;
    ensure!(ok, "psql: {err}");
    Ok(out.trim().to_owned())
}

/// Polls `sql` until `done` holds for its output or `within` passes.
async fn poll(
    port: u16,
    sql: &str,
    within: Duration,
    done: impl Fn(&str) -> bool,
) -> anyhow::Result<(String, Duration)> {
    let started = Instant::now();
    loop {
        let (p, q) = (port, sql.to_owned());
        let out = tokio::task::spawn_blocking(move || psql(p, PASSWORD, &q)).await?;
        if let Ok(out) = &out
            && done(out)
        {
            return Ok((out.clone(), started.elapsed()));
        }
        ensure!(
            started.elapsed() < within,
            "not within {within:?}: {sql}\nlast answer: {out:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

const PASSWORD: &str = "e2e-sql-password";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn container_events_are_queryable_through_psql_within_seconds() -> anyhow::Result<()> {
    let mut stack = glasshouse_tests::Stack::builder()
        .aggregator("[topics]\npartitions = 3")
        .start()
        .await?;
    let brokers = stack.broker.bootstrap();
    let cancel = CancellationToken::new();

    let lake_dir = tempfile::tempdir()?;
    let mut password_file = tempfile::NamedTempFile::new()?;
    writeln!(password_file, "{PASSWORD}")?;
    let (pg_port, flight_port) = (free_port()?, free_port()?);
    let lake = format!(
        "[lake]\nenabled = true\nlocation = \"{}\"\nflush_secs = 2\n",
        lake_dir.path().display()
    );
    let analyzer_config: glasshouse_analyzer::Config = glasshouse_runtime::service::parse_config(
        "test",
        &format!(
            "brokers = \"{brokers}\"\ngroup = \"sql-e2e\"\nview = false\n[topics]\npartitions = 3\n\
             [analysis]\nstartup_secs = 1\n{lake}"
        ),
    )?;
    let analyzer = tokio::spawn(glasshouse_analyzer::run(
        analyzer_config,
        std::io::sink(),
        cancel.clone(),
    ));
    let query_config: glasshouse_lake::query::QueryConfig = glasshouse_runtime::service::parse_config(
        "test",
        &format!(
            "{lake}[sql]\npg_listen = \"127.0.0.1:{pg_port}\"\nflight_listen = \"127.0.0.1:{flight_port}\"\n\
             password_file = \"{}\"",
            password_file.path().display()
        ),
    )?;
    let query = tokio::spawn(glasshouse_lake::query::run(query_config, cancel.clone()));

    stack
        .start_agent("sql-e2e-agent", "sensor = \"bpf\"\nsample_interval_ms = 1000")
        .await?;
    glasshouse_tests::wait_for_port(format!("127.0.0.1:{pg_port}").parse()?, Duration::from_secs(60))?;

    let name = format!("gh-sql-{}", free_port()?);
    let started = Instant::now();
    {
        let name = name.clone();
        tokio::task::spawn_blocking(move || {
            podman(&[
                "run",
                "-d",
                "--name",
                &name,
                TEST_IMAGE,
                "/bin/sh",
                "-c",
                "cat /etc/hostname; while :; do sleep 1; done",
            ])
        })
        .await??;
    }
    let result = async {
        let execs = format!(
            "SELECT count(*) FROM process_events WHERE container_name = '{name}' AND kind = 'exec' AND argv[1] = 'cat'"
        );
        let (out, took) = poll(pg_port, &execs, Duration::from_secs(60), |o| o == "1").await?;
        let latency = started.elapsed();
        println!("exec of cat queryable through psql {latency:?} after podman run (last poll {took:?})");
        ensure!(out == "1");
        // From a data file of the table's hour partition in the warehouse.
        let files = walk(&lake_dir.path().join("warehouse"));
        ensure!(
            files.iter().any(|f| {
                let f = f.to_string_lossy();
                f.contains("/process_events/data/") && f.contains("hour=")
            }),
            "no data file of process_events in an hour partition: {files:?}"
        );

        // The containers view knows it, with its workload and a resource sample.
        let view =
            format!("SELECT workload_id, image, memory_bytes > 0 FROM containers WHERE container_name = '{name}'");
        let (row, _) = poll(pg_port, &view, Duration::from_secs(30), |o| o.ends_with("|t")).await?;
        ensure!(row == format!("localhost/glasshouse-test|{TEST_IMAGE}|t"), "{row}");

        // An interactive shell raises an alert; it is in `alerts`, joined
        // with the exec that raised it.
        let n = name.clone();
        tokio::task::spawn_blocking(move || podman(&["exec", &n, "/bin/sh", "-i"])).await??;
        let join = format!(
            "SELECT a.rule, p.path FROM alerts a JOIN process_events p \
             ON p.container_id = a.container_id AND p.pid = a.pid AND p.kind = 'exec' \
             WHERE a.container_name = '{name}' AND a.rule = 'rule.interactive_shell'"
        );
        let (row, _) = poll(pg_port, &join, Duration::from_secs(60), |o| !o.is_empty()).await?;
        ensure!(row.starts_with("rule.interactive_shell|/bin/"), "{row}");
        anyhow::Ok(())
    }
    .await;
    let _ = podman(&["rm", "-f", "-t", "0", &name]);
    stack.stop().await?;
    cancel.cancel();
    analyzer.await?.context("analyzer")?;
    query.await?.context("query service")?;
    result
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
    }
    out
}

/// After SIGKILL the lake writer resumes: the analyzer is killed once its
/// rows are committed and restarted, and the rows sent after the restart
/// are queryable through psql (a query-service process) with no event lost
/// and none twice. The writer is the group's only member, so its death
/// leaves tansu's group without assignments, and the restarted writer must
/// notice and join again (docs/lake.md); the time it took is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_lake_writer_resumes_after_sigkill_with_no_event_lost_or_twice() -> anyhow::Result<()> {
    use glasshouse_tests::wire;
    init_logging();
    let broker = glasshouse_tests::Broker::start()?;
    let brokers = broker.bootstrap();
    let cancel = CancellationToken::new();
    let (ingest, aggregator) = glasshouse_tests::spawn_aggregator(&brokers, &cancel).await?;
    let endpoint = format!("http://{ingest}");
    let lake_dir = tempfile::tempdir()?;
    let mut password_file = tempfile::NamedTempFile::new()?;
    writeln!(password_file, "{PASSWORD}")?;
    let pg_port = free_port()?;
    let lake = format!(
        "[lake]\nenabled = true\nlocation = \"{}\"\nflush_secs = 1\n",
        lake_dir.path().display()
    );
    let config = format!(
        "brokers = \"{brokers}\"\ngroup = \"lake-kill\"\ninstance_id = \"lake-kill-1\"\nview = false\n\
         session_timeout_ms = 10000\n[topics]\npartitions = 3\n{lake}"
    );
    let _query = glasshouse_tests::ServiceProcess::query(&format!(
        "{lake}[sql]\npg_listen = \"127.0.0.1:{pg_port}\"\npassword_file = \"{}\"",
        password_file.path().display()
    ))?;
    let send = |agent: &'static str| {
        let endpoint = endpoint.clone();
        async move {
            let channel = tonic::transport::Endpoint::from_shared(endpoint)?.connect().await?;
            let mut frames = vec![wire::hello(agent)];
            frames.extend((1..=5).map(|seq| wire::batch(seq, 10, seq == 1)));
            let acks = wire::exchange(channel, None, frames, 5).await?;
            ensure!(acks.len() == 5, "{agent}: acks {acks:?}");
            anyhow::Ok(())
        }
    };
    let distinct = "SELECT count(DISTINCT agent_id || '/' || CAST(batch_seq AS VARCHAR) || '/' || CAST(event_index AS VARCHAR)) FROM process_events";

    let mut analyzer = glasshouse_tests::AnalyzerProcess::start(&config)?;
    glasshouse_tests::wait_for_port(format!("127.0.0.1:{pg_port}").parse()?, Duration::from_secs(60))?;
    send("before-kill").await?;
    // Queryable means committed to the table, with its offsets.
    poll(pg_port, distinct, Duration::from_secs(60), |o| o == "50").await?;
    analyzer.kill()?;

    let restarted = Instant::now();
    let _analyzer = glasshouse_tests::AnalyzerProcess::start(&config)?;
    send("after-kill").await?;
    // A liveness bound, not a timing assertion: the figure is printed.
    let (_, took) = poll(pg_port, distinct, Duration::from_secs(90), |o| o == "100").await?;
    let resumed = restarted.elapsed();
    let rows =
        tokio::task::spawn_blocking(move || psql(pg_port, PASSWORD, "SELECT count(*) FROM process_events")).await??;
    println!(
        "lake writer after SIGKILL: the rows sent after the restart queryable {resumed:?} after it (last poll {took:?}); 100 distinct events, {rows} rows"
    );
    ensure!(
        rows == "100",
        "{rows} rows for 100 events: a replayed range was appended twice"
    );
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(20), aggregator).await???;
    Ok(())
}

/// A 5,000,000-row result through real `psql`, while four clients that asked
/// for as much never read theirs: the results are streamed, so the query
/// service's peak memory grows by less than `memory_limit_mib` (256 here);
/// the stalled clients are cut off at the write timeout and a normal query
/// is served afterwards. (Before the results were streamed, one such result
/// took ~950 MiB.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_results_stream_within_the_memory_limit() -> anyhow::Result<()> {
    init_logging();
    const ROWS: u64 = 5_000_000;
    const LIMIT_MIB: u64 = 256;
    let lake_dir = tempfile::tempdir()?;
    let mut password_file = tempfile::NamedTempFile::new()?;
    writeln!(password_file, "{PASSWORD}")?;
    let pg_port = free_port()?;
    let config = format!(
        "[lake]\nlocation = \"{}\"\n\
         [sql]\npg_listen = \"127.0.0.1:{pg_port}\"\npassword_file = \"{}\"\nmemory_limit_mib = {LIMIT_MIB}\n\
         write_timeout_secs = 5",
        lake_dir.path().display(),
        password_file.path().display()
    );
    let service = glasshouse_tests::ServiceProcess::query(&config)?;
    glasshouse_tests::wait_for_port(format!("127.0.0.1:{pg_port}").parse()?, Duration::from_secs(60))?;
    ensure!(psql(pg_port, PASSWORD, "SELECT 1")? == "1");
    let idle = service.peak_rss()?;
    let query = format!("SELECT value, 'padding padding padding padding' AS pad FROM generate_series(1, {ROWS})");

    // Four clients that send the query and never read.
    let mut spec = tempfile::NamedTempFile::new()?;
    let body = serde_json::json!({"host": "127.0.0.1", "port": pg_port, "user": "glasshouse",
        "password": PASSWORD, "query": query});
    spec.write_all(body.to_string().as_bytes())?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/pg_stalled_reader.py");
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let mut child = std::process::Command::new("python3")
            .arg(&script)
            .arg(spec.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        let stdout = child.stdout.take().context("stalled reader stdout")?;
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
        ensure!(
            line.contains("sent"),
            "a stalled reader did not send its query: {line:?}"
        );
        stalled.push(child);
    }

    // And one that reads all of it, counted as it arrives.
    let started = Instant::now();
    let mut reader = std::process::Command::new("psql")
        .env("PGPASSWORD", PASSWORD)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &pg_port.to_string(),
            "-U",
            "glasshouse",
            "-d",
            "glasshouse",
        ])
        .args(["-At", "-X", "-c", &query])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let out = reader.stdout.take().context("psql stdout")?;
    let lines = tokio::task::spawn_blocking(move || {
        std::io::BufRead::lines(std::io::BufReader::new(out))
            .map_while(Result::ok)
            .count()
    })
    .await?;
    ensure!(reader.wait()?.success(), "psql failed");
    let took = started.elapsed();
    ensure!(lines as u64 == ROWS, "{lines} rows of {ROWS}");
    for mut child in stalled {
        drop(child.stdin.take());
        child.wait()?;
    }
    let peak = service.peak_rss()?;
    let grew = peak.saturating_sub(idle);
    println!(
        "5,000,000 rows through psql in {took:?} beside 4 stalled readers of the same: query service peak RSS {} MiB \
         ({} MiB at rest, +{} MiB; memory_limit_mib {LIMIT_MIB})",
        peak >> 20,
        idle >> 20,
        grew >> 20
    );
    ensure!(
        grew < LIMIT_MIB << 20,
        "peak RSS grew by {} MiB, over memory_limit_mib = {LIMIT_MIB}",
        grew >> 20
    );
    ensure!(psql(pg_port, PASSWORD, "SELECT count(*) FROM generate_series(1, 10)")? == "10");
    Ok(())
}
