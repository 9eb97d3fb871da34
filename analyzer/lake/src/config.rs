//! The `[lake]` section (the analyzer's and the query service's config)
//! and the `[sql]` section (the query service's).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// `[lake]`: the lake, its tables' storage and catalog, and its writer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakeConfig {
    /// Run the lake writer and register the lake's tables (default false).
    #[serde(default)]
    pub enabled: bool,
    /// Where the tables' files go: a local directory (default
    /// `/var/lib/glasshouse/lake`) or an `s3://bucket/prefix` URL on S3 or
    /// S3-compatible object storage, configured by `[lake.s3]` and the
    /// standard `AWS_*` environment variables. The bucket must exist; the
    /// analyzer and the query service refuse to start if they cannot
    /// reach it.
    #[serde(default = "default_location")]
    pub location: String,
    /// `[lake.s3]`: how to reach an `s3://` location. Each key set here
    /// wins over its environment variable.
    #[serde(default)]
    pub s3: S3Config,
    /// Kafka consumer group of the lake writer (default `glasshouse-lake`),
    /// apart from the analyzer's: it reads every topic from its own offsets.
    #[serde(default = "default_group")]
    pub group_id: String,
    /// A table's recent rows go to a Parquet file once this many are buffered
    /// (default 200,000) …
    #[serde(default = "default_flush_rows")]
    pub flush_rows: usize,
    /// … or once the oldest is this old (default 10 s): rows are queryable
    /// this long after they reach Kafka at the latest. (`parquet`: until
    /// then the rows are queried from the writer's memory.) Each flush
    /// writes at most one file per table and hour, so a longer period
    /// means fewer, larger files.
    #[serde(default = "default_flush_secs")]
    pub flush_secs: u64,
    /// … or once the buffered rows take this many bytes of memory (default
    /// 64 MiB), so that a few messages of large rows (each may hold up to
    /// `glasshouse_proto::ipc::MAX_DECODED_BYTES` once decoded) cannot grow
    /// the writer past its memory: they are written out instead.
    #[serde(default = "default_flush_bytes")]
    pub flush_bytes: usize,
    /// How often small files of one table and hour are merged (default
    /// 300 s; 0: never).
    #[serde(default = "default_compact_secs")]
    pub compact_interval_secs: u64,
    /// An hour's files are merged once it holds at least this many smaller
    /// than `compact_target_mib` (default 4).
    #[serde(default = "default_compact_min_files")]
    pub compact_min_files: usize,
    /// Files at least this big are left alone by compaction (default 128 MiB).
    #[serde(default = "default_compact_target_mib")]
    pub compact_target_mib: u64,
    /// Hours data is kept after it was received: files written (received)
    /// longer ago are deleted, whatever the times of their rows, so
    /// old-dated evidence is kept for the whole period (default 168, a
    /// week; 0: keep everything).
    #[serde(default = "default_retention_hours")]
    pub retention_hours: u64,
    /// The table format: `iceberg` (default: Apache Iceberg tables in the
    /// catalog of `[lake.catalog]`; many writers, exactly once per Kafka
    /// offset, served by `glasshouse-query` and readable by any Iceberg
    /// engine; see docs/lake.md) or `parquet` (deprecated: the earlier
    /// layout of Parquet files for one writer per location, which nothing
    /// in Glasshouse serves any more; kept for readers of existing files
    /// during an upgrade). With `iceberg`, rows are committed every
    /// `flush_secs` (or sooner by rows or bytes) and compaction and
    /// retention are left to Iceberg maintenance (docs/lake.md).
    #[serde(default)]
    pub format: LakeFormat,
    /// `[lake.catalog]`: the Iceberg catalog (`format = "iceberg"`).
    #[serde(default)]
    pub catalog: CatalogConfig,
}

/// `lake.format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LakeFormat {
    Parquet,
    #[default]
    Iceberg,
}

/// `[lake.catalog]`: where the Iceberg tables are registered.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    /// `sql` (default: iceberg's SQL catalog in a sqlite file, no server)
    /// or `rest` (an Iceberg REST catalog: Polaris, Lakekeeper, Nessie,
    /// Gravitino, AWS Glue's REST endpoint).
    #[serde(default)]
    pub kind: CatalogKindConfig,
    /// `sql`: the sqlite file (default `catalog.db` in a local
    /// `lake.location`; required with an s3:// location). `rest`: the
    /// catalog's URL (required).
    #[serde(default)]
    pub uri: Option<String>,
    /// Where data and metadata files go (default: `warehouse/` in a local
    /// `lake.location`, or the s3:// location itself).
    #[serde(default)]
    pub warehouse: Option<String>,
    /// The namespace of the lake's tables (default `glasshouse`).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// `rest`: a file whose first line is the catalog's bearer token, used
    /// until it expires (then commits and queries are refused until a
    /// restart reads the file again): prefer `credential_file`.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// `rest`: a file whose first line is `CLIENT_ID:CLIENT_SECRET`, the
    /// OAuth2 client credentials the catalog issues tokens for (at its
    /// `/v1/oauth/tokens`); a new token is fetched every
    /// `token_refresh_secs`, so a long-running writer or query service
    /// never holds an expired one.
    #[serde(default)]
    pub credential_file: Option<PathBuf>,
    /// How often a token is fetched with `credential_file` (default 1800 s:
    /// tokens commonly last an hour).
    #[serde(default = "default_token_refresh")]
    pub token_refresh_secs: u64,
}

fn default_token_refresh() -> u64 {
    1800
}

/// `lake.catalog.kind`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatalogKindConfig {
    #[default]
    Sql,
    Rest,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        CatalogConfig {
            kind: CatalogKindConfig::Sql,
            uri: None,
            warehouse: None,
            namespace: default_namespace(),
            token_file: None,
            credential_file: None,
            token_refresh_secs: default_token_refresh(),
        }
    }
}

fn default_namespace() -> String {
    "glasshouse".into()
}

/// `[lake.s3]`: the object store of an `s3://bucket/prefix` location.
///
/// Unset keys come from the standard AWS environment variables, read by
/// `object_store`: `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT`), `AWS_REGION`
/// (or `AWS_DEFAULT_REGION`), `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, `AWS_ALLOW_HTTP`; without keys, the web identity
/// (`AWS_WEB_IDENTITY_TOKEN_FILE`, `AWS_ROLE_ARN`: Kubernetes service
/// accounts), container and instance credentials of AWS itself.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// URL of an S3-compatible server (MinIO, Ceph RGW, Garage, s3s-fs …),
    /// e.g. `https://s3.example.internal:9000`; requests use path-style
    /// addressing (`ENDPOINT/BUCKET/KEY`). Default: `AWS_ENDPOINT_URL`, else
    /// AWS S3 of `region`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Region (default: `AWS_REGION` / `AWS_DEFAULT_REGION`, else
    /// `us-east-1`; most S3-compatible servers accept any).
    #[serde(default)]
    pub region: Option<String>,
    /// Allow an `http://` endpoint without TLS (default false: refused at
    /// start). For a server on loopback or a private network only: the
    /// requests are signed, but the data crosses the network in clear.
    #[serde(default)]
    pub allow_http: bool,
    /// Access key id (default: `AWS_ACCESS_KEY_ID`). Needs
    /// `secret_access_key_file` with it.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// File holding the secret access key: its first line (default:
    /// `AWS_SECRET_ACCESS_KEY`). Never logged, never in an error message.
    #[serde(default)]
    pub secret_access_key_file: Option<PathBuf>,
}

impl S3Config {
    fn is_set(&self) -> bool {
        self.endpoint.is_some()
            || self.region.is_some()
            || self.allow_http
            || self.access_key_id.is_some()
            || self.secret_access_key_file.is_some()
    }

    /// The secret access key from `secret_access_key_file`, if set.
    pub fn read_secret(&self) -> Result<Option<String>, String> {
        let Some(path) = &self.secret_access_key_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("`lake.s3.secret_access_key_file` {}: {e}", path.display()))?;
        let secret = text.lines().next().unwrap_or("").trim().to_owned();
        if secret.is_empty() {
            return Err(format!("`lake.s3.secret_access_key_file` {}: empty", path.display()));
        }
        Ok(Some(secret))
    }
}

/// The highest `sql.max_nesting_depth` accepted: the query threads' stack
/// grows with the limit (`engine::stack_size`), and beyond this it would be
/// gigabytes of address space.
pub const MAX_NESTING_DEPTH: usize = 4096;

/// `[sql]`: the SQL front doors.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlConfig {
    /// PostgreSQL wire protocol address (default none: off), e.g.
    /// `127.0.0.1:5433`.
    #[serde(default)]
    pub pg_listen: Option<SocketAddr>,
    /// Arrow Flight SQL address (default none: off), e.g. `127.0.0.1:50051`.
    #[serde(default)]
    pub flight_listen: Option<SocketAddr>,
    /// User name for the PostgreSQL wire protocol (default `glasshouse`).
    #[serde(default = "default_user")]
    pub user: String,
    /// File holding the password (PostgreSQL wire protocol, MD5
    /// authentication) and bearer token (Flight SQL): its first line.
    /// Required when a front door is on.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// A query running longer is cancelled with an error (default 60 s).
    #[serde(default = "default_timeout")]
    pub query_timeout_secs: u64,
    /// Memory all running queries may use together for sorts, joins and
    /// aggregations (default 1024 MiB); a query needing more fails with an
    /// error naming the limit.
    #[serde(default = "default_memory")]
    pub memory_limit_mib: u64,
    /// Threads of the query runtime, apart from the query service's I/O
    /// runtime (default 2).
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// Deepest nesting a statement may have (default 256), counted on its
    /// tokens before parsing: brackets, plus the operators of a chain such
    /// as `a || b || …` or `x = 1 OR x = 2 OR …`, plus set operations
    /// (`UNION`, `INTERSECT`, `EXCEPT`) and joins. A deeper statement is
    /// refused with "statement too complex" (SQLSTATE 54001) before it is
    /// planned: planning recurses once per level, and the query threads'
    /// stack (sized from this limit) must hold it.
    #[serde(default = "default_max_nesting_depth")]
    pub max_nesting_depth: usize,
    /// Connections each front door serves at once (default 64); one more
    /// is refused: on the PostgreSQL port with a FATAL "too many
    /// connections" (SQLSTATE 53300), on the Flight SQL port closed at
    /// accept. Idle descriptors cannot lock out a legitimate client for
    /// longer than `handshake_timeout_secs`, or `idle_timeout_secs` once
    /// authenticated.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A connection must finish its start-up and authentication within
    /// this (default 10 s): on the PostgreSQL port the startup message
    /// and password, on the Flight SQL port a call carrying the right
    /// bearer token; otherwise it is closed.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_secs: u64,
    /// An authenticated connection without traffic for this long is closed
    /// (default 600 s; PostgreSQL port: FATAL 57P05). Must exceed
    /// `query_timeout_secs`: on the Flight SQL port a running query with no
    /// result yet is silent too.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    /// A client that stops reading its results is cut off once a write to
    /// it has been blocked this long (default 30 s). Results are streamed
    /// with backpressure: a stalled client holds at most a few record
    /// batches in memory until then. (On Flight SQL, HTTP/2 flow control
    /// usually stalls the stream before the socket blocks: the query then
    /// ends at `query_timeout_secs` and the connection at `idle_timeout_secs`.)
    #[serde(default = "default_write_timeout")]
    pub write_timeout_secs: u64,
}

fn default_location() -> String {
    "/var/lib/glasshouse/lake".into()
}
fn default_group() -> String {
    "glasshouse-lake".into()
}
fn default_flush_rows() -> usize {
    200_000
}
fn default_flush_bytes() -> usize {
    64 << 20
}
fn default_flush_secs() -> u64 {
    10
}
fn default_compact_secs() -> u64 {
    300
}
fn default_compact_min_files() -> usize {
    4
}
fn default_compact_target_mib() -> u64 {
    128
}
fn default_retention_hours() -> u64 {
    168
}
fn default_user() -> String {
    "glasshouse".into()
}
fn default_timeout() -> u64 {
    60
}
fn default_memory() -> u64 {
    1024
}
fn default_threads() -> usize {
    2
}
/// Far above hand-written and generated analytics (a 100-term `OR`
/// filter counts about 200), far below what overflowed the 2 MiB stack of
/// the query threads before the limit (a chain of about 1,000 `||`).
fn default_max_nesting_depth() -> usize {
    256
}
/// PostgreSQL's `max_connections` is 100 for one database server; a
/// front door of one query service serves a few analysts and dashboards.
fn default_max_connections() -> usize {
    64
}
/// A client on a healthy network authenticates in milliseconds;
/// PostgreSQL's `authentication_timeout` is 60 s, shorter here because
/// a slot held by a silent socket is a slot a legitimate client lacks.
fn default_handshake_timeout() -> u64 {
    10
}
/// Ten times the default query timeout: a dashboard polling every few
/// minutes keeps its connection.
fn default_idle_timeout() -> u64 {
    600
}
fn default_write_timeout() -> u64 {
    30
}

impl Default for LakeConfig {
    fn default() -> Self {
        LakeConfig {
            enabled: false,
            location: default_location(),
            s3: S3Config::default(),
            group_id: default_group(),
            flush_rows: default_flush_rows(),
            flush_secs: default_flush_secs(),
            flush_bytes: default_flush_bytes(),
            compact_interval_secs: default_compact_secs(),
            compact_min_files: default_compact_min_files(),
            compact_target_mib: default_compact_target_mib(),
            retention_hours: default_retention_hours(),
            format: LakeFormat::Parquet,
            catalog: CatalogConfig::default(),
        }
    }
}

impl Default for SqlConfig {
    fn default() -> Self {
        SqlConfig {
            pg_listen: None,
            flight_listen: None,
            user: default_user(),
            password_file: None,
            query_timeout_secs: default_timeout(),
            memory_limit_mib: default_memory(),
            threads: default_threads(),
            max_nesting_depth: default_max_nesting_depth(),
            max_connections: default_max_connections(),
            handshake_timeout_secs: default_handshake_timeout(),
            idle_timeout_secs: default_idle_timeout(),
            write_timeout_secs: default_write_timeout(),
        }
    }
}

impl LakeConfig {
    /// Cross-field checks, done at start-up.
    pub fn validate(&self) -> Result<(), String> {
        if self.flush_bytes < 1 << 20 {
            return Err("`lake.flush_bytes` must be at least 1048576".into());
        }
        if self.flush_rows == 0 || self.flush_secs == 0 {
            return Err("`lake.flush_rows` and `lake.flush_secs` must be at least 1".into());
        }
        if self.compact_min_files < 2 {
            return Err("`lake.compact_min_files` must be at least 2".into());
        }
        if self.location.contains("://") && !self.location.starts_with("s3://") {
            return Err(format!(
                "`lake.location` {:?}: a local directory or an s3:// URL",
                self.location
            ));
        }
        let Some(rest) = self.location.strip_prefix("s3://") else {
            if self.s3.is_set() {
                return Err(format!(
                    "`lake.s3` is set but `lake.location` {:?} is a local directory (use s3://bucket/prefix)",
                    self.location
                ));
            }
            return Ok(());
        };
        let bucket = rest.split('/').next().unwrap_or("");
        if bucket.is_empty() {
            return Err(format!(
                "`lake.location` {:?}: no bucket (s3://bucket/prefix)",
                self.location
            ));
        }
        if let Some(endpoint) = &self.s3.endpoint {
            let url =
                url::Url::parse(endpoint).map_err(|e| format!("`lake.s3.endpoint` {endpoint:?}: not a URL ({e})"))?;
            match url.scheme() {
                "https" => {}
                "http" if self.s3.allow_http => {}
                "http" => {
                    return Err(format!(
                        "`lake.s3.endpoint` {endpoint:?} is plain http: set `lake.s3.allow_http = true` to allow it"
                    ));
                }
                other => {
                    return Err(format!(
                        "`lake.s3.endpoint` {endpoint:?}: scheme {other:?}, expected https (or http)"
                    ));
                }
            }
        }
        if self.s3.access_key_id.is_some() != self.s3.secret_access_key_file.is_some() {
            return Err(
                "`lake.s3.access_key_id` and `lake.s3.secret_access_key_file` go together (or leave both to AWS_* variables)"
                    .into(),
            );
        }
        Ok(())
    }
}

impl SqlConfig {
    /// Whether any front door is on.
    pub fn enabled(&self) -> bool {
        self.pg_listen.is_some() || self.flight_listen.is_some()
    }

    /// Cross-field checks, done at start-up.
    pub fn validate(&self, lake: &LakeConfig) -> Result<(), String> {
        if !self.enabled() {
            return Ok(());
        }
        if !lake.enabled {
            return Err("`sql` front doors need `lake.enabled = true`".into());
        }
        if self.password_file.is_none() {
            return Err("`sql.password_file` is required when a SQL front door is on".into());
        }
        if self.query_timeout_secs == 0 || self.memory_limit_mib == 0 || self.threads == 0 {
            return Err("`sql.query_timeout_secs`, `sql.memory_limit_mib` and `sql.threads` must be at least 1".into());
        }
        if self.max_nesting_depth == 0
            || self.max_connections == 0
            || self.handshake_timeout_secs == 0
            || self.write_timeout_secs == 0
        {
            return Err("`sql.max_nesting_depth`, `sql.max_connections`, `sql.handshake_timeout_secs` and `sql.write_timeout_secs` must be at least 1".into());
        }
        if self.max_nesting_depth > MAX_NESTING_DEPTH {
            return Err(format!("`sql.max_nesting_depth` must be at most {MAX_NESTING_DEPTH}"));
        }
        if self.idle_timeout_secs <= self.query_timeout_secs {
            return Err(format!(
                "`sql.idle_timeout_secs` ({}) must exceed `sql.query_timeout_secs` ({}): a running query is silent until its first result",
                self.idle_timeout_secs, self.query_timeout_secs
            ));
        }
        Ok(())
    }

    /// Reads the secret from `password_file`: its first line, which must not be empty.
    pub fn read_secret(&self) -> Result<String, String> {
        let Some(path) = &self.password_file else {
            return Err("`sql.password_file` is not set".into());
        };
        let text = std::fs::read_to_string(path).map_err(|e| format!("sql password file {}: {e}", path.display()))?;
        let secret = text.lines().next().unwrap_or("").trim().to_owned();
        if secret.is_empty() {
            return Err(format!("sql password file {}: empty", path.display()));
        }
        Ok(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lake(location: &str, s3: S3Config) -> LakeConfig {
        LakeConfig {
            location: location.into(),
            s3,
            ..Default::default()
        }
    }

    #[test]
    fn s3_locations_and_keys_are_checked() {
        assert!(lake("/var/lib/glasshouse/lake", S3Config::default()).validate().is_ok());
        assert!(lake("s3://bucket/prefix", S3Config::default()).validate().is_ok());
        let http = S3Config {
            endpoint: Some("http://127.0.0.1:9000".into()),
            ..Default::default()
        };
        let e = lake("s3://b/p", http.clone()).validate().unwrap_err();
        assert!(e.contains("allow_http"), "{e}");
        let allowed = S3Config {
            allow_http: true,
            ..http.clone()
        };
        assert!(lake("s3://b/p", allowed.clone()).validate().is_ok());
        let e = lake("/tmp/lake", allowed).validate().unwrap_err();
        assert!(e.contains("local directory"), "{e}");
        let e = lake("s3:///p", S3Config::default()).validate().unwrap_err();
        assert!(e.contains("no bucket"), "{e}");
        let e = lake("gs://b/p", S3Config::default()).validate().unwrap_err();
        assert!(e.contains("s3:// URL"), "{e}");
        let half = S3Config {
            access_key_id: Some("AK".into()),
            ..Default::default()
        };
        let e = lake("s3://b", half).validate().unwrap_err();
        assert!(e.contains("go together"), "{e}");
        let ftp = S3Config {
            endpoint: Some("ftp://x".into()),
            ..Default::default()
        };
        assert!(lake("s3://b", ftp).validate().is_err());
    }

    #[test]
    fn sql_budgets_are_checked() {
        let lake = LakeConfig {
            enabled: true,
            ..Default::default()
        };
        let on = SqlConfig {
            pg_listen: Some("127.0.0.1:5433".parse().unwrap()),
            password_file: Some("/dev/null".into()),
            ..Default::default()
        };
        assert!(on.validate(&lake).is_ok());
        let e = SqlConfig {
            idle_timeout_secs: 60,
            ..on.clone()
        }
        .validate(&lake)
        .unwrap_err();
        assert!(e.contains("idle_timeout_secs"), "{e}");
        for bad in [
            SqlConfig {
                max_connections: 0,
                ..on.clone()
            },
            SqlConfig {
                max_nesting_depth: MAX_NESTING_DEPTH + 1,
                ..on.clone()
            },
            SqlConfig {
                write_timeout_secs: 0,
                ..on.clone()
            },
        ] {
            assert!(bad.validate(&lake).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_secret_is_the_first_line_of_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "  sk-1 \nsecond\n").unwrap();
        let s3 = S3Config {
            secret_access_key_file: Some(path.clone()),
            ..Default::default()
        };
        assert_eq!(s3.read_secret().unwrap().as_deref(), Some("sk-1"));
        std::fs::write(&path, "\n").unwrap();
        assert!(s3.read_secret().unwrap_err().contains("empty"));
        assert_eq!(S3Config::default().read_secret().unwrap(), None);
    }
}
