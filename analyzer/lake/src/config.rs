//! The `[lake]` and `[sql]` sections of the analyzer's config.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// `[lake]`: the Parquet lake and its writer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakeConfig {
    /// Run the lake writer and register the lake's tables (default false).
    #[serde(default)]
    pub enabled: bool,
    /// Where the Parquet files go: a local directory (default
    /// `/var/lib/glasshouse/lake`) or an `s3://bucket/prefix` URL (needs the
    /// `s3` cargo feature of `glasshouse-lake`; credentials, region and
    /// endpoint from the usual `AWS_*` environment variables, e.g.
    /// `AWS_ENDPOINT_URL` for an S3-compatible store).
    #[serde(default = "default_location")]
    pub location: String,
    /// Kafka consumer group of the lake writer (default `glasshouse-lake`),
    /// apart from the analyzer's: it reads every topic from its own offsets.
    #[serde(default = "default_group")]
    pub group_id: String,
    /// A table's recent rows go to a Parquet file once this many are buffered
    /// (default 200,000) …
    #[serde(default = "default_flush_rows")]
    pub flush_rows: usize,
    /// … or once the oldest is this old (default 60 s). Until then the rows
    /// are queried from memory, so a query sees data seconds old either way.
    #[serde(default = "default_flush_secs")]
    pub flush_secs: u64,
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
    /// Hours of data kept; older hour partitions are deleted (default 168,
    /// a week; 0: keep everything).
    #[serde(default = "default_retention_hours")]
    pub retention_hours: u64,
}

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
    /// Threads of the query runtime, apart from the analyzer's I/O runtime
    /// (default 2).
    #[serde(default = "default_threads")]
    pub threads: usize,
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
fn default_flush_secs() -> u64 {
    60
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

impl Default for LakeConfig {
    fn default() -> Self {
        LakeConfig {
            enabled: false,
            location: default_location(),
            group_id: default_group(),
            flush_rows: default_flush_rows(),
            flush_secs: default_flush_secs(),
            compact_interval_secs: default_compact_secs(),
            compact_min_files: default_compact_min_files(),
            compact_target_mib: default_compact_target_mib(),
            retention_hours: default_retention_hours(),
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
        }
    }
}

impl LakeConfig {
    /// Cross-field checks, done at start-up.
    pub fn validate(&self) -> Result<(), String> {
        if self.flush_rows == 0 || self.flush_secs == 0 {
            return Err("`lake.flush_rows` and `lake.flush_secs` must be at least 1".into());
        }
        if self.compact_min_files < 2 {
            return Err("`lake.compact_min_files` must be at least 2".into());
        }
        if self.location.starts_with("s3://") && !cfg!(feature = "s3") {
            return Err(format!(
                "`lake.location` {:?}: this build has no S3 support (cargo feature `s3` of glasshouse-lake)",
                self.location
            ));
        }
        if self.location.contains("://") && !self.location.starts_with("s3://") {
            return Err(format!(
                "`lake.location` {:?}: a local directory or an s3:// URL",
                self.location
            ));
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
