//! Golden-result SQL over a fixture lake: deterministic synthetic telemetry
//! (`glasshouse_lake::fixture`) ingested through the same decoding as Kafka
//! messages, part flushed to Parquet (across an hour boundary, so into two
//! hour partitions) and part left in the in-memory tail, queried through the
//! engine every front door uses. Expected results are in
//! `tests/golden/queries.txt`; `GLASSHOUSE_BLESS=1` rewrites them (review the
//! diff). Also: compaction, retention, reopening, the read-only check, the
//! parser's message, the timeout and the memory limit.

use std::sync::Arc;
use std::time::Duration;

use glasshouse_lake::config::LakeConfig;
use glasshouse_lake::engine::{Engine, Limits, QueryError};
use glasshouse_lake::fixture;
use glasshouse_lake::lake::Lake;
use glasshouse_lake::output::{Style, render};
use glasshouse_lake::writer::Ingest;

/// 2026-01-01T10:59:59Z: the fixture's events (1 ms apart) cross 11:00.
const BASE_NS: i64 = 1_767_265_199_000_000_000;
const CONTAINERS: usize = 6;

fn identity(s: &str) -> String {
    s.to_owned()
}

/// Control characters as `\u{…}` (the CLI uses the analyzer's fuller escape).
fn escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                format!("\\u{{{:x}}}", u32::from(c))
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn limits() -> Limits {
    Limits {
        timeout: Duration::from_secs(30),
        memory_bytes: 256 << 20,
        threads: 2,
        max_depth: 256,
    }
}

/// A lake in `dir` holding the fixture: 1,600 process events (1,200 in
/// Parquet: 1,000 in hour 10, 200 in hour 11; the rest in the tail), 1,300 network events (all in Parquet),
/// two resource samples per container, two alerts and a baseline snapshot.
async fn fixture_lake(dir: &std::path::Path) -> anyhow::Result<Arc<Lake>> {
    let config = LakeConfig {
        enabled: true,
        location: dir.display().to_string(),
        ..Default::default()
    };
    let lake = Arc::new(Lake::open(&config, "golden", Duration::ZERO).await?);
    let cs = fixture::containers(CONTAINERS);
    let mut ingest = Ingest::new(lake.clone());
    for m in 0..12 {
        ingest.message(
            "glasshouse.process",
            &fixture::process_message(&cs, m * 100, 100, BASE_NS),
            None,
            0,
        )?;
    }
    lake.flush("process_events").await?;
    for m in 12..16 {
        ingest.message(
            "glasshouse.process",
            &fixture::process_message(&cs, m * 100, 100, BASE_NS),
            None,
            0,
        )?;
    }
    ingest.message(
        "glasshouse.network",
        &fixture::network_message(&cs, 0, 1300, BASE_NS),
        None,
        0,
    )?;
    lake.flush("network_events").await?;
    for step in 1..=2 {
        let t = BASE_NS + step as i64 * 1_000_000_000;
        ingest.message(
            "glasshouse.resources",
            &fixture::resource_message(&cs, step, t),
            None,
            0,
        )?;
    }
    for (event, title) in [
        (1500u64, "Interactive shell: sh -i"),
        (1207, "Shell \u{1b}[31mred\u{1b}[0m"),
    ] {
        let doc = fixture::alert_json(&cs, event, BASE_NS, title);
        ingest.message(
            "glasshouse.alerts",
            doc.as_bytes(),
            Some(b"shop/web"),
            BASE_NS + 5_000_000_000,
        )?;
    }
    let snapshot = serde_json::json!({
        "workload": "shop/web", "version": 7, "state": "stable", "state_since_ns": BASE_NS,
        "created_ns": BASE_NS - 3_600_000_000_000i64, "events": 1234, "images": ["sha256:aa"], "hosts": ["node-0"],
        "novelty": 0.001
    });
    ingest.message(
        "glasshouse.baselines",
        snapshot.to_string().as_bytes(),
        Some(b"shop/web"),
        BASE_NS,
    )?;
    ingest.message("glasshouse.baselines", b"", Some(b"gone"), BASE_NS)?;
    Ok(lake)
}

struct Case {
    name: String,
    sql: String,
    expected: String,
}

fn parse_golden(text: &str) -> Vec<Case> {
    text.split("\n====\n")
        .filter(|c| !c.trim().is_empty())
        .map(|c| {
            let (head, expected) = c.split_once("\n----\n").unwrap_or((c, ""));
            let (name, sql) = head.trim_start().split_once('\n').unwrap_or((head, ""));
            Case {
                name: name.trim_start_matches("# ").to_owned(),
                sql: sql.trim().to_owned(),
                expected: expected.to_owned(),
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_queries() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let lake = fixture_lake(dir.path()).await?;
    let engine = Engine::new(&lake, limits()).await?;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/queries.txt");
    let text = std::fs::read_to_string(&path)?;
    let cases = parse_golden(&text);
    anyhow::ensure!(cases.len() >= 8, "golden file has {} cases", cases.len());
    let bless = std::env::var_os("GLASSHOUSE_BLESS").is_some();
    let mut out = String::new();
    let mut failures = Vec::new();
    for case in &cases {
        let actual = match engine.query(&case.sql).await {
            Ok((schema, batches)) => render(&schema, &batches, Style::Table, escape)?,
            Err(e) => format!("error: {e}\n"),
        };
        if actual != case.expected {
            failures.push(format!(
                "## {}\n{}\n-- expected:\n{}-- actual:\n{}",
                case.name, case.sql, case.expected, actual
            ));
        }
        out.push_str(&format!("# {}\n{}\n----\n{}\n====\n", case.name, case.sql, actual));
    }
    if bless {
        std::fs::write(&path, out)?;
        return Ok(());
    }
    anyhow::ensure!(failures.is_empty(), "golden mismatches:\n{}", failures.join("\n"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_partitioned_by_hour_compacted_reopened_and_expired() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let lake = fixture_lake(dir.path()).await?;
    let files = lake.files("process_events");
    let hours: Vec<String> = files
        .iter()
        .map(|f| {
            f.path
                .to_string()
                .rsplit_once('/')
                .map(|(d, _)| d.to_owned())
                .unwrap_or_default()
        })
        .collect();
    anyhow::ensure!(files.len() == 2, "one file per hour: {hours:?}");
    anyhow::ensure!(
        hours[0].ends_with("process_events/date=2026-01-01/hour=10"),
        "{hours:?}"
    );
    anyhow::ensure!(
        hours[1].ends_with("process_events/date=2026-01-01/hour=11"),
        "{hours:?}"
    );
    for f in &files {
        anyhow::ensure!(
            std::path::Path::new(&format!("/{}", f.path)).exists(),
            "{} not on disk",
            f.path
        );
    }

    // Four more flushes in hour 11 (the first takes the tail too):
    // compaction merges that hour's five files into one; hour 10 keeps its
    // single file. Counts do not change.
    let cs = fixture::containers(CONTAINERS);
    let mut ingest = Ingest::new(lake.clone());
    for m in 16..20 {
        ingest.message(
            "glasshouse.process",
            &fixture::process_message(&cs, m * 100, 100, BASE_NS),
            None,
            0,
        )?;
        lake.flush("process_events").await?;
    }
    let engine = Engine::new(&lake, limits()).await?;
    let count = |engine: Engine| async move {
        let (_, b) = engine.query("SELECT count(*) AS n FROM process_events").await?;
        Ok::<String, QueryError>(render(&b[0].schema(), &b, Style::Csv, identity).unwrap_or_default())
    };
    anyhow::ensure!(count(engine.clone()).await? == "n\r\n2000\r\n");
    anyhow::ensure!(lake.files("process_events").len() == 6);
    let work = lake.compact().await?;
    anyhow::ensure!(work.files_removed == 5 && work.files_written == 1, "{work:?}");
    anyhow::ensure!(
        lake.files("process_events").len() == 2,
        "{:?}",
        lake.files("process_events")
    );
    anyhow::ensure!(
        count(engine.clone()).await? == "n\r\n2000\r\n",
        "compaction changed the rows"
    );
    // Replaced files stay on disk for queries planned before, until deleted.
    anyhow::ensure!(lake.delete_doomed(true).await == 5);
    anyhow::ensure!(count(engine.clone()).await? == "n\r\n2000\r\n");

    // A new process sees the same files (the tail of the old one is gone).
    let config = LakeConfig {
        enabled: true,
        location: dir.path().display().to_string(),
        ..Default::default()
    };
    let reopened = Arc::new(Lake::open(&config, "golden-2", Duration::ZERO).await?);
    anyhow::ensure!(reopened.files("process_events") == lake.files("process_events"));
    let e2 = Engine::new(&reopened, limits()).await?;
    anyhow::ensure!(count(e2.clone()).await? == "n\r\n2000\r\n");

    // Retention of 24 h keys on when the files were received (now), not on
    // the rows' times (long ago): a day after those times nothing expires;
    // a day after the files were written, all of them.
    let config = LakeConfig {
        retention_hours: 24,
        ..config
    };
    let aged = Arc::new(Lake::open(&config, "golden-3", Duration::ZERO).await?);
    let day_later = BASE_NS + 24 * 3_600_000_000_000 + 1_000_000_000;
    let work = aged.expire(day_later);
    anyhow::ensure!(work.files_removed == 0, "old-dated evidence expired early: {work:?}");
    let now_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
    let work = aged.expire(now_ns + 23 * 3_600_000_000_000);
    anyhow::ensure!(work.files_removed == 0, "{work:?}");
    let e3 = Engine::new(&aged, limits()).await?;
    anyhow::ensure!(count(e3.clone()).await? == "n\r\n2000\r\n");
    let files = aged.files("process_events").len() + aged.files("network_events").len();
    let work = aged.expire(now_ns + 25 * 3_600_000_000_000);
    anyhow::ensure!(work.files_removed >= files && files >= 2, "{work:?} of {files}");
    anyhow::ensure!(count(e3).await? == "n\r\n0\r\n");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_bad_sql_timeouts_and_memory_get_clear_errors() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let lake = fixture_lake(dir.path()).await?;
    let engine = Engine::new(&lake, limits()).await?;
    for sql in [
        "CREATE TABLE x AS SELECT 1",
        "INSERT INTO alerts (alert_id) VALUES ('x')",
        "DROP VIEW containers",
        "SET datafusion.execution.batch_size = 1",
    ] {
        match engine.query(sql).await {
            Err(QueryError::ReadOnly(m)) => println!("{sql}: {m}"),
            other => anyhow::bail!("{sql}: expected a read-only refusal, got {other:?}"),
        }
    }
    match engine.query("SELEC count(*) FROM process_events").await {
        Err(e @ QueryError::Invalid(_)) => {
            let m = e.to_string();
            anyhow::ensure!(
                m.contains("Expected") && m.contains("SELEC"),
                "not the parser's message: {m}"
            );
        }
        other => anyhow::bail!("expected a parse error, got {other:?}"),
    }
    match engine.query("SELECT nope FROM process_events").await {
        Err(QueryError::Invalid(m)) => anyhow::ensure!(m.contains("nope"), "{m}"),
        other => anyhow::bail!("expected a planning error, got {other:?}"),
    }
    // The engine still answers after errors.
    let (_, b) = engine.query("SELECT count(*) FROM alerts").await?;
    anyhow::ensure!(b[0].num_rows() == 1);

    let slow = Engine::new(
        &lake,
        Limits {
            timeout: Duration::from_millis(300),
            ..limits()
        },
    )
    .await?;
    let started = std::time::Instant::now();
    match slow
        .query("SELECT sum(value) FROM generate_series(1, 100000000000)")
        .await
    {
        Err(e @ QueryError::Timeout(_)) => {
            anyhow::ensure!(e.to_string().contains("timeout"), "{e}");
            anyhow::ensure!(started.elapsed() < Duration::from_secs(10), "not cancelled in time");
        }
        other => anyhow::bail!("expected a timeout, got {other:?}"),
    }
    let small = Engine::new(
        &lake,
        Limits {
            memory_bytes: 2 << 20,
            ..limits()
        },
    )
    .await?;
    match small
        .query("SELECT array_agg(value) FROM generate_series(1, 20000000)")
        .await
    {
        Err(e @ QueryError::Memory { .. }) => anyhow::ensure!(e.to_string().contains("2 MiB"), "{e}"),
        other => anyhow::bail!("expected the memory limit, got {:?}", other.map(|(s, _)| s)),
    }
    Ok(())
}

/// The SQL examples of docs/sql.md run over the fixture lake (the top talkers and
/// the alert's lineage with rows; the last hour of a fixture from January is
/// empty but must plan and run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_examples_run() -> anyhow::Result<()> {
    let doc = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/sql.md"))?;
    let section = doc.split("\nExamples:\n").nth(1).unwrap_or_default();
    let block = section
        .split("```sql\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .ok_or_else(|| anyhow::anyhow!("no sql block after \"Examples:\" in docs/sql.md"))?;
    let statements: Vec<&str> = block.split(";\n").map(str::trim).filter(|s| !s.is_empty()).collect();
    anyhow::ensure!(statements.len() == 3, "{statements:?}");
    let dir = tempfile::tempdir()?;
    let lake = fixture_lake(dir.path()).await?;
    let engine = Engine::new(&lake, limits()).await?;
    let mut rows = Vec::new();
    for sql in &statements {
        let (_, batches) = engine.query(sql).await.map_err(|e| anyhow::anyhow!("{sql}\n{e}"))?;
        rows.push(batches.iter().map(|b| b.num_rows()).sum::<usize>());
    }
    anyhow::ensure!(rows[0] == 4 && rows[2] > 0, "rows per example: {rows:?}");
    Ok(())
}

/// The tail is bounded in bytes, not only rows: large rows are written out
/// once they take `flush_bytes`, long before `flush_rows`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_of_large_rows_is_flushed_by_bytes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = LakeConfig {
        enabled: true,
        location: dir.path().display().to_string(),
        flush_rows: 1_000_000,
        flush_bytes: 1 << 20,
        flush_secs: 3600,
        ..Default::default()
    };
    let lake = Arc::new(Lake::open(&config, "bytes", Duration::ZERO).await?);
    let cs = fixture::containers(CONTAINERS);
    let mut ingest = Ingest::new(lake.clone());
    let mut messages = 0;
    while !lake.flush_due("process_events") {
        anyhow::ensure!(messages < 1000, "1,000 messages and the tail is still not due");
        ingest.message(
            "glasshouse.process",
            &fixture::process_message(&cs, messages * 100, 100, BASE_NS),
            None,
            0,
        )?;
        messages += 1;
    }
    let rows = lake.tail_rows("process_events");
    anyhow::ensure!(rows < 1_000_000, "due by bytes at {rows} rows");
    lake.flush("process_events").await?;
    anyhow::ensure!(!lake.flush_due("process_events"), "a flushed tail is not due");
    anyhow::ensure!(lake.tail_rows("process_events") == 0);
    Ok(())
}

/// Telemetry on disk is for the analyzer's user only: the lake's root and
/// every folder under it 0700, every file 0600, after flushes and a compaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lake_files_are_private() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("lake");
    let lake = fixture_lake(&root).await?;
    lake.compact().await?;
    let mode = |p: &std::path::Path| -> anyhow::Result<u32> { Ok(std::fs::metadata(p)?.permissions().mode() & 0o777) };
    anyhow::ensure!(mode(&root)? == 0o700, "root {:o}", mode(&root)?);
    let (mut files, mut dirs) = (0, 0);
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                anyhow::ensure!(mode(&path)? == 0o700, "{} is {:o}", path.display(), mode(&path)?);
                dirs += 1;
                stack.push(path);
            } else {
                anyhow::ensure!(mode(&path)? == 0o600, "{} is {:o}", path.display(), mode(&path)?);
                files += 1;
            }
        }
    }
    anyhow::ensure!(files >= 3 && dirs >= 3, "{files} files, {dirs} folders");
    println!("lake: {files} files 0600, {dirs} folders 0700");
    Ok(())
}
