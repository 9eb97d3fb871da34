//! Accepting connections with a cap and a deadline: every listener of a
//! long-lived process goes through [`accept`], so a flood of idle sockets
//! cannot exhaust the process's descriptors or lock a legitimate client out.
//!
//! ```text
//!  TcpListener ──accept──▶ permit? ──no──▶ closed at once, counted (limit)
//!                             │yes
//!                             ▼
//!                      Guarded stream: a read that waits longer than
//!                      `idle` or a write stalled longer than `idle`
//!                      fails with TimedOut (counted), so the connection ends
//! ```
//!
//! The idle deadline also bounds the handshake: a client that connects and
//! sends nothing (no TLS hello, no HTTP/2 preface) is cut off after `idle`.
//! HTTP/2 servers keep healthy idle connections alive with pings shorter
//! than `idle` (the peer's ping acknowledgements are reads).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::metrics::{LabeledCounter, Metric};

/// Connections closed by a listener's guard, by reason.
pub static CONNECTIONS_REFUSED: LabeledCounter<2> = LabeledCounter::new(
    "glasshouse_connections_refused_total",
    "Connections closed by a listener's guard: over the connection cap (limit) or idle/stalled past the deadline (timeout).",
    "reason",
    ["limit", "timeout"],
);

/// The guard's metrics, for a process's `/metrics` page.
pub static METRICS: [&dyn Metric; 1] = [&CONNECTIONS_REFUSED];

/// Limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once; one more is closed at accept.
    pub max_connections: usize,
    /// Longest wait for the peer's next bytes, or for it to take ours.
    pub idle: Duration,
}

/// A connection holding one of its listener's permits, with an idle deadline.
#[derive(Debug)]
pub struct Guarded {
    inner: TcpStream,
    idle: Duration,
    read_deadline: Pin<Box<Sleep>>,
    write_deadline: Option<Pin<Box<Sleep>>>,
    _permit: OwnedSemaphorePermit,
}

impl Guarded {
    pub fn get_ref(&self) -> &TcpStream {
        &self.inner
    }

    /// A write is pending: arms the write deadline (once per stall) and
    /// fails the write when it passes.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let idle = self.idle;
        let deadline = self
            .write_deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(timed_out("write stalled"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn timed_out(what: &str) -> io::Error {
    CONNECTIONS_REFUSED.add("timeout", 1);
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("connection {what} past the idle deadline"),
    )
}

impl AsyncRead for Guarded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let next = Instant::now() + self.idle;
                    self.read_deadline.as_mut().reset(next);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match self.read_deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(timed_out("idle"))),
                Poll::Pending => Poll::Pending,
            },
            ready => ready,
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, data) {
            Poll::Pending => self.stalled(cx),
            ready => {
                self.write_deadline = None;
                ready
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total = bufs.iter().map(|b| b.len()).sum::<usize>();
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending if total > 0 => self.stalled(cx),
            ready => {
                self.write_deadline = None;
                ready
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Guarded {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// The connections of `listener`, each holding one of `limits.max_connections`
/// permits; one over the cap is closed at once and counted. Accept errors
/// (out of descriptors) are logged and retried after a pause, never ending
/// the stream. `name` labels the logs.
pub fn accept(
    listener: TcpListener,
    limits: Limits,
    name: &'static str,
) -> impl Stream<Item = io::Result<Guarded>> + Send + 'static {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    futures::stream::unfold((listener, permits), move |(listener, permits)| async move {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => match permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let guarded = Guarded {
                            inner: stream,
                            idle: limits.idle,
                            read_deadline: Box::pin(tokio::time::sleep(limits.idle)),
                            write_deadline: None,
                            _permit: permit,
                        };
                        return Some((Ok(guarded), (listener, permits)));
                    }
                    Err(_) => {
                        CONNECTIONS_REFUSED.add("limit", 1);
                        tracing::warn!(listener = name, %peer, max = limits.max_connections, "connection refused: too many open connections");
                        drop(stream);
                    }
                },
                Err(error) => {
                    tracing::warn!(listener = name, %error, "accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
}

/// Logs the process's descriptor limit (`RLIMIT_NOFILE`), which bounds how
/// many connections all listeners together can hold.
pub fn log_descriptor_limit() {
    match std::fs::read_to_string("/proc/self/limits") {
        Ok(limits) => {
            if let Some(line) = limits.lines().find(|l| l.starts_with("Max open files")) {
                let mut fields = line.split_whitespace().skip(3);
                let soft = fields.next().unwrap_or("?");
                let hard = fields.next().unwrap_or("?");
                tracing::info!(soft, hard, "open file descriptor limit");
            }
        }
        Err(error) => tracing::warn!(%error, "cannot read the descriptor limit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn listener() -> (TcpListener, std::net::SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        (l, a)
    }

    #[tokio::test]
    async fn one_connection_over_the_cap_is_closed_and_a_freed_permit_serves_the_next() {
        let (l, addr) = listener().await;
        let limits = Limits {
            max_connections: 2,
            idle: Duration::from_secs(30),
        };
        let mut incoming = Box::pin(accept(l, limits, "test"));
        let before = CONNECTIONS_REFUSED.get("limit");
        let _a = TcpStream::connect(addr).await.unwrap();
        let first = incoming.next().await.unwrap().unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let _second = incoming.next().await.unwrap().unwrap();
        // The third is accepted by the kernel, then closed by the guard.
        let mut third = TcpStream::connect(addr).await.unwrap();
        let next = tokio::spawn(async move {
            let c = incoming.next().await.unwrap().unwrap();
            (c, incoming)
        });
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut byte))
            .await
            .expect("closed at once")
            .unwrap_or(0);
        assert_eq!(n, 0, "over the cap: closed");
        assert!(CONNECTIONS_REFUSED.get("limit") > before);
        // A permit freed: the next client is served.
        drop(first);
        let mut fourth = TcpStream::connect(addr).await.unwrap();
        let (mut served, _incoming) = tokio::time::timeout(Duration::from_secs(5), next)
            .await
            .unwrap()
            .unwrap();
        served.write_all(b"ok").await.unwrap();
        let mut got = [0u8; 2];
        fourth.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ok");
    }

    #[tokio::test]
    async fn a_silent_peer_is_cut_off_after_the_idle_deadline_and_bytes_reset_it() {
        let (l, addr) = listener().await;
        let limits = Limits {
            max_connections: 4,
            idle: Duration::from_millis(300),
        };
        let mut incoming = Box::pin(accept(l, limits, "test"));
        let mut talker = TcpStream::connect(addr).await.unwrap();
        let mut served = incoming.next().await.unwrap().unwrap();
        // Bytes every 100 ms keep it alive past several deadlines.
        let writer = tokio::spawn(async move {
            for _ in 0..8 {
                talker.write_all(b"x").await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            talker
        });
        let mut buf = [0u8; 8];
        let mut got = 0;
        while got < 8 {
            got += served.read(&mut buf).await.unwrap();
        }
        let _talker = writer.await.unwrap();
        // Then silence: the next read fails with TimedOut.
        let before = CONNECTIONS_REFUSED.get("timeout");
        let error = served.read(&mut buf).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(CONNECTIONS_REFUSED.get("timeout") > before);
    }
}
