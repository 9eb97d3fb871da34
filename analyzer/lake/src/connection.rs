//! What both SQL front doors do around their protocol: a cap on the
//! connections served at once, a handshake deadline, an idle timeout, a
//! write timeout for a client that stops reading, and the counters of what
//! they cut off (`glasshouse_sql_connections_*_total` on the query
//! service's `/metrics`).
//!
//! The PostgreSQL front door runs its own message loop (`pg`) and applies
//! the handshake and idle timeouts there, with a FATAL message; the Flight
//! SQL front door (HTTP/2 under tonic) gets them from [`Watched`] itself,
//! which fails the next read once the deadline passes, and hyper closes the
//! connection.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use glasshouse_runtime::metrics::{LabeledCounter, LabeledGauge, Metric};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};
use tracing::{info, warn};

use crate::config::SqlConfig;

/// The connection budget of a front door (`[sql]`).
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Connections served at once; one more is refused.
    pub max_connections: usize,
    /// Start-up and authentication must be done within this.
    pub handshake_timeout: Duration,
    /// An authenticated connection without traffic is closed after this.
    pub idle_timeout: Duration,
    /// A write blocked this long (the client stopped reading) ends the connection.
    pub write_timeout: Duration,
}

impl Budget {
    pub fn from_config(c: &SqlConfig) -> Budget {
        Budget {
            max_connections: c.max_connections,
            handshake_timeout: Duration::from_secs(c.handshake_timeout_secs),
            idle_timeout: Duration::from_secs(c.idle_timeout_secs),
            write_timeout: Duration::from_secs(c.write_timeout_secs),
        }
    }
}

impl Default for Budget {
    fn default() -> Budget {
        Budget::from_config(&SqlConfig::default())
    }
}

/// Which front door.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    Pg,
    Flight,
}

impl Door {
    pub fn name(self) -> &'static str {
        match self {
            Door::Pg => "postgresql",
            Door::Flight => "flight",
        }
    }
}

/// A connection cut off by its budget: logged and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cutoff {
    /// Over `max_connections`.
    Refused,
    /// Start-up and authentication not done within `handshake_timeout`.
    Handshake,
    /// Authenticated but silent for `idle_timeout`.
    Idle,
    /// A write blocked for `write_timeout`.
    Write,
}

/// The label values of the SQL metrics: the front doors' names.
const DOORS: [&str; 2] = ["postgresql", "flight"];

pub static REFUSED: LabeledCounter<2> = LabeledCounter::new(
    "glasshouse_sql_connections_refused_total",
    "SQL connections refused over sql.max_connections.",
    "door",
    DOORS,
);
pub static HANDSHAKE_TIMEOUTS: LabeledCounter<2> = LabeledCounter::new(
    "glasshouse_sql_handshake_timeouts_total",
    "SQL connections closed for not authenticating within sql.handshake_timeout_secs.",
    "door",
    DOORS,
);
pub static IDLE_TIMEOUTS: LabeledCounter<2> = LabeledCounter::new(
    "glasshouse_sql_idle_timeouts_total",
    "SQL connections closed after sql.idle_timeout_secs without traffic.",
    "door",
    DOORS,
);
pub static WRITE_TIMEOUTS: LabeledCounter<2> = LabeledCounter::new(
    "glasshouse_sql_write_timeouts_total",
    "SQL connections cut off after a write blocked for sql.write_timeout_secs.",
    "door",
    DOORS,
);
pub static OPEN: LabeledGauge<2> = LabeledGauge::new(
    "glasshouse_sql_connections",
    "SQL connections served now.",
    "door",
    DOORS,
);

/// Every metric of the SQL front doors (process-wide), for a `/metrics` page.
pub static METRICS: [&dyn Metric; 5] = [&REFUSED, &HANDSHAKE_TIMEOUTS, &IDLE_TIMEOUTS, &WRITE_TIMEOUTS, &OPEN];

impl Cutoff {
    /// The counter of this cut-off (label `door`).
    pub fn counter(self) -> &'static LabeledCounter<2> {
        match self {
            Cutoff::Refused => &REFUSED,
            Cutoff::Handshake => &HANDSHAKE_TIMEOUTS,
            Cutoff::Idle => &IDLE_TIMEOUTS,
            Cutoff::Write => &WRITE_TIMEOUTS,
        }
    }

    /// Logs and counts one cut-off connection.
    pub fn emit(self, door: Door, peer: Option<std::net::SocketAddr>) {
        let door = door.name();
        self.counter().add(door, 1);
        match self {
            Cutoff::Refused => warn!(door, ?peer, "sql: connection refused: too many connections"),
            Cutoff::Handshake => info!(door, ?peer, "sql: connection closed: no authentication in time"),
            Cutoff::Idle => info!(door, ?peer, "sql: connection closed: idle"),
            Cutoff::Write => warn!(door, ?peer, "sql: connection cut off: the client stopped reading"),
        }
    }
}

/// Connections a front door is serving now.
pub fn open(door: Door) -> u64 {
    OPEN.get(door.name())
}

/// One count, for tests.
pub fn count(cutoff: Cutoff, door: Door) -> u64 {
    cutoff.counter().get(door.name())
}

/// Whether a connection has authenticated, set by the front door.
#[derive(Debug, Default)]
pub struct Authenticated(AtomicBool);

impl Authenticated {
    pub fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The connection information a Flight SQL call sees (tonic puts it in
/// the request's extensions): the peer, and the flag its authentication sets.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub peer: Option<std::net::SocketAddr>,
    pub authenticated: Arc<Authenticated>,
}

/// Handshake and idle deadlines applied on reads ([`Watched::with_deadlines`]).
#[derive(Debug)]
struct Deadlines {
    authenticated: Arc<Authenticated>,
    accepted: Instant,
    handshake: Duration,
    idle: Duration,
    last_traffic: Instant,
    timer: Pin<Box<Sleep>>,
}

impl Deadlines {
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<Cutoff> {
        loop {
            let (deadline, cutoff) = if self.authenticated.get() {
                (self.last_traffic + self.idle, Cutoff::Idle)
            } else {
                (self.accepted + self.handshake, Cutoff::Handshake)
            };
            if Instant::now() >= deadline {
                return Poll::Ready(cutoff);
            }
            if self.timer.deadline() != deadline {
                self.timer.as_mut().reset(deadline);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

/// A TCP connection of a front door holding its slot (released when the
/// connection is dropped), with a write timeout and, for Flight SQL, the
/// handshake and idle deadlines.
#[derive(Debug)]
pub struct Watched {
    /// Declared first so it is dropped first: the slot is free again by the
    /// time the client sees the connection close.
    _slot: OwnedSemaphorePermit,
    io: TcpStream,
    door: Door,
    peer: Option<std::net::SocketAddr>,
    write_timeout: Duration,
    /// Armed while a write is blocked.
    write_stall: Option<Pin<Box<Sleep>>>,
    deadlines: Option<Deadlines>,
    /// Set once a cut-off was reported: later polls fail without counting again.
    cut: bool,
}

impl Watched {
    pub fn new(io: TcpStream, door: Door, slot: OwnedSemaphorePermit, budget: &Budget) -> Watched {
        let peer = io.peer_addr().ok();
        OPEN.inc(door.name());
        Watched {
            _slot: slot,
            io,
            door,
            peer,
            write_timeout: budget.write_timeout,
            write_stall: None,
            deadlines: None,
            cut: false,
        }
    }

    /// Fails reads once the handshake deadline passes before
    /// [`Authenticated::set`], or the idle timeout after it.
    pub fn with_deadlines(mut self, budget: &Budget) -> Watched {
        let now = Instant::now();
        self.deadlines = Some(Deadlines {
            authenticated: Arc::default(),
            accepted: now,
            handshake: budget.handshake_timeout,
            idle: budget.idle_timeout,
            last_traffic: now,
            timer: Box::pin(tokio::time::sleep_until(now + budget.handshake_timeout)),
        });
        self
    }

    pub fn nodelay(&self) -> io::Result<()> {
        self.io.set_nodelay(true)
    }

    pub fn peer(&self) -> Option<std::net::SocketAddr> {
        self.peer
    }

    fn traffic(&mut self) {
        if let Some(d) = &mut self.deadlines {
            d.last_traffic = Instant::now();
        }
    }

    fn cut_off(&mut self, cutoff: Cutoff) -> io::Error {
        if !self.cut {
            self.cut = true;
            cutoff.emit(self.door, self.peer);
        }
        let what = match cutoff {
            Cutoff::Handshake => "no authentication within the handshake timeout",
            Cutoff::Idle => "idle timeout",
            _ => "the client stopped reading (write timeout)",
        };
        io::Error::new(io::ErrorKind::TimedOut, what)
    }

    /// A write is blocked: pending until the write timeout, then an error.
    fn stalled<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let timeout = self.write_timeout;
        let timer = self
            .write_stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(self.cut_off(Cutoff::Write))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        OPEN.dec(self.door.name());
    }
}

impl tonic::transport::server::Connected for Watched {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        ConnectionInfo {
            peer: self.peer,
            authenticated: self
                .deadlines
                .as_ref()
                .map(|d| d.authenticated.clone())
                .unwrap_or_default(),
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.traffic();
                }
                Poll::Ready(r)
            }
            Poll::Pending => match this.deadlines.as_mut().map(|d| d.poll_expired(cx)) {
                Some(Poll::Ready(cutoff)) => Poll::Ready(Err(this.cut_off(cutoff))),
                _ => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Pending => this.stalled(cx),
            Poll::Ready(r) => {
                this.write_stall = None;
                if matches!(r, Ok(n) if n > 0) {
                    this.traffic();
                }
                Poll::Ready(r)
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Pending => this.stalled(cx),
            Poll::Ready(r) => {
                this.write_stall = None;
                Poll::Ready(r)
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
