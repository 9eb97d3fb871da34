//! The metrics and health endpoint every process serves: a minimal HTTP
//! server (`GET /metrics` in the Prometheus text format, and the routes a
//! process adds), behind the connection guard of [`crate::listener`].
//!
//! Where configured (`metrics_token_file` of each service), the endpoint
//! answers only requests with `Authorization: Bearer TOKEN` ([`Access`]);
//! others get `401 Unauthorized` and nothing of the page.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metric, render};

/// Produces the body of `GET /metrics`.
pub type Renderer = std::sync::Arc<dyn Fn() -> String + Send + Sync>;

/// A [`Renderer`] of a static set of metrics, followed by those every
/// process shares (the listeners' guard, [`crate::listener::METRICS`]).
pub fn renderer(metrics: &'static [&'static dyn Metric]) -> Renderer {
    std::sync::Arc::new(move || {
        let mut out = render(metrics);
        out.push_str(&render(&crate::listener::METRICS));
        out
    })
}

/// Answers `GET path` (the path without its query): `Some((content type,
/// body))`, or `None` for 404.
pub type Routes = std::sync::Arc<dyn Fn(&str) -> Option<(&'static str, String)> + Send + Sync>;

/// The content type of the Prometheus text format.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4";

/// Who may read the endpoint: anyone, or only clients presenting a bearer token.
#[derive(Clone, Default)]
pub struct Access {
    token: Option<std::sync::Arc<[u8]>>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself.
        f.write_str(if self.token.is_some() {
            "Access(bearer)"
        } else {
            "Access(open)"
        })
    }
}

impl Access {
    /// Anyone may read (a listener only trusted clients reach).
    pub fn open() -> Access {
        Access::default()
    }

    /// Only `Authorization: Bearer TOKEN` (surrounding whitespace trimmed).
    pub fn bearer(token: &str) -> Access {
        Access {
            token: Some(token.trim().as_bytes().into()),
        }
    }

    /// [`Access::bearer`] with the token read from `path`, or open without a
    /// path. An empty token file is an error (it would let anyone in).
    pub fn from_file(path: Option<&std::path::Path>) -> std::io::Result<Access> {
        let Some(path) = path else { return Ok(Access::open()) };
        let token = std::fs::read_to_string(path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("metrics token file {}: {e}", path.display())))?;
        if token.trim().is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("metrics token file {} is empty", path.display()),
            ));
        }
        Ok(Access::bearer(&token))
    }

    /// Whether a request with head `head` (request line and headers) may read.
    fn allows(&self, head: &[u8]) -> bool {
        let Some(token) = &self.token else { return true };
        let presented = head
            .split(|b| *b == b'\n')
            .filter_map(|line| {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let colon = line.iter().position(|b| *b == b':')?;
                let (name, value) = line.split_at(colon);
                name.eq_ignore_ascii_case(b"authorization")
                    .then(|| value[1..].trim_ascii())
            })
            .next()
            .and_then(|v| {
                let (scheme, credential) = v.split_at(v.iter().position(|b| *b == b' ')?);
                scheme.eq_ignore_ascii_case(b"bearer").then(|| credential.trim_ascii())
            });
        presented.is_some_and(|p| constant_time_eq(p, token))
    }
}

/// Equality whose time does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves `GET /metrics` on `listener` to clients `access` lets in, until
/// `cancel`. `GET /healthz` answers `ok` to anyone (liveness probes); other
/// paths get 404; requests are read with a size cap and a deadline.
pub async fn serve(listener: TcpListener, metrics: Renderer, access: Access, cancel: CancellationToken) {
    let routes: Routes = std::sync::Arc::new(move |path: &str| (path == "/metrics").then(|| (TEXT_FORMAT, metrics())));
    serve_routes(listener, routes, access, cancel).await;
}

/// Connections a metrics endpoint serves at once (scrapers and the CLI;
/// one more is closed at accept) and the deadline of each: the request head
/// must arrive, and the response be taken, within it.
pub const LIMITS: crate::listener::Limits = crate::listener::Limits {
    max_connections: 64,
    idle: Duration::from_secs(5),
};

/// Serves the GET requests `routes` answers on `listener` to clients `access`
/// lets in, until `cancel`, at most [`LIMITS`] connections at once.
pub async fn serve_routes(listener: TcpListener, routes: Routes, access: Access, cancel: CancellationToken) {
    use futures::StreamExt as _;
    let addr = listener.local_addr().ok();
    tracing::info!(listen = ?addr, "metrics endpoint serving");
    let mut incoming = std::pin::pin!(crate::listener::accept(listener, LIMITS, "metrics"));
    loop {
        let accepted = tokio::select! {
            a = incoming.next() => a,
            () = cancel.cancelled() => return,
        };
        let Some(Ok(stream)) = accepted else { continue };
        let routes = routes.clone();
        let access = access.clone();
        tokio::spawn(async move {
            if let Err(error) = answer(stream, &routes, &access).await {
                tracing::debug!(%error, "metrics request failed");
            }
        });
    }
}

async fn answer(mut stream: crate::listener::Guarded, routes: &Routes, access: &Access) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request head timed out"))??;
    // `GET /path?query HTTP/1.1`: the path, without its query.
    let path = head
        .strip_prefix(b"GET ")
        .and_then(|rest| rest.split(|b| *b == b' ').next())
        .and_then(|target| std::str::from_utf8(target).ok())
        .map(|target| target.split('?').next().unwrap_or(target));
    // Refused before any route runs: nothing of a page is computed for a
    // client without the token.
    let (status, content_type, body, extra) = if path == Some("/healthz") {
        // Liveness for probes, which cannot send the token: says only that
        // the process answers.
        ("200 OK", "text/plain", "ok\n".to_owned(), "")
    } else if !access.allows(&head) {
        (
            "401 Unauthorized",
            "text/plain",
            "unauthorized\n".to_owned(),
            "WWW-Authenticate: Bearer\r\n",
        )
    } else {
        match path.and_then(|p| routes(p)) {
            Some((content_type, body)) => ("200 OK", content_type, body, ""),
            None => ("404 Not Found", "text/plain", "not found\n".to_owned(), ""),
        }
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// The start-up rule of every metrics listener: one reachable from other
/// hosts (not loopback) must have a token, or the process refuses to start
/// (as a config error of `metrics_token_file`).
pub fn require_token_off_loopback(
    listen: Option<SocketAddr>,
    token_file: Option<&std::path::Path>,
) -> Result<(), (&'static str, String)> {
    match listen {
        Some(addr) if !addr.ip().is_loopback() && token_file.is_none() => Err((
            "metrics_token_file",
            format!(
                "required when metrics_listen ({addr}) is not a loopback address: without it anyone who reaches the port reads the service's state"
            ),
        )),
        _ => Ok(()),
    }
}

/// Binds `addr` for [`serve`], with an error naming the address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("metrics listener {addr}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Counter, Histogram, LabeledCounter};
    use tokio::net::TcpStream;

    #[test]
    fn an_open_listener_off_loopback_needs_a_token() {
        let token = std::path::Path::new("/run/token");
        let public = Some(SocketAddr::from(([0, 0, 0, 0], 9464)));
        let local = Some(SocketAddr::from(([127, 0, 0, 1], 9464)));
        let (key, why) = require_token_off_loopback(public, None).unwrap_err();
        assert_eq!(key, "metrics_token_file");
        assert!(why.contains("0.0.0.0:9464"), "{why}");
        assert!(require_token_off_loopback(public, Some(token)).is_ok());
        assert!(require_token_off_loopback(local, None).is_ok());
        assert!(require_token_off_loopback(None, None).is_ok());
    }

    static C: Counter = Counter::new("t_total", "a counter");
    static L: LabeledCounter<3> = LabeledCounter::new("t_refusals_total", "refusals", "reason", ["a", "b", "other"]);
    static H: Histogram = Histogram::new("t_latency_seconds", "latency");
    static ALL: [&dyn Metric; 3] = [&C, &L, &H];

    /// `GET path` on a fresh connection: the whole response.
    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn renders_and_serves_the_exposition_format() {
        C.add(3);
        L.add("b", 2);
        L.add("nonsense", 1);
        H.observe(Duration::from_millis(3));
        let text = render(&ALL);
        assert!(text.contains("# TYPE t_total counter\nt_total 3\n"), "{text}");
        assert!(text.contains("t_refusals_total{reason=\"b\"} 2\n"));
        assert!(text.contains("t_refusals_total{reason=\"other\"} 1\n"));
        assert!(text.contains("t_latency_seconds_bucket{le=\"0.0025\"} 0\n"));
        assert!(text.contains("t_latency_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("t_latency_seconds_count 1\n"));

        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let server = tokio::spawn(serve(listener, renderer(&ALL), Access::open(), cancel.clone()));
        let get = |path: &'static str| get(addr, path);
        let ok = get("/metrics").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK") && ok.contains("t_total 3"), "{ok}");
        assert!(get("/").await.starts_with("HTTP/1.1 404"));
        cancel.cancel();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn with_a_token_only_healthz_answers_without_it() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            renderer(&ALL),
            Access::bearer("s3cret"),
            cancel.clone(),
        ));
        let get = |path: &'static str| get(addr, path);
        let health = get("/healthz").await;
        assert!(
            health.starts_with("HTTP/1.1 200 OK") && health.ends_with("\r\n\r\nok\n"),
            "{health}"
        );
        let metrics = get("/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 401"), "{metrics}");
        assert!(!metrics.contains("t_total"), "{metrics}");
        cancel.cancel();
        server.await.unwrap();
    }

    #[test]
    fn bearer_access_wants_exactly_the_token() {
        let a = Access::bearer("s3cret\n");
        let head = |auth: &str| format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{auth}\r\n\r\n").into_bytes();
        assert!(a.allows(&head("Authorization: Bearer s3cret")));
        assert!(a.allows(&head("authorization:   bearer   s3cret  ")));
        assert!(!a.allows(&head("")));
        assert!(!a.allows(&head("Authorization: Bearer s3cre")));
        assert!(!a.allows(&head("Authorization: Bearer s3cretX")));
        assert!(!a.allows(&head("Authorization: Basic s3cret")));
        assert!(!a.allows(&head("Authorization: Bearer")));
        assert!(!a.allows(&head("X-Authorization: Bearer s3cret")));
        assert!(Access::open().allows(&head("")));
        assert_eq!(format!("{a:?}"), "Access(bearer)");
    }
}
