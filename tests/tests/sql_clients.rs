//! The SQL front doors through real clients, over the fixture lake
//! (`glasshouse_lake::fixture`) served in-process on loopback ports: `psql`
//! (simple query protocol), psycopg 3 (extended protocol, `tests/sql/psycopg_client.py`),
//! the ADBC Flight SQL driver (`tests/sql/adbc_client.py`) and the
//! `glasshouse sql` CLI. Each client's rows must equal DataFusion's own for
//! the same query; a wrong or missing password or token is refused on both
//! ports; a bad query gets the parser's message and the connection keeps
//! serving; writes are refused as read-only; a query past the timeout is
//! cancelled with an error naming it; hostile strings come out escaped.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use glasshouse_lake::config::LakeConfig;
use glasshouse_lake::engine::{Engine, Limits};
use glasshouse_lake::lake::Lake;
use glasshouse_lake::output::{Style, render};
use glasshouse_lake::writer::Ingest;
use glasshouse_lake::{fixture, flight, pg};
use glasshouse_tests::{init_logging, manifest_dir, psql, workspace_binary};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const PASSWORD: &str = "s3cret-pw";
const BASE_NS: i64 = 1_767_265_199_000_000_000;

struct Servers {
    pg: SocketAddr,
    flight: SocketAddr,
    engine: Engine,
}

async fn fixture_lake(dir: &std::path::Path) -> anyhow::Result<Arc<Lake>> {
    let config = LakeConfig {
        enabled: true,
        location: dir.display().to_string(),
        ..Default::default()
    };
    let lake = Arc::new(Lake::open(&config, "clients", Duration::ZERO).await?);
    let cs = fixture::containers(6);
    let mut ingest = Ingest::new(lake.clone());
    for m in 0..8 {
        ingest.message(
            "glasshouse.process",
            &fixture::process_message(&cs, m * 100, 100, BASE_NS),
            None,
            0,
        )?;
        ingest.message(
            "glasshouse.network",
            &fixture::network_message(&cs, m * 100, 100, BASE_NS),
            None,
            0,
        )?;
    }
    lake.flush("network_events").await?;
    let hostile = "Shell \u{1b}[2J\nALERT forged | x";
    let doc = fixture::alert_json(&cs, 700, BASE_NS, hostile);
    ingest.message("glasshouse.alerts", doc.as_bytes(), Some(b"shop/web"), BASE_NS)?;
    Ok(lake)
}

async fn serve(lake: &Arc<Lake>, timeout: Duration, cancel: &CancellationToken) -> anyhow::Result<Servers> {
    let engine = Engine::new(
        lake,
        Limits {
            timeout,
            memory_bytes: 256 << 20,
            threads: 2,
        },
    )
    .await?;
    let pg_listener = pg::bind("127.0.0.1:0".parse()?).await?;
    let flight_listener = flight::bind("127.0.0.1:0".parse()?).await?;
    let servers = Servers {
        pg: pg_listener.local_addr()?,
        flight: flight_listener.local_addr()?,
        engine: engine.clone(),
    };
    let creds = pg::Credentials {
        user: "glasshouse".into(),
        password: PASSWORD.into(),
    };
    tokio::spawn(pg::serve(pg_listener, engine.clone(), creds, cancel.clone()));
    tokio::spawn(flight::serve(flight_listener, engine, PASSWORD.into(), cancel.clone()));
    Ok(servers)
}

fn python(script: &str, spec: &Value) -> anyhow::Result<Vec<Value>> {
    let mut f = tempfile::NamedTempFile::new()?;
    f.write_all(spec.to_string().as_bytes())?;
    let out = Command::new("python3")
        .arg(manifest_dir().join("sql").join(script))
        .arg(f.path())
        .output()
        .with_context(|| format!("running python3 tests/sql/{script}"))?;
    ensure!(
        out.status.success(),
        "{script} failed (setup.sh installs psycopg[binary], adbc-driver-flightsql, pyarrow): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("{script} printed {l}")))
        .collect()
}

/// DataFusion's own rows for `sql`, each cell as text (JSON numbers and
/// strings alike), to compare with what a client received.
async fn direct_rows(engine: &Engine, sql: &str) -> anyhow::Result<Vec<Vec<String>>> {
    let (schema, batches) = engine.query(sql).await?;
    let json = render(&schema, &batches, Style::Json, |s| s.to_owned())?;
    json.lines()
        .map(|l| {
            let v: serde_json::Map<String, Value> = serde_json::from_str(l)?;
            Ok(schema.fields().iter().map(|f| text(&v[f.name()])).collect())
        })
        .collect()
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn rows_of(result: &Value) -> anyhow::Result<Vec<Vec<String>>> {
    let rows = result["rows"]
        .as_array()
        .with_context(|| format!("no rows: {result}"))?;
    Ok(rows
        .iter()
        .map(|r| r.as_array().map(|c| c.iter().map(text).collect()).unwrap_or_default())
        .collect())
}

const TOP_TALKERS: &str = "SELECT workload_id, count(*) AS connections, sum(bytes_sent) AS bytes_sent, \
    sum(bytes_received) AS bytes_received FROM network_events GROUP BY workload_id ORDER BY bytes_sent DESC";
const EXECS_PER_IMAGE: &str =
    "SELECT image, count(*) AS execs FROM process_events WHERE kind = 'exec' GROUP BY image ORDER BY execs DESC, image";
const SLOW: &str = "SELECT sum(value) FROM generate_series(1, 100000000000)";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sql_clients_query_refuse_and_recover() -> anyhow::Result<()> {
    init_logging();
    let dir = tempfile::tempdir()?;
    let lake = fixture_lake(dir.path()).await?;
    let cancel = CancellationToken::new();
    let s = serve(&lake, Duration::from_secs(60), &cancel).await?;
    let talkers = direct_rows(&s.engine, TOP_TALKERS).await?;
    let per_image = direct_rows(&s.engine, EXECS_PER_IMAGE).await?;
    ensure!(talkers.len() == 4 && per_image.len() > 1, "{talkers:?} {per_image:?}");

    // psql, simple query protocol: the same rows as DataFusion directly.
    let pg = s.pg;
    let (ok, out, err) = tokio::task::spawn_blocking(move || psql(pg, PASSWORD, &[TOP_TALKERS])).await??;
    ensure!(ok, "psql failed: {err}");
    let got: Vec<Vec<String>> = out.lines().map(|l| l.split('|').map(str::to_owned).collect()).collect();
    ensure!(got == talkers, "psql:\n{out}\nDataFusion: {talkers:?}");

    // A wrong password is refused; without one, the server asks for it.
    for (password, refusal) in [
        ("wrong", "password authentication failed"),
        ("", "no password supplied"),
    ] {
        let (ok, _, err) = tokio::task::spawn_blocking(move || psql(pg, password, &["SELECT 1"])).await??;
        ensure!(
            !ok && err.to_lowercase().contains(refusal),
            "password {password:?}: {err}"
        );
    }
    // Bad SQL: the parser's message; a write: read-only; the same
    // connection then answers the next query.
    let (_, out, err) = tokio::task::spawn_blocking(move || {
        psql(
            pg,
            PASSWORD,
            &["SELEC 1", "CREATE TABLE t AS SELECT 1", "SELECT count(*) FROM alerts"],
        )
    })
    .await??;
    ensure!(
        err.contains("Expected") && err.contains("SELEC"),
        "parser message missing: {err}"
    );
    ensure!(err.contains("read-only"), "write not refused as read-only: {err}");
    ensure!(out.trim() == "1", "the connection did not keep serving: {out:?} {err}");

    // psycopg 3 (extended protocol): same rows, refusals, recovery.
    let spec = serde_json::json!({"host": "127.0.0.1", "port": s.pg.port(), "user": "glasshouse", "password": PASSWORD,
        "queries": [TOP_TALKERS, "SELECT nope FROM process_events", EXECS_PER_IMAGE, "DROP VIEW containers"]});
    let r = tokio::task::spawn_blocking(move || python("psycopg_client.py", &spec)).await??;
    ensure!(r.len() == 4, "{r:?}");
    ensure!(rows_of(&r[0])? == talkers, "psycopg: {} vs {talkers:?}", r[0]);
    ensure!(r[1]["error"].as_str().is_some_and(|e| e.contains("nope")), "{}", r[1]);
    ensure!(r[1]["sqlstate"] == "42601", "{}", r[1]);
    ensure!(rows_of(&r[2])? == per_image, "psycopg: {} vs {per_image:?}", r[2]);
    ensure!(r[3]["sqlstate"] == "25006", "{}", r[3]);
    let spec = serde_json::json!({"host": "127.0.0.1", "port": s.pg.port(), "user": "glasshouse", "password": "nope",
        "queries": ["SELECT 1"]});
    let r = tokio::task::spawn_blocking(move || python("psycopg_client.py", &spec)).await??;
    ensure!(
        r[0]["connect_error"]
            .as_str()
            .is_some_and(|e| e.to_lowercase().contains("password authentication failed")),
        "{r:?}"
    );

    // ADBC Flight SQL driver: same rows with the token; refused without.
    let uri = format!("grpc://{}", s.flight);
    let spec = serde_json::json!({"uri": uri, "token": PASSWORD,
        "queries": [TOP_TALKERS, "SELEC 1", EXECS_PER_IMAGE, "INSERT INTO alerts (alert_id) VALUES ('x')"]});
    let r = tokio::task::spawn_blocking(move || python("adbc_client.py", &spec)).await??;
    ensure!(rows_of(&r[0])? == talkers, "adbc: {} vs {talkers:?}", r[0]);
    // The lake's strings arrive as Arrow string views, which the driver
    // (arrow-go) and pyarrow read as they are.
    ensure!(r[0]["types"][0] == "string_view", "adbc types: {}", r[0]["types"]);
    ensure!(
        r[1]["error"].as_str().is_some_and(|e| e.contains("Expected")),
        "{}",
        r[1]
    );
    ensure!(rows_of(&r[2])? == per_image, "adbc: {}", r[2]);
    ensure!(
        r[3]["error"].as_str().is_some_and(|e| e.contains("read-only")),
        "{}",
        r[3]
    );
    for token in [Value::from("wrong-token"), Value::Null] {
        let spec = serde_json::json!({"uri": uri, "token": token, "queries": ["SELECT 1"]});
        let r = tokio::task::spawn_blocking(move || python("adbc_client.py", &spec)).await??;
        ensure!(
            r[0]["error"]
                .as_str()
                .is_some_and(|e| e.to_lowercase().contains("unauthenticated")),
            "token {token}: {r:?}"
        );
    }

    // `glasshouse sql` over Flight SQL: table, CSV and JSON; hostile
    // strings escaped; a wrong token refused.
    let mut token_file = tempfile::NamedTempFile::new()?;
    writeln!(token_file, "{PASSWORD}")?;
    let endpoint = format!("http://{}", s.flight);
    let cli = |args: &[&str], token: &std::path::Path| -> anyhow::Result<std::process::Output> {
        Ok(Command::new(workspace_binary("glasshouse")?)
            .args(["sql", "--flight", &endpoint, "--token-file"])
            .arg(token)
            .args(args)
            .output()?)
    };
    let csv = cli(&["--format", "csv", TOP_TALKERS], token_file.path())?;
    ensure!(csv.status.success(), "{}", String::from_utf8_lossy(&csv.stderr));
    let csv = String::from_utf8(csv.stdout)?;
    let csv_rows: Vec<Vec<String>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect();
    ensure!(csv_rows == talkers, "cli csv:\n{csv}");
    let table = cli(&["SELECT title, workload_id FROM alerts"], token_file.path())?;
    let table = String::from_utf8(table.stdout)?;
    ensure!(
        !table.contains('\u{1b}') && table.contains("\\u{1b}[2J\\nALERT forged"),
        "not escaped:\n{table}"
    );
    ensure!(table.trim_end().ends_with("(1 row)"), "{table}");
    let json = cli(&["--format", "json", "SELECT title FROM alerts"], token_file.path())?;
    let json = String::from_utf8(json.stdout)?;
    ensure!(json.is_ascii() && !json.contains('\u{1b}'), "{json}");
    let doc: Value = serde_json::from_str(json.trim())?;
    ensure!(doc["title"] == "Shell \u{1b}[2J\nALERT forged | x", "{doc}");
    let bad = cli(&["SELEC 1"], token_file.path())?;
    ensure!(
        !bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("Expected"),
        "{bad:?}"
    );
    let mut wrong = tempfile::NamedTempFile::new()?;
    writeln!(wrong, "not-the-token")?;
    let refused = cli(&["SELECT 1"], wrong.path())?;
    let why = String::from_utf8_lossy(&refused.stderr);
    ensure!(
        !refused.status.success() && why.contains("invalid bearer token"),
        "{why}"
    );

    // A query past the timeout is cancelled with a clear error, on both
    // front doors; the servers go on answering.
    let slow = serve(&lake, Duration::from_millis(500), &cancel).await?;
    let pg = slow.pg;
    let (ok, out, err) =
        tokio::task::spawn_blocking(move || psql(pg, PASSWORD, &[SLOW, "SELECT count(*) FROM alerts"])).await??;
    ensure!(!ok || err.contains("timeout"), "psql: {out} {err}");
    ensure!(err.contains("timeout") && out.trim() == "1", "psql: {out:?} {err}");
    let spec = serde_json::json!({"uri": format!("grpc://{}", slow.flight), "token": PASSWORD, "queries": [SLOW, "SELECT 1 AS one"]});
    let r = tokio::task::spawn_blocking(move || python("adbc_client.py", &spec)).await??;
    ensure!(
        r[0]["error"].as_str().is_some_and(|e| e.contains("timeout")),
        "{}",
        r[0]
    );
    ensure!(rows_of(&r[1])? == vec![vec!["1".to_owned()]], "{}", r[1]);
    cancel.cancel();
    Ok(())
}
