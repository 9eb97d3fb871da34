//! Container metadata from the Docker-compatible API (served by Docker and by
//! `podman system service`) over its unix socket: name, image reference, image
//! id and labels (Kubernetes' labels name the pod, namespace and container).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::UnixStream;

/// Largest inspect response accepted.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Per-request deadline.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// What the runtime says about a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerMeta {
    pub name: Option<String>,
    /// Image reference as started (`registry/repo:tag` or `repo@sha256:…`).
    pub image: Option<String>,
    /// Image id (`sha256:…`).
    pub image_id: Option<String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("runtime socket {socket}: {source}")]
    Connect {
        socket: String,
        #[source]
        source: std::io::Error,
    },
    #[error("runtime socket {socket}: http: {source}")]
    Http {
        socket: String,
        #[source]
        source: hyper::Error,
    },
    #[error("runtime socket {socket}: response body: {message}")]
    Body { socket: String, message: String },
    #[error("runtime socket {socket}: status {status} for container {id}")]
    Status { socket: String, id: String, status: u16 },
    #[error("runtime socket {socket}: invalid inspect json: {source}")]
    Json {
        socket: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("runtime socket {socket}: timed out")]
    Timeout { socket: String },
}

impl RuntimeError {
    /// The container is unknown to this runtime (as opposed to the runtime failing).
    pub fn is_not_found(&self) -> bool {
        matches!(self, RuntimeError::Status { status: 404, .. })
    }
}

/// A client of one or more Docker-compatible API sockets.
#[derive(Debug, Clone)]
pub struct RuntimeClient {
    sockets: Vec<PathBuf>,
}

impl RuntimeClient {
    pub fn new(sockets: Vec<PathBuf>) -> RuntimeClient {
        RuntimeClient { sockets }
    }

    /// Asks each existing socket in turn; the first that knows the container wins.
    pub async fn inspect(&self, id: &str) -> Result<Option<ContainerMeta>, RuntimeError> {
        let mut last_error = None;
        for socket in self.sockets.iter().filter(|s| s.exists()) {
            match tokio::time::timeout(REQUEST_TIMEOUT, inspect_on(socket, id)).await {
                Ok(Ok(meta)) => return Ok(Some(meta)),
                Ok(Err(e)) if e.is_not_found() => {}
                Ok(Err(e)) => last_error = Some(e),
                Err(_) => {
                    last_error = Some(RuntimeError::Timeout {
                        socket: socket.display().to_string(),
                    });
                }
            }
        }
        last_error.map_or(Ok(None), Err)
    }
}

async fn inspect_on(socket: &Path, id: &str) -> Result<ContainerMeta, RuntimeError> {
    let shown = || socket.display().to_string();
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| RuntimeError::Connect {
            socket: shown(),
            source,
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|source| RuntimeError::Http {
            socket: shown(),
            source,
        })?;
    let conn = tokio::spawn(conn);
    // `id` is 64 hex digits (checked by attribution), safe in a URL path.
    let request = hyper::Request::get(format!("/v1.41/containers/{id}/json"))
        .header(hyper::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())
        // Cannot fail: constant method, a valid path and header.
        .expect("static request is valid");
    let response = sender
        .send_request(request)
        .await
        .map_err(|source| RuntimeError::Http {
            socket: shown(),
            source,
        })?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| RuntimeError::Body {
            socket: shown(),
            message: e.to_string(),
        })?
        .to_bytes();
    conn.abort();
    if status != 200 {
        return Err(RuntimeError::Status {
            socket: shown(),
            id: id.to_owned(),
            status,
        });
    }
    parse_inspect(&body).map_err(|source| RuntimeError::Json {
        socket: shown(),
        source,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Inspect {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    config: Option<InspectConfig>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectConfig {
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

/// Parses a `GET /containers/{id}/json` response.
pub fn parse_inspect(body: &[u8]) -> Result<ContainerMeta, serde_json::Error> {
    let inspect: Inspect = serde_json::from_slice(body)?;
    let config = inspect.config;
    let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
    Ok(ContainerMeta {
        name: non_empty(inspect.name.map(|n| n.trim_start_matches('/').to_owned())),
        image: non_empty(config.as_ref().and_then(|c| c.image.clone())),
        image_id: non_empty(inspect.image),
        labels: config.and_then(|c| c.labels).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn podman_inspect_sample() {
        let body = br#"{"Id":"41ee","Name":"/web-1","Image":"sha256:3c44","Config":{"Image":"localhost/glasshouse-test:latest","Labels":{"app":"web"}},"State":{"Pid":12}}"#;
        let m = parse_inspect(body).unwrap();
        assert_eq!(m.name.as_deref(), Some("web-1"));
        assert_eq!(m.image.as_deref(), Some("localhost/glasshouse-test:latest"));
        assert_eq!(m.image_id.as_deref(), Some("sha256:3c44"));
        assert_eq!(m.labels.get("app").map(String::as_str), Some("web"));
    }

    #[test]
    fn sparse_and_null_fields() {
        let m = parse_inspect(br#"{"Name":"","Config":{"Labels":null}}"#).unwrap();
        assert_eq!(m, ContainerMeta::default());
        assert!(parse_inspect(b"[1,2]").is_err());
    }

    #[tokio::test]
    async fn missing_socket_means_unknown() {
        let c = RuntimeClient::new(vec![PathBuf::from("/nonexistent/glasshouse.sock")]);
        assert_eq!(c.inspect(&"a".repeat(64)).await.unwrap(), None);
    }
}
