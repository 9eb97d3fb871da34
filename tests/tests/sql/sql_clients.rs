//! The SQL front doors through real clients, over the fixture lake
//! (`glasshouse_lake::fixture`) served in-process on loopback ports: `psql`
//! (simple query protocol), psycopg 3 (extended protocol, `tests/sql/psycopg_client.py`),
//! the ADBC Flight SQL driver (`tests/sql/adbc_client.py`) and the
//! `glasshouse sql` CLI. Each client's rows must equal DataFusion's own for
//! the same query; a wrong or missing password or token is refused on both
//! ports; a bad query gets the parser's message and the connection keeps
//! serving; writes are refused as read-only; a query past the timeout is
//! cancelled with an error naming it; hostile strings come out escaped.
//! The queries Grafana's PostgreSQL data source and DBeaver send about the
//! server and its catalog, as they send them, get the answers they need.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use glasshouse_lake::config::LakeConfig;
use glasshouse_lake::connection::{self, Budget, Cutoff, Door};
use glasshouse_lake::engine::{Engine, Limits};
use glasshouse_lake::lake::Lake;
use glasshouse_lake::output::{Style, render};
use glasshouse_lake::writer::Ingest;
use glasshouse_lake::{fixture, flight, pg};
use glasshouse_tests::{init_logging, manifest_dir, psql, workspace_binary};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const PASSWORD: &str = "s3cret-pw";

/// The tests of this file run one at a time: the connection counts of
/// `glasshouse_lake::connection` are process-wide.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
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
    serve_with(lake, timeout, Budget::default(), cancel).await
}

async fn serve_with(
    lake: &Arc<Lake>,
    timeout: Duration,
    budget: Budget,
    cancel: &CancellationToken,
) -> anyhow::Result<Servers> {
    let engine = Engine::new(
        lake,
        Limits {
            timeout,
            memory_bytes: 256 << 20,
            threads: 2,
            max_depth: 256,
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
    tokio::spawn(pg::serve(pg_listener, engine.clone(), creds, budget, cancel.clone()));
    tokio::spawn(flight::serve(
        flight_listener,
        engine,
        PASSWORD.into(),
        budget,
        cancel.clone(),
    ));
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
    let _serial = SERIAL.lock().await;
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

    glasshouse_sql_over_flight(s.flight, &talkers)?;

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

/// `'a' || 'a' || …` with `operators` concatenations: nested `operators + 1` deep.
fn concat_chain(operators: usize) -> String {
    format!("SELECT 'a'{}", " || 'a'".repeat(operators))
}

/// `SELECT 1 UNION ALL SELECT 1 …` with `unions` set operations.
fn union_chain(unions: usize) -> String {
    format!("SELECT 1 AS one{}", " UNION ALL SELECT 1".repeat(unions))
}

/// `n` raw TCP connections to `addr` that never send a byte.
fn hold(addr: SocketAddr, n: usize) -> anyhow::Result<Vec<std::net::TcpStream>> {
    (0..n)
        .map(|_| {
            let s = std::net::TcpStream::connect(addr)?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            Ok(s)
        })
        .collect()
}

/// Waits until the server has closed every one of `held` (each read sees
/// the end of the stream): how long that took.
fn all_closed(held: Vec<std::net::TcpStream>) -> anyhow::Result<Duration> {
    use std::io::Read as _;
    let started = std::time::Instant::now();
    for mut s in held {
        let mut buf = [0u8; 512];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                // A reset is a close too.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => anyhow::bail!("a held connection was not closed: {e}"),
            }
        }
    }
    Ok(started.elapsed())
}

/// Waits until `door` serves no connection (at most 10 s; the count is
/// process-wide, hence `SERIAL`).
async fn drained(door: Door) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    while connection::open(door) > 0 {
        ensure!(
            started.elapsed() < Duration::from_secs(10),
            "{door:?} still serves {} connections",
            connection::open(door)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Polls `count` until it exceeds `before` (the readiness signal of a
/// cut-off), at most `within`: how long it took.
async fn counted(cutoff: Cutoff, door: Door, before: u64, within: Duration) -> anyhow::Result<Duration> {
    let started = std::time::Instant::now();
    while connection::count(cutoff, door) <= before {
        ensure!(
            started.elapsed() < within,
            "{cutoff:?} on {door:?} not counted within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(started.elapsed())
}

/// Issue 17, SQL front doors: every budget gets a case just over it, and
/// then a normal client must still be served by the same process (a stack
/// overflow would abort this test's process, server and all).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_sql_is_refused_and_the_server_keeps_serving() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    init_logging();
    let dir = tempfile::tempdir()?;
    let lake = fixture_lake(dir.path()).await?;
    let cancel = CancellationToken::new();
    let budget = Budget {
        max_connections: 4,
        handshake_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(2),
        write_timeout: Duration::from_secs(1),
    };
    let s = serve_with(&lake, Duration::from_secs(60), budget, &cancel).await?;
    let depth = s.engine.limits().max_depth;
    let pg = s.pg;
    let served = move || -> anyhow::Result<()> {
        let (ok, out, err) = psql(pg, PASSWORD, &["SELECT count(*) FROM alerts"])?;
        ensure!(
            ok && out.trim() == "1",
            "a normal psql query was not served: {out:?} {err}"
        );
        Ok(())
    };

    // Nesting: a chain at the limit is served (the query threads' stack
    // holds it), one more level is refused before planning, and the same
    // connection answers the next query.
    let at_limit = concat_chain(depth - 1);
    let over = concat_chain(depth);
    let (_, out, err) =
        tokio::task::spawn_blocking(move || psql(pg, PASSWORD, &[&at_limit, &over, "SELECT count(*) FROM alerts"]))
            .await??;
    let lines: Vec<&str> = out.lines().collect();
    ensure!(
        lines == [&*"a".repeat(depth), "1"],
        "psql at and over the limit: {out:?} {err}"
    );
    ensure!(
        err.contains("statement too complex") && err.contains(&format!("nested {} deep", depth + 1)),
        "psql: {err}"
    );

    // Every shape through psycopg, with the SQLSTATE: `||` and UNION ALL
    // chains over our limit; parentheses and subqueries nested past the
    // SQL parser's own recursion limit (50) but within ours, refused by the
    // parser and reported the same way; a 700 KB chain; then the UNION
    // chain at the limit, and a plain query, served.
    let huge = concat_chain(100_000);
    let spec = serde_json::json!({"host": "127.0.0.1", "port": pg.port(), "user": "glasshouse", "password": PASSWORD,
        "queries": [concat_chain(depth), union_chain(depth), format!("SELECT {}1{}", "(".repeat(100), ")".repeat(100)),
            format!("SELECT {}1{}", "(SELECT ".repeat(60), ")".repeat(60)), huge, union_chain(depth - 1), "SELECT 1 AS one"]});
    let started = std::time::Instant::now();
    let r = tokio::task::spawn_blocking(move || python("psycopg_client.py", &spec)).await??;
    let psycopg_secs = started.elapsed().as_secs_f64();
    ensure!(r.len() == 7, "{r:?}");
    for (i, shape) in [
        "|| chain",
        "UNION ALL chain",
        "parentheses",
        "subqueries",
        "700 KB || chain",
    ]
    .iter()
    .enumerate()
    {
        ensure!(
            r[i]["sqlstate"] == "54001"
                && r[i]["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("statement too complex")),
            "{shape}: {}",
            r[i]
        );
    }
    ensure!(rows_of(&r[5])?.len() == depth, "UNION ALL at the limit: {}", r[5]);
    ensure!(rows_of(&r[6])? == vec![vec!["1".to_owned()]], "{}", r[6]);

    // Flight SQL: the same refusal as a status, then a query served.
    let uri = format!("grpc://{}", s.flight);
    let spec = serde_json::json!({"uri": uri, "token": PASSWORD, "queries": [union_chain(depth), "SELECT 1 AS one"]});
    let r = tokio::task::spawn_blocking(move || python("adbc_client.py", &spec)).await??;
    ensure!(
        r[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("statement too complex")),
        "{}",
        r[0]
    );
    ensure!(rows_of(&r[1])? == vec![vec!["1".to_owned()]], "{}", r[1]);

    // Connections, PostgreSQL: the cap taken by silent sockets, one more
    // is told "too many connections"; the silent ones are closed at the
    // handshake timeout and psql is served again.
    // (The earlier clients' connections are closed first: a slot still
    // taken would refuse one of the silent sockets instead.)
    let refused = connection::count(Cutoff::Refused, Door::Pg);
    drained(Door::Pg).await?;
    let held = hold(pg, budget.max_connections)?;
    let (ok, _, err) = tokio::task::spawn_blocking(move || psql(pg, PASSWORD, &["SELECT 1"])).await??;
    ensure!(!ok && err.contains("too many connections"), "over the cap: {err}");
    ensure!(connection::count(Cutoff::Refused, Door::Pg) > refused);
    let pg_closed = tokio::task::spawn_blocking(move || all_closed(held)).await??;
    ensure!(pg_closed < Duration::from_secs(5), "silent sockets held {pg_closed:?}");
    tokio::task::spawn_blocking(served).await??;

    // Connections, Flight SQL: over the cap closed at accept; served again
    // once the silent sockets are gone.
    let refused = connection::count(Cutoff::Refused, Door::Flight);
    drained(Door::Flight).await?;
    let held = hold(s.flight, budget.max_connections)?;
    let spec = serde_json::json!({"uri": uri, "token": PASSWORD, "queries": ["SELECT 1 AS one"]});
    let again = spec.clone();
    let r = tokio::task::spawn_blocking(move || python("adbc_client.py", &spec)).await??;
    ensure!(r[0]["error"].is_string(), "flight over the cap: {}", r[0]);
    ensure!(connection::count(Cutoff::Refused, Door::Flight) > refused);
    let flight_closed = tokio::task::spawn_blocking(move || all_closed(held)).await??;
    ensure!(
        flight_closed < Duration::from_secs(5),
        "silent sockets held {flight_closed:?}"
    );
    let r = tokio::task::spawn_blocking(move || python("adbc_client.py", &again)).await??;
    ensure!(rows_of(&r[0])? == vec![vec!["1".to_owned()]], "{}", r[0]);

    idle_connections_are_closed(pg, budget.idle_timeout).await?;
    tokio::task::spawn_blocking(served).await??;

    let cut_after = stalled_reader_is_cut_off(pg).await?;
    tokio::task::spawn_blocking(served).await??;

    println!(
        "hostile sql: psycopg's 7 statements (5 refused, one of 700 KB) in {psycopg_secs:.2} s; \
         silent sockets closed {:.2} s (pg) / {:.2} s (flight) after the cap was hit; \
         stalled reader cut off {:.2} s after its query was sent",
        pg_closed.as_secs_f64(),
        flight_closed.as_secs_f64(),
        cut_after.as_secs_f64()
    );
    cancel.cancel();
    Ok(())
}

/// `glasshouse sql` over Flight SQL at `flight`: table, CSV and JSON;
/// hostile strings escaped; bad SQL and a wrong token refused.
fn glasshouse_sql_over_flight(flight: SocketAddr, talkers: &[Vec<String>]) -> anyhow::Result<()> {
    let mut token_file = tempfile::NamedTempFile::new()?;
    writeln!(token_file, "{PASSWORD}")?;
    let endpoint = format!("http://{flight}");
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

    Ok(())
}

/// A client that stops reading a large result from the PostgreSQL door at
/// `pg` is cut off at the write timeout (the result is streamed, so nothing
/// piles up meanwhile); returns how long after its query was sent.
async fn stalled_reader_is_cut_off(pg: SocketAddr) -> anyhow::Result<Duration> {
    let writes = connection::count(Cutoff::Write, Door::Pg);
    let mut spec_file = tempfile::NamedTempFile::new()?;
    let spec = serde_json::json!({"host": "127.0.0.1", "port": pg.port(), "user": "glasshouse", "password": PASSWORD,
        "query": "SELECT value, 'padding padding padding padding' AS pad FROM generate_series(1, 1000000000)"});
    spec_file.write_all(spec.to_string().as_bytes())?;
    let mut reader = Command::new("python3")
        .arg(manifest_dir().join("sql").join("pg_stalled_reader.py"))
        .arg(spec_file.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let stdout = reader.stdout.take().context("reader stdout")?;
    let sent = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).map(|_| line)
    })
    .await??;
    ensure!(
        sent.contains("sent"),
        "the stalled reader did not send its query: {sent:?}"
    );
    let cut_after = counted(Cutoff::Write, Door::Pg, writes, Duration::from_secs(30)).await?;
    drop(reader.stdin.take());
    reader.wait()?;
    Ok(cut_after)
}

/// An authenticated connection to `pg` silent past `idle_timeout` is closed
/// with FATAL 57P05 (counted); the next query is served.
async fn idle_connections_are_closed(pg: SocketAddr, idle_timeout: Duration) -> anyhow::Result<()> {
    let idle = connection::count(Cutoff::Idle, Door::Pg);
    let spec = serde_json::json!({"host": "127.0.0.1", "port": pg.port(), "user": "glasshouse", "password": PASSWORD,
        "queries": ["SELECT 1 AS one", {"idle": idle_timeout.as_secs_f64() + 1.0}, "SELECT 1 AS one"]});
    let r = tokio::task::spawn_blocking(move || python("psycopg_client.py", &spec)).await??;
    ensure!(rows_of(&r[0])? == vec![vec!["1".to_owned()]], "{}", r[0]);
    ensure!(
        r[2]["error"]
            .as_str()
            .is_some_and(|e| e.contains("idle-session timeout")),
        "after idling: {}",
        r[2]
    );
    ensure!(connection::count(Cutoff::Idle, Door::Pg) > idle);
    Ok(())
}

// Grafana's PostgreSQL data source, as `postgresMetaQuery.ts`
// (grafana/grafana `public/app/plugins/datasource/grafana-postgresql-datasource/`)
// writes its queries: `getVersion`, `getTimescaleDBVersion`, `showTables`,
// `getSchema` and `buildSchemaConstraint`. Grafana's backend sends them
// as they are, without parameters: pgx's `PgConn().Exec` (Grafana 11 and
// later, `pkg/tsdb/grafana-postgresql-datasource/pgx/sql_engine.go`) and
// lib/pq's query without arguments both use the simple query protocol,
// as psql does; its health check is pgx's `Ping` (`-- ping`) or lib/pq's
// (`;`).
const GRAFANA_VERSION: &str = "SELECT current_setting('server_version_num')::int/100 as version";
const GRAFANA_TIMESCALEDB: &str = "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'";
const GRAFANA_SCHEMA_CONSTRAINT: &str = r#"
          quote_ident(table_schema) IN (
          SELECT
            CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
          FROM
            generate_series(
              array_lower(string_to_array(current_setting('search_path'),','),1),
              array_upper(string_to_array(current_setting('search_path'),','),1)
            ) as i,
            string_to_array(current_setting('search_path'),',') s
          )"#;

/// `showTables()`: the query builder's table list.
fn grafana_show_tables() -> String {
    let c = GRAFANA_SCHEMA_CONSTRAINT;
    format!(
        r#"SELECT
    CASE WHEN {c}
      THEN quote_ident(table_name)
      ELSE quote_ident(table_schema) || '.' || quote_ident(table_name)
    END AS "table"
    FROM information_schema.tables
    WHERE quote_ident(table_schema) NOT IN ('information_schema',
                             'pg_catalog',
                             '_timescaledb_cache',
                             '_timescaledb_catalog',
                             '_timescaledb_internal',
                             '_timescaledb_config',
                             'timescaledb_information',
                             'timescaledb_experimental')
    ORDER BY CASE WHEN {c} THEN 0 ELSE 1 END, 1"#
    )
}

/// `getSchema(table)`: the query builder's columns of `table`.
fn grafana_get_schema(table: &str) -> String {
    let c = GRAFANA_SCHEMA_CONSTRAINT;
    let t = format!("'{}'", table.replace('\'', "''"));
    format!(
        r#"SELECT quote_ident(column_name) AS "column", data_type AS "type"
    FROM information_schema.columns
    WHERE
      CASE WHEN array_length(parse_ident({t}),1) = 2
        THEN quote_ident(table_schema) = (parse_ident({t}))[1]
          AND quote_ident(table_name) = (parse_ident({t}))[2]
        ELSE quote_ident(table_name) = {t}
          AND {c}
      END"#
    )
}

/// A panel query as Grafana sends it once its macros are expanded
/// (`macros.go`: `$__timeGroupAlias("time", '1m')`, `$__timeFilter("time")`).
const GRAFANA_PANEL: &str = "SELECT floor(extract(epoch from \"time\")/60)*60 AS \"time\", count(*) AS execs \
    FROM process_events WHERE \"time\" BETWEEN '2026-01-01T10:00:00Z' AND '2026-01-01T12:00:00Z' AND kind = 'exec' \
    GROUP BY 1 ORDER BY 1";

// DBeaver on connect (dbeaver/dbeaver
// `plugins/org.jkiss.dbeaver.ext.postgresql/src/org/jkiss/dbeaver/ext/postgresql/model/PostgreExecutionContext.java`,
// `refreshDefaults`), then the catalog a schema browser reads.
const DBEAVER_DEFAULTS: &str = "SELECT current_schema(),session_user";
const DBEAVER_SEARCH_PATH: &str = "SHOW search_path";
const CATALOG_COLUMNS: &str = "SELECT c.relname, c.relkind, a.attname, t.typname \
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
    JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
    WHERE n.nspname = 'public' AND c.relname = 'process_events' AND a.attname IN ('time', 'pid', 'path') \
    ORDER BY a.attnum";

/// Issue 18: what Grafana (its health check, version and TimescaleDB
/// detection, query builder, a panel query) and DBeaver send before they
/// query gets the answers they need, over psql (the simple query protocol,
/// as Grafana sends it) and psycopg (the extended protocol, as JDBC
/// sends it); and none of it opens a way to write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grafana_and_dbeaver_catalog_queries_are_answered() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    init_logging();
    let dir = tempfile::tempdir()?;
    let lake = fixture_lake(dir.path()).await?;
    let cancel = CancellationToken::new();
    let s = serve(&lake, Duration::from_secs(60), &cancel).await?;
    let pg = s.pg;
    let panel = direct_rows(&s.engine, GRAFANA_PANEL).await?;
    ensure!(!panel.is_empty(), "the panel query has no rows directly");
    let queries: Vec<String> = vec![
        GRAFANA_VERSION.into(),
        GRAFANA_TIMESCALEDB.into(),
        grafana_show_tables(),
        grafana_get_schema("process_events"),
        grafana_get_schema("public.alerts"),
        GRAFANA_PANEL.into(),
        DBEAVER_DEFAULTS.into(),
        DBEAVER_SEARCH_PATH.into(),
        "select version()".into(),
        "select pg_catalog.version()".into(),
        CATALOG_COLUMNS.into(),
        "SELECT datname FROM pg_catalog.pg_database".into(),
    ];

    // psql: one `-c` each, so each answer is told apart by running alone.
    let mut answers = Vec::new();
    for q in &queries {
        let q = q.clone();
        let (ok, out, err) = tokio::task::spawn_blocking(move || psql(pg, PASSWORD, &[&q])).await??;
        ensure!(ok && err.is_empty(), "psql refused a client's query: {err}");
        answers.push(
            out.lines()
                .map(|l| l.split('|').map(str::to_owned).collect::<Vec<_>>())
                .collect::<Vec<_>>(),
        );
    }
    let text = |i: usize| answers[i].iter().map(|r| r.join("|")).collect::<Vec<_>>();
    // Version detection: Grafana reads an integer (the major version
    // times 100) and turns on what 9.6 and later have.
    let version: i64 = text(0)
        .join("")
        .trim()
        .parse()
        .with_context(|| format!("version: {:?}", text(0)))?;
    ensure!(version >= 906 && version == 1600, "version {version}");
    ensure!(answers[1].is_empty(), "TimescaleDB detected: {:?}", answers[1]);
    let tables = text(2);
    for t in [
        "alerts",
        "containers",
        "network_events",
        "process_events",
        "resource_samples",
    ] {
        ensure!(
            tables.iter().any(|x| x == t),
            "{t} not in Grafana's table list {tables:?}"
        );
    }
    ensure!(
        !tables
            .iter()
            .any(|t| t.starts_with("pg_") || t.contains("information_schema")),
        "catalog tables in Grafana's table list: {tables:?}"
    );
    // Columns with their types; `time` is a keyword, so quoted, as
    // PostgreSQL's quote_ident does (the builder then writes "time").
    let columns = text(3);
    for c in [
        "\"time\"|Timestamp(ns, \"UTC\")",
        "pid|UInt32",
        "path|Utf8View",
        "argv|List(Utf8)",
    ] {
        ensure!(
            columns.iter().any(|x| x == c),
            "{c} not in Grafana's columns {columns:?}"
        );
    }
    let direct = direct_rows(
        &s.engine,
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'process_events'",
    )
    .await?;
    ensure!(
        columns.len() == direct.len(),
        "{} columns, DataFusion has {}",
        columns.len(),
        direct.len()
    );
    ensure!(
        text(4).iter().any(|x| x == "title|Utf8View"),
        "public.alerts: {:?}",
        text(4)
    );
    ensure!(answers[5] == panel, "panel: {:?} vs {panel:?}", answers[5]);
    ensure!(
        text(6) == ["public|glasshouse"],
        "current_schema(), session_user: {:?}",
        text(6)
    );
    ensure!(text(7) == ["\"$user\", public"], "search_path: {:?}", text(7));
    for i in [8, 9] {
        ensure!(
            text(i)[0].starts_with("PostgreSQL 16.0 (Glasshouse"),
            "version(): {:?}",
            text(i)
        );
    }
    ensure!(
        text(10)
            == [
                "process_events|r|time|timestamptz",
                "process_events|r|pid|int8",
                "process_events|r|path|text"
            ],
        "catalog: {:?}",
        text(10)
    );
    ensure!(text(11) == ["glasshouse"], "pg_database: {:?}", text(11));

    // Health checks: comments only (pgx) and a lone `;` (lib/pq) are empty
    // queries, not errors; the connection then answers.
    let (ok, out, err) =
        tokio::task::spawn_blocking(move || psql(pg, PASSWORD, &["-- ping", ";", "/* ping */ SELECT 1"])).await??;
    ensure!(ok && err.is_empty() && out.trim() == "1", "health check: {out:?} {err}");

    // The extended protocol (psycopg; DBeaver's JDBC driver uses it too):
    // the same answers.
    let spec = serde_json::json!({"host": "127.0.0.1", "port": pg.port(), "user": "glasshouse", "password": PASSWORD,
        "queries": queries});
    let r = tokio::task::spawn_blocking(move || python("psycopg_client.py", &spec)).await??;
    ensure!(r.len() == queries.len(), "{r:?}");
    for (i, result) in r.iter().enumerate() {
        ensure!(
            rows_of(result)? == answers[i],
            "psycopg, {}: {result} vs psql {:?}",
            queries[i],
            answers[i]
        );
    }

    // The JDBC driver (DBeaver) opens each connection with two SETs over
    // the extended protocol and gives up if they fail: acknowledged, and
    // the session goes on; an empty statement is empty there too.
    let spec = serde_json::json!({"host": "127.0.0.1", "port": pg.port(), "user": "glasshouse", "password": PASSWORD,
        "statements": ["SET extra_float_digits = 3", "SET application_name = 'DBeaver 24.3.0 - Main <glasshouse>'",
            "-- ping", DBEAVER_DEFAULTS, "SET search_path = pg_catalog"]});
    let r = tokio::task::spawn_blocking(move || python("psycopg_session.py", &spec)).await??;
    ensure!(r.len() == 5, "{r:?}");
    ensure!(r[0]["status"] == "SET" && r[1]["status"] == "SET", "JDBC's SETs: {r:?}");
    ensure!(r[2]["error"].is_null(), "empty statement: {}", r[2]);
    ensure!(
        rows_of(&r[3])? == [["public", "glasshouse"]],
        "after the SETs: {}",
        r[3]
    );
    ensure!(r[4]["sqlstate"] == "25006", "another SET: {}", r[4]);

    // None of it widens what a client can do: settings cannot be set,
    // an unknown one is an error, the catalog cannot be written.
    let (_, out, err) = tokio::task::spawn_blocking(move || {
        psql(
            pg,
            PASSWORD,
            &[
                "SET search_path = pg_catalog",
                "SET extra_float_digits = 3; DROP VIEW containers",
                "SELECT current_setting('nope')",
                "CREATE TABLE pg_extension AS SELECT 1 AS extname",
                "SHOW search_path",
            ],
        )
    })
    .await??;
    ensure!(err.matches("read-only").count() == 2, "writes not refused: {err}");
    ensure!(
        err.contains("single SQL statement"),
        "a SET with a statement after it: {err}"
    );
    ensure!(err.contains("unrecognized configuration parameter \"nope\""), "{err}");
    ensure!(out.trim() == "\"$user\", public", "search path changed: {out:?}");
    cancel.cancel();
    Ok(())
}
