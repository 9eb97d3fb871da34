//! How every Glasshouse process behaves: one root [`CancellationToken`] cancelled
//! by the first Ctrl-C/SIGTERM (a second one exits at once), TOML configs that
//! fail with one line naming the field, exponential backoff for retries, and
//! structured logging.

use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

/// Exit code after a second interrupt (128 + SIGINT).
const EXIT_INTERRUPTED: i32 = 130;

/// A config file that could not be used: always one line, naming file and field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {path}: cannot read: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path}:{line}:{column}: {message}")]
    Parse {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("config {path}: field `{field}`: {message}")]
    Invalid {
        path: String,
        field: &'static str,
        message: String,
    },
}

/// Cross-field checks run after parsing; `Err((field, message))` names the culprit.
pub trait Validate {
    fn validate(&self) -> Result<(), (&'static str, String)>;
}

/// Parses TOML `text` (from `path`, for messages) into a validated config.
pub fn parse_config<T: DeserializeOwned + Validate>(path: &str, text: &str) -> Result<T, ConfigError> {
    let config: T = toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map(|s| line_column(text, s.start)).unwrap_or((1, 1));
        ConfigError::Parse {
            path: path.to_owned(),
            line,
            column,
            message: e.message().trim().replace('\n', " "),
        }
    })?;
    config.validate().map_err(|(field, message)| ConfigError::Invalid {
        path: path.to_owned(),
        field,
        message,
    })?;
    Ok(config)
}

/// Loads a config file, or the defaults (`""` parsed) when `path` is `None`.
pub fn load_config<T: DeserializeOwned + Validate>(path: Option<&Path>) -> Result<T, ConfigError> {
    match path {
        None => parse_config("<defaults>", ""),
        Some(p) => {
            let shown = p.display().to_string();
            let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: shown.clone(),
                source,
            })?;
            parse_config(&shown, &text)
        }
    }
}

/// For `main`: loads the config or logs its one-line error and exits with 2.
pub fn load_config_or_exit<T: DeserializeOwned + Validate>(path: Option<&Path>) -> T {
    load_config(path).unwrap_or_else(|e| {
        tracing::error!("{e}");
        std::process::exit(2)
    })
}

/// For `main`: logs a fatal error with its causes on one line and exits with 1.
pub fn exit_on_error<T, E: std::error::Error + 'static>(result: Result<T, E>) -> T {
    result.unwrap_or_else(|e| {
        tracing::error!("{}", error_chain(&e));
        std::process::exit(1)
    })
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.len(), |nl| before.len() - nl - 1) + 1;
    (line, column)
}

/// Installs the `tracing` subscriber: `RUST_LOG` or `info`, to stderr.
pub fn init_logging() {
    // Every binary calls this first: its TLS provider is chosen before any
    // TLS config is built (`crate::tls`).
    crate::tls::install_provider();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Ignored error: a subscriber is already installed (tests install their own).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Returns the root token, cancelled by the first SIGINT/SIGTERM; the second
/// signal exits the process immediately.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down (interrupt again to exit at once)");
        cancel.cancel();
        wait_for_signal().await;
        tracing::warn!("second interrupt, exiting now");
        std::process::exit(EXIT_INTERRUPTED);
    });
    token
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot watch SIGTERM, only Ctrl-C stops this process");
            // Ignored error: without a signal handler there is nothing to wait for.
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// An error and all its sources on one line: `outer: inner: root cause`.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}

/// Exponential backoff with jitter: `initial`, doubling up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay before the next attempt (with up to 25 % jitter), then doubles.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let jitter = base.mul_f64(f64::from(nanos % 1000) / 4000.0);
        base + jitter
    }

    /// Call after a success: the next failure waits `initial` again.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(200), Duration::from_secs(10))
    }
}

/// Runs `fut` and returns its output, or `None` if `token` is cancelled first.
pub async fn or_cancelled<F: Future>(token: &CancellationToken, fut: F) -> Option<F::Output> {
    tokio::select! {
        out = fut => Some(out),
        () = token.cancelled() => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        #[serde(default)]
        rows: u32,
    }

    impl Validate for Sample {
        fn validate(&self) -> Result<(), (&'static str, String)> {
            if self.rows > 10 {
                return Err(("rows", format!("must be at most 10, got {}", self.rows)));
            }
            Ok(())
        }
    }

    #[test]
    fn unknown_field_is_one_line_naming_it() {
        let err = parse_config::<Sample>("x.toml", "rows = 1\nrowz = 2\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("config x.toml:2:1: "), "{err}");
        assert!(err.contains("rowz"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn wrong_type_and_invalid_value_name_the_field() {
        let err = parse_config::<Sample>("x.toml", "rows = \"many\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("x.toml:1:"), "{err}");
        let err = parse_config::<Sample>("x.toml", "rows = 11").unwrap_err().to_string();
        assert_eq!(err, "config x.toml: field `rows`: must be at most 10, got 11");
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = load_config::<Sample>(Some(Path::new("/nonexistent/g.toml"))).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/g.toml"));
        assert_eq!(load_config::<Sample>(None).unwrap().rows, 0);
    }

    #[test]
    fn error_chain_joins_sources() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let outer = ConfigError::Read {
            path: "x".into(),
            source: io,
        };
        // The outer message already ends with the source: not repeated.
        assert_eq!(error_chain(&outer), "config x: cannot read: connection refused");
        #[derive(Debug, thiserror::Error)]
        #[error("connect")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("refused"));
        assert_eq!(error_chain(&e), "connect: refused");
    }

    #[test]
    fn backoff_grows_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let d: Vec<_> = (0..4).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(100) && d[0] < Duration::from_millis(126));
        assert!(d[1] >= Duration::from_millis(200));
        assert!(d[3] >= Duration::from_millis(400) && d[3] <= Duration::from_millis(500));
        b.reset();
        assert!(b.next_delay() < Duration::from_millis(126));
    }
}
