//! The gRPC stream to the aggregator: connect (failing over between endpoints,
//! with backoff and a warning naming the address), send a hello, re-send every
//! unacknowledged batch, then stream new batches while acks come back.
//!
//! # Unacknowledged batches: a window in memory, a spool on disk
//! The client spills, it does not write ahead. While the aggregator keeps up,
//! a batch goes from the pipeline into the in-memory window (at most
//! `max_unacked` batches) and onto the stream, encoded once with the stream's
//! interning: the hot path touches no disk. Writing every batch ahead would
//! cost a second, self-contained encoding and a disk write per batch on every
//! host all the time, for batches acknowledged milliseconds later. The spool
//! ([`crate::spool`]) takes over when memory is not enough:
//! * the window is full (the aggregator is behind) or the stream failed (it is
//!   unreachable): the window's batches are written to the spool (and stay in
//!   flight), and from then on every new batch is appended to it, so the spool
//!   holds the whole unacknowledged tail in order. Batches are read back, in
//!   order, as the window empties; once the spool is empty again, batches go
//!   straight to the stream;
//! * at exit, whatever only memory holds is written to the spool, and the
//!   next start sends the spool first.
//!
//! The price: a crash of the agent process (not a clean stop) while the
//! aggregator is healthy loses the window, at most `max_unacked` batches that
//! were sent but not yet acknowledged; what reached the spool survives it.
//!
//! # Spooled batches on the wire
//! A spooled batch is self-contained: a wire batch encoded by a fresh
//! [`StreamEncoder`] with `reset_strings` set, so it defines every string and
//! container it uses. It is re-sent as stored, and since it resets the
//! aggregator's tables, the live encoder starts over after it and marks its
//! next batch `reset_strings` too (a fresh encoder defines all it uses).
//!
//! # Identity
//! Batches are re-sent with their original (agent_id, boot_id, sequence), so
//! consumers drop duplicates by event id. The aggregator takes the boot from
//! the stream's `Hello`: spooled batches of an earlier run go on a stream
//! whose `Hello` carries that run's agent and boot ids; once they are
//! acknowledged, the client opens the next stream (the next run's, then its
//! own). A stream carries one identity, in increasing sequence order.
//!
//! # Backpressure
//! Without a spool, at most `max_unacked` batches are in flight; beyond that
//! the client stops taking batches and the pipeline waits (the kernel side
//! drops and counts). With a spool the client always takes batches: the
//! spool's size bound drops the oldest (counted), never the kernel side.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use glasshouse_proto::v1::{self, agent_frame, aggregator_frame, ingest_client::IngestClient};
use glasshouse_runtime::service::{Backoff, error_chain};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::encode::StreamEncoder;
use crate::record::PendingBatch;
use crate::spool::{Identity, Record, RecordPos, Spool, SpoolConfig, SpoolError, SpoolMetrics, SpoolStats};

/// Spooled batches read back per trip to the blocking pool.
const REFILL_CHUNK: usize = 64;

/// What the client needs to know.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub endpoints: Vec<String>,
    pub hello: v1::Hello,
    /// Bearer token presented with `hello.agent_id`.
    pub token: Option<String>,
    /// TLS settings for every endpoint.
    pub tls: Option<tonic::transport::ClientTlsConfig>,
    pub max_unacked: usize,
    pub max_strings: usize,
    pub drain_timeout: Duration,
    /// The on-disk spool; `None`: unacknowledged batches live in memory only.
    pub spool: Option<SpoolConfig>,
}

/// How the client ended.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ClientReport {
    pub batches_acked: u64,
    /// Batches still unacknowledged at exit and not in the spool (lost).
    pub batches_unacked: usize,
    pub events_unacked: usize,
    /// Batches the aggregator refused as malformed, dropped (and logged).
    pub batches_refused: u64,
    pub events_refused: u64,
    /// Unacknowledged batches left in the spool at exit: the next start
    /// re-sends them first.
    pub spool_batches: u64,
    /// Size of the spool's files at exit.
    pub spool_bytes: u64,
    /// Batches (and their events) the spool lost: the oldest, dropped when it
    /// was full, and any it could not write or read back.
    pub spool_dropped_batches: u64,
    pub spool_dropped_events: u64,
}

enum SessionEnd {
    /// Input closed and everything acknowledged, or the drain deadline passed.
    Done,
    Failed(String),
    /// This stream's batches are acknowledged; the next ones need a stream
    /// with another `Hello` (another run's identity).
    NextStream,
}

type Frames = mpsc::Sender<v1::AgentFrame>;

/// The stream closed while sending.
struct Closed;

/// Streams batches from `batches` until it closes and all are acknowledged, or
/// until the drain deadline after `cancel`.
pub async fn run(
    config: ClientConfig,
    mut batches: mpsc::Receiver<PendingBatch>,
    cancel: CancellationToken,
) -> ClientReport {
    let (spool, spool_stats) = match config.spool.clone() {
        Some(c) => open_spool(c).await,
        None => (None, SpoolStats::default()),
    };
    let mut state = State {
        window: VecDeque::new(),
        window_identity: None,
        current: Identity {
            agent_id: config.hello.agent_id.clone(),
            boot_id: config.hello.boot_id,
        },
        spool,
        spool_stats,
        spool_metrics: config.spool.as_ref().map(|c| c.metrics.clone()),
        spilling: false,
        lost_batches: 0,
        lost_events: 0,
        max_unacked: config.max_unacked,
        max_strings: config.max_strings,
        input_closed: false,
        drain_deadline: None,
        drain_timeout: config.drain_timeout,
        acked: 0,
        refused_batches: 0,
        refused_events: 0,
    };
    let mut backoff = Backoff::default();
    // Agents spread over the endpoints by their id, and fail over in list order.
    let mut attempt = spread_start(&config.hello.agent_id, config.endpoints.len());
    loop {
        if state.finished() {
            break;
        }
        let identity = state.next_identity().await;
        let endpoint = &config.endpoints[attempt % config.endpoints.len()];
        attempt += 1;
        let connected = tokio::select! {
            c = connect(endpoint, config.tls.as_ref()) => Some(c),
            () = state.wait_drain(&cancel) => None,
        };
        let end = match connected {
            None => SessionEnd::Done,
            Some(Err(error)) => SessionEnd::Failed(format!("connect: {}", error_chain(&error))),
            Some(Ok(client)) => {
                session(
                    &config,
                    client,
                    &identity,
                    &mut batches,
                    &mut state,
                    &cancel,
                    &mut backoff,
                )
                .await
            }
        };
        match end {
            SessionEnd::Done => break,
            SessionEnd::NextStream => {
                // Same aggregator, next identity.
                attempt -= 1;
            }
            SessionEnd::Failed(error) => {
                if state.drain_expired() {
                    break;
                }
                let delay = backoff.next_delay();
                tracing::warn!(
                    aggregator = %endpoint,
                    %error,
                    retry_in = ?delay,
                    unacked = state.window.len(),
                    spooled = state.spool_stats.batches,
                    "aggregator unreachable, retrying"
                );
                // What only memory holds goes to disk while we cannot send.
                state.spill_window(true).await;
                let wake = Instant::now() + delay;
                loop {
                    // Keep taking batches while disconnected (they are sent on
                    // reconnect), so a closed input is noticed and shutdown
                    // does not wait for an aggregator it no longer needs.
                    let can_take = state.can_take();
                    tokio::select! {
                        () = tokio::time::sleep_until(wake) => break,
                        () = state.wait_drain(&cancel) => break,
                        batch = batches.recv(), if can_take => match batch {
                            // Disconnected: never fails to send.
                            Some(batch) => { let _ = state.take(batch, None).await; }
                            None => state.input_closed = true,
                        },
                    }
                    if state.finished() {
                        break;
                    }
                }
            }
        }
    }
    state.finish().await
}

/// Opens the spool on a blocking thread; without it the client still runs,
/// from memory, and says so.
async fn open_spool(config: SpoolConfig) -> (Option<Arc<Mutex<Spool>>>, SpoolStats) {
    let dir = config.dir.clone();
    match blocking(move || Spool::open(config)).await {
        Ok(spool) => {
            let stats = spool.stats();
            if stats.batches > 0 {
                tracing::info!(
                    dir = %dir.display(),
                    batches = stats.batches,
                    bytes = stats.bytes,
                    "spool holds unacknowledged batches of earlier runs; sending them first"
                );
            } else {
                tracing::info!(dir = %dir.display(), "spool opened");
            }
            (Some(Arc::new(Mutex::new(spool))), stats)
        }
        Err(error) => {
            tracing::error!(
                dir = %dir.display(),
                error = %error_chain(&error),
                "spool unavailable; unacknowledged batches are kept in memory only"
            );
            (None, SpoolStats::default())
        }
    }
}

/// Runs blocking file I/O off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        // A blocking task is only cancelled when the runtime shuts down, which
        // cannot happen while this task runs on it: the error is a panic.
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

/// A batch not acknowledged yet, in the order it was (or will be) sent.
struct InFlight {
    sequence: u64,
    events: usize,
    /// Where the batch is in the spool; `None` while only memory holds it.
    spooled: Option<RecordPos>,
    body: Body,
}

enum Body {
    /// Taken from the pipeline; encoded by the stream's encoder.
    Live(PendingBatch),
    /// Self-contained (spooled): sent as is.
    Wire(v1::Batch),
    /// Acknowledged or refused; leaves the window once it reaches the front.
    Done,
}

/// The live stream's encoder. A self-contained batch resets the aggregator's
/// tables: after one, the encoder starts over and marks its next batch
/// `reset_strings`.
struct LiveEncoder {
    encoder: StreamEncoder,
    max_strings: usize,
    reset_next: bool,
}

impl LiveEncoder {
    fn new(max_strings: usize) -> LiveEncoder {
        LiveEncoder {
            encoder: StreamEncoder::new(max_strings),
            max_strings,
            reset_next: false,
        }
    }

    fn encode(&mut self, batch: &PendingBatch) -> v1::Batch {
        let mut wire = self.encoder.encode(batch);
        if std::mem::take(&mut self.reset_next) {
            wire.reset_strings = true;
        }
        wire
    }

    fn sent_self_contained(&mut self) {
        self.encoder = StreamEncoder::new(self.max_strings);
        self.reset_next = true;
    }

    /// The wire form of a window entry for this stream; `None` for a done one.
    fn wire(&mut self, entry: &InFlight) -> Option<v1::Batch> {
        match &entry.body {
            Body::Live(batch) => Some(self.encode(batch)),
            Body::Wire(wire) => {
                self.sent_self_contained();
                Some(wire.clone())
            }
            Body::Done => None,
        }
    }
}

/// A batch encoded to stand alone on any stream, and its spool record.
fn self_contained(identity: &Identity, batch: &PendingBatch, max_strings: usize) -> (Record, v1::Batch) {
    let mut wire = StreamEncoder::new(max_strings).encode(batch);
    wire.reset_strings = true;
    let record = Record {
        identity: identity.clone(),
        sequence: batch.sequence,
        events: u32::try_from(batch.len()).unwrap_or(u32::MAX),
        batch: wire.encode_to_vec(),
    };
    (record, wire)
}

fn batch_frame(wire: v1::Batch) -> v1::AgentFrame {
    v1::AgentFrame {
        frame: Some(agent_frame::Frame::Batch(wire)),
    }
}

struct State {
    /// Sent (or to be sent on the next stream), not acknowledged; one
    /// identity, increasing sequences.
    window: VecDeque<InFlight>,
    /// The identity of the window's batches; `None` when it is empty.
    window_identity: Option<Identity>,
    /// This run's identity.
    current: Identity,
    spool: Option<Arc<Mutex<Spool>>>,
    /// As of the last spool call.
    spool_stats: SpoolStats,
    spool_metrics: Option<Arc<SpoolMetrics>>,
    /// Batches are going to the spool (logged once per episode).
    spilling: bool,
    /// Batches the spool could not take.
    lost_batches: u64,
    lost_events: u64,
    max_unacked: usize,
    max_strings: usize,
    input_closed: bool,
    drain_deadline: Option<Instant>,
    drain_timeout: Duration,
    acked: u64,
    refused_batches: u64,
    refused_events: u64,
}

impl State {
    fn finished(&self) -> bool {
        (self.input_closed && self.window.is_empty() && self.spool_stats.batches == 0) || self.drain_expired()
    }

    fn drain_expired(&self) -> bool {
        self.drain_deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Resolves when the drain deadline passes; the deadline starts when
    /// `cancel` fires.
    async fn wait_drain(&mut self, cancel: &CancellationToken) {
        if self.drain_deadline.is_none() {
            cancel.cancelled().await;
            self.start_drain();
        }
        if let Some(deadline) = self.drain_deadline {
            tokio::time::sleep_until(deadline).await;
        }
    }

    fn start_drain(&mut self) {
        self.drain_deadline
            .get_or_insert_with(|| Instant::now() + self.drain_timeout);
    }

    /// With a spool, batches are always taken (the spool's bound drops the
    /// oldest); without, only while the window has room.
    fn can_take(&self) -> bool {
        !self.input_closed && (self.spool.is_some() || self.window.len() < self.max_unacked)
    }

    /// The spool holds batches not acknowledged yet: new batches queue behind
    /// them.
    fn spool_active(&self) -> bool {
        self.spool.is_some() && self.spool_stats.batches > 0
    }

    /// Runs `f` on the spool on a blocking thread and refreshes the stats;
    /// `None` without a spool.
    async fn disk<T: Send + 'static>(&mut self, f: impl FnOnce(&mut Spool) -> T + Send + 'static) -> Option<T> {
        let spool = self.spool.clone()?;
        let (value, stats) = blocking(move || {
            // A panic in a spool call is re-raised in this task (see
            // `blocking`), so no live client sees a poisoned lock.
            let mut spool = spool.lock().unwrap_or_else(PoisonError::into_inner);
            let value = f(&mut spool);
            (value, spool.stats())
        })
        .await;
        self.spool_stats = stats;
        Some(value)
    }

    /// The identity the next stream must carry: the window's, else the next
    /// spooled batch's, else this run's.
    async fn next_identity(&mut self) -> Identity {
        if let Some(identity) = &self.window_identity {
            return identity.clone();
        }
        if self.spool_stats.unread > 0
            && let Some(Some(identity)) = self.disk(Spool::peek_identity).await
        {
            return identity;
        }
        self.current.clone()
    }

    /// Takes a new batch: straight into the window and onto `stream` (this
    /// run's live stream) when the spool is idle and the window has room,
    /// otherwise into the spool, behind everything unacknowledged.
    async fn take(
        &mut self,
        batch: PendingBatch,
        stream: Option<(&Frames, &mut LiveEncoder, &mut u64)>,
    ) -> Result<(), Closed> {
        let direct = match stream {
            Some(_) => !self.spool_active() && self.window.len() < self.max_unacked,
            None => self.spool.is_none(),
        };
        if direct {
            if self.window_identity.is_none() {
                self.window_identity = Some(self.current.clone());
            }
            let sequence = batch.sequence;
            let wire = stream.map(|(tx, encoder, last_sent)| {
                *last_sent = sequence;
                (tx, encoder.encode(&batch))
            });
            self.window.push_back(InFlight {
                sequence,
                events: batch.len(),
                spooled: None,
                body: Body::Live(batch),
            });
            if let Some((tx, wire)) = wire {
                tx.send(batch_frame(wire)).await.map_err(|_| Closed)?;
            }
            return Ok(());
        }
        if !self.spilling {
            self.spilling = true;
            let reason = if self.spool_active() {
                "spooled batches go first"
            } else if stream.is_none() {
                "aggregator unreachable"
            } else {
                "aggregator behind, window full"
            };
            tracing::warn!(
                reason,
                unacked = self.window.len(),
                spooled = self.spool_stats.batches,
                "spooling new batches to disk"
            );
        }
        self.spill_window(true).await;
        let events = batch.len();
        let identity = self.current.clone();
        let max_strings = self.max_strings;
        let appended = self
            .disk(move |spool| spool.append(&self_contained(&identity, &batch, max_strings).0, false))
            .await;
        if let Some(Err(error)) = appended {
            self.lose(1, events, &error);
        }
        Ok(())
    }

    /// Writes the window's memory-only batches to the spool, oldest first.
    /// `in_flight`: they stay in the window, being sent, and the spool's
    /// reader skips them; else (at exit) the next start reads them. Only
    /// while the spool has nothing unread, so its order stays the send order.
    async fn spill_window(&mut self, in_flight: bool) {
        if self.spool.is_none() || self.spool_stats.unread > 0 {
            return;
        }
        let mut live = Vec::new();
        for (i, entry) in self.window.iter_mut().enumerate() {
            if entry.spooled.is_none()
                && matches!(entry.body, Body::Live(_))
                && let Body::Live(batch) = std::mem::replace(&mut entry.body, Body::Done)
            {
                live.push((i, batch));
            }
        }
        if live.is_empty() {
            return;
        }
        let identity = self.current.clone();
        let max_strings = self.max_strings;
        let Some(written) = self
            .disk(move |spool| {
                live.into_iter()
                    .map(|(i, batch)| {
                        let (record, wire) = self_contained(&identity, &batch, max_strings);
                        (i, spool.append(&record, in_flight), wire, batch)
                    })
                    .collect::<Vec<_>>()
            })
            .await
        else {
            return;
        };
        for (i, appended, wire, batch) in written {
            let entry = &mut self.window[i];
            match appended {
                Ok(pos) => {
                    entry.spooled = Some(pos);
                    entry.body = Body::Wire(wire);
                }
                Err(error) => {
                    tracing::error!(
                        sequence = entry.sequence,
                        error = %error_chain(&error),
                        "cannot spool a batch; it stays in memory only"
                    );
                    entry.body = Body::Live(batch);
                }
            }
        }
    }

    /// Moves spooled batches of `stream`'s identity into the window and sends
    /// them, while the window has room.
    async fn refill(
        &mut self,
        stream: &Identity,
        tx: &Frames,
        encoder: &mut LiveEncoder,
        last_sent: &mut u64,
    ) -> Result<(), Closed> {
        while self.spool_stats.unread > 0 && self.window.len() < self.max_unacked {
            let want = stream.clone();
            let room = (self.max_unacked - self.window.len()).min(REFILL_CHUNK);
            let Some(loaded) = self
                .disk(move |spool| {
                    spool
                        .next_of(&want, room)
                        .into_iter()
                        .map(|(record, pos)| {
                            let wire = v1::Batch::decode(record.batch.as_slice());
                            (pos, record.sequence, record.events, wire)
                        })
                        .collect::<Vec<_>>()
                })
                .await
            else {
                return Ok(());
            };
            if loaded.is_empty() {
                // The next spooled batch is another identity's.
                break;
            }
            if self.window_identity.is_none() {
                self.window_identity = Some(stream.clone());
            }
            for (pos, sequence, events, wire) in loaded {
                let events = usize::try_from(events).unwrap_or(usize::MAX);
                let body = match wire {
                    Ok(wire) if sequence > *last_sent && wire.sequence == sequence => Body::Wire(wire),
                    Ok(_) => {
                        // A stream's sequences must increase; only a spool
                        // written out of order (after a failed write) has this.
                        tracing::warn!(sequence, after = *last_sent, "spooled batch out of order; skipped");
                        Body::Done
                    }
                    Err(error) => {
                        tracing::error!(sequence, %error, "undecodable spooled batch; dropped");
                        self.count_lost(1, events);
                        Body::Done
                    }
                };
                let wire = match &body {
                    Body::Wire(wire) => Some(wire.clone()),
                    _ => None,
                };
                self.window.push_back(InFlight {
                    sequence,
                    events,
                    spooled: Some(pos),
                    body,
                });
                if let Some(wire) = wire {
                    encoder.sent_self_contained();
                    *last_sent = sequence;
                    tx.send(batch_frame(wire)).await.map_err(|_| Closed)?;
                }
            }
            self.pop_done().await;
        }
        Ok(())
    }

    async fn ack(&mut self, sequence: u64) {
        let entry = self
            .window
            .iter_mut()
            .find(|e| e.sequence == sequence && !matches!(e.body, Body::Done));
        match entry {
            Some(entry) => {
                entry.body = Body::Done;
                self.acked += 1;
            }
            None => tracing::debug!(sequence, "ack for a batch not in flight"),
        }
        self.pop_done().await;
    }

    /// Removes done batches from the front of the window; the spooled ones
    /// are acknowledged in the spool, in order.
    async fn pop_done(&mut self) {
        let mut done = Vec::new();
        while self.window.front().is_some_and(|e| matches!(e.body, Body::Done)) {
            if let Some(InFlight { spooled: Some(pos), .. }) = self.window.pop_front() {
                done.push(pos);
            }
        }
        if self.window.is_empty() {
            self.window_identity = None;
        }
        if done.is_empty() {
            return;
        }
        self.disk(move |spool| done.into_iter().for_each(|pos| spool.ack(pos)))
            .await;
        if self.spilling && self.spool_stats.batches == 0 {
            self.spilling = false;
            tracing::info!(
                dropped = self.spool_stats.dropped_batches,
                "spool drained; batches go straight to the aggregator again"
            );
        }
    }

    /// A batch the aggregator refused as malformed would be refused again on
    /// every reconnect and block everything behind it: drop it, loudly.
    async fn drop_refused(&mut self, status: &tonic::Status) {
        let refused = status
            .metadata()
            .get(glasshouse_proto::metadata::REFUSED_BATCH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let Some(sequence) = refused else { return };
        let Some(entry) = self
            .window
            .iter_mut()
            .find(|e| e.sequence == sequence && !matches!(e.body, Body::Done))
        else {
            return;
        };
        entry.body = Body::Done;
        let events = entry.events;
        self.refused_batches += 1;
        self.refused_events += events as u64;
        tracing::error!(
            sequence,
            events,
            reason = status.message(),
            "aggregator refused a batch as malformed; dropped it"
        );
        self.pop_done().await;
    }

    /// Counts batches lost to a spool error (a batch too large for the whole
    /// spool is counted by the spool itself).
    fn lose(&mut self, batches: u64, events: usize, error: &SpoolError) {
        tracing::error!(
            batches,
            events,
            error = %error_chain(error),
            "cannot spool batches; they are lost"
        );
        if !matches!(error, SpoolError::TooLarge { .. }) {
            self.count_lost(batches, events);
        }
    }

    fn count_lost(&mut self, batches: u64, events: usize) {
        self.lost_batches += batches;
        self.lost_events += events as u64;
        if let Some(metrics) = &self.spool_metrics {
            metrics.count_lost(batches, events as u64);
        }
    }

    /// At exit: what only memory holds goes to the spool, the spool is closed.
    async fn finish(mut self) -> ClientReport {
        self.spill_window(false).await;
        let pending: Vec<(Option<RecordPos>, usize)> = self
            .window
            .iter()
            .filter(|e| !matches!(e.body, Body::Done))
            .map(|e| (e.spooled, e.events))
            .collect();
        let positions: Vec<Option<RecordPos>> = pending.iter().map(|(p, _)| *p).collect();
        let held = self
            .disk(move |spool| {
                let held: Vec<bool> = positions.iter().map(|p| p.is_some_and(|p| spool.holds(p))).collect();
                spool.close();
                held
            })
            .await
            .unwrap_or_else(|| vec![false; pending.len()]);
        let lost: Vec<usize> = pending
            .iter()
            .zip(&held)
            .filter(|(_, held)| !**held)
            .map(|((_, events), _)| *events)
            .collect();
        let report = ClientReport {
            batches_acked: self.acked,
            batches_unacked: lost.len(),
            events_unacked: lost.iter().sum(),
            batches_refused: self.refused_batches,
            events_refused: self.refused_events,
            spool_batches: self.spool_stats.batches,
            spool_bytes: self.spool_stats.bytes,
            spool_dropped_batches: self.spool_stats.dropped_batches + self.lost_batches,
            spool_dropped_events: self.spool_stats.dropped_events + self.lost_events,
        };
        if report.batches_unacked > 0 {
            tracing::error!(
                batches = report.batches_unacked,
                events = report.events_unacked,
                "exiting with unacknowledged batches; they are lost"
            );
        }
        if self.spool.is_some() {
            tracing::info!(
                batches = report.spool_batches,
                bytes = report.spool_bytes,
                dropped_batches = report.spool_dropped_batches,
                dropped_events = report.spool_dropped_events,
                "spool closed{}",
                if report.spool_batches > 0 {
                    "; the next start sends its batches first"
                } else {
                    ""
                }
            );
        }
        report
    }
}

async fn session(
    config: &ClientConfig,
    mut client: IngestClient<tonic::transport::Channel>,
    identity: &Identity,
    batches: &mut mpsc::Receiver<PendingBatch>,
    state: &mut State,
    cancel: &CancellationToken,
    backoff: &mut Backoff,
) -> SessionEnd {
    let (tx, rx) = mpsc::channel::<v1::AgentFrame>(64);
    let hello = v1::Hello {
        agent_id: identity.agent_id.clone(),
        boot_id: identity.boot_id,
        ..config.hello.clone()
    };
    let live = *identity == state.current;
    if !live {
        tracing::info!(
            agent = %identity.agent_id,
            boot_id = identity.boot_id,
            "re-sending spooled batches of an earlier run"
        );
    }
    let hello_frame = v1::AgentFrame {
        frame: Some(agent_frame::Frame::Hello(hello)),
    };
    if tx.send(hello_frame).await.is_err() {
        return SessionEnd::Failed("stream closed before hello".into());
    }
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(token) = &config.token {
        let values = (
            tonic::metadata::MetadataValue::try_from(identity.agent_id.as_str()),
            tonic::metadata::MetadataValue::try_from(format!("Bearer {token}")),
        );
        let (Ok(agent), Ok(bearer)) = values else {
            return SessionEnd::Failed("agent id or token is not a valid header value".into());
        };
        request
            .metadata_mut()
            .insert(glasshouse_proto::metadata::AGENT_ID, agent);
        request.metadata_mut().insert("authorization", bearer);
    }
    let mut inbound = match client.stream(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return SessionEnd::Failed(format!("{}: {}", status.code(), status.message())),
    };
    let mut encoder = LiveEncoder::new(config.max_strings);
    // The sequence last sent on this stream: the aggregator wants them increasing.
    let mut last_sent = 0;
    let mut resent = 0usize;
    for entry in &state.window {
        let Some(wire) = encoder.wire(entry) else { continue };
        last_sent = entry.sequence;
        if tx.send(batch_frame(wire)).await.is_err() {
            return SessionEnd::Failed("stream closed while re-sending".into());
        }
        resent += 1;
    }
    if resent > 0 {
        tracing::info!(batches = resent, "re-sent unacknowledged batches");
    }
    loop {
        // Spooled batches (older) go out before new ones, which queue behind
        // them in the spool.
        if state.refill(identity, &tx, &mut encoder, &mut last_sent).await.is_err() {
            return SessionEnd::Failed("stream closed while sending spooled batches".into());
        }
        if state.window.is_empty() {
            if state.spool_stats.unread > 0 || !live {
                // Closing our side ends the stream cleanly.
                return SessionEnd::NextStream;
            }
            if state.input_closed {
                return SessionEnd::Done;
            }
        }
        let can_take = state.can_take();
        tokio::select! {
            message = inbound.message() => match message {
                Ok(Some(v1::AggregatorFrame { frame: Some(aggregator_frame::Frame::Ack(ack)) })) => {
                    backoff.reset();
                    state.ack(ack.sequence).await;
                }
                Ok(Some(v1::AggregatorFrame { frame: Some(aggregator_frame::Frame::Welcome(w)) })) => {
                    backoff.reset();
                    tracing::info!(aggregator = %w.aggregator_id, "connected to aggregator");
                }
                Ok(Some(_)) => {}
                Ok(None) => return SessionEnd::Failed("aggregator closed the stream".into()),
                Err(status) => {
                    state.drop_refused(&status).await;
                    return SessionEnd::Failed(format!("{}: {}", status.code(), status.message()));
                }
            },
            batch = batches.recv(), if can_take => match batch {
                Some(batch) => {
                    let stream = live.then_some((&tx, &mut encoder, &mut last_sent));
                    if state.take(batch, stream).await.is_err() {
                        return SessionEnd::Failed("stream closed while sending".into());
                    }
                }
                None => state.input_closed = true,
            },
            () = cancel.cancelled(), if state.drain_deadline.is_none() => state.start_drain(),
            () = sleep_until(state.drain_deadline), if state.drain_deadline.is_some() => {
                return SessionEnd::Done;
            }
        }
    }
}

async fn connect(
    endpoint: &str,
    tls: Option<&tonic::transport::ClientTlsConfig>,
) -> Result<IngestClient<tonic::transport::Channel>, tonic::transport::Error> {
    let mut e = tonic::transport::Endpoint::from_shared(endpoint.to_owned())?;
    if let Some(tls) = tls {
        e = e.tls_config(tls.clone())?;
    }
    Ok(IngestClient::new(e.connect().await?))
}

/// A stable start index in `0..n` derived from the agent id (FNV-1a).
fn spread_start(agent_id: &str, n: usize) -> usize {
    let hash = agent_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    usize::try_from(hash % n.max(1) as u64).unwrap_or(0)
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(d) = deadline {
        tokio::time::sleep_until(d).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_a_self_contained_batch_the_live_stream_starts_over() {
        use crate::pipeline::Batcher;
        use crate::pipeline::tests::{container, exec};
        let c = container("c1");
        let batch = |pid| {
            let mut b = Batcher::new(100, Duration::from_secs(1));
            b.push(exec(&c, pid, &["cat", "/etc/hostname"]));
            b.flush().unwrap()
        };
        let mut live = LiveEncoder::new(10_000);
        let first = live.encode(&batch(1));
        assert!(!first.reset_strings && !first.strings.is_empty());
        assert!(live.encode(&batch(2)).strings.is_empty(), "interned on the stream");

        // What the spool stores defines all it uses and survives the trip.
        let identity = Identity {
            agent_id: "a".into(),
            boot_id: 9,
        };
        let (record, wire) = self_contained(&identity, &batch(3), 10_000);
        assert!(wire.reset_strings);
        assert_eq!(wire.strings.len(), first.strings.len());
        assert_eq!(wire.containers.len(), 1);
        assert_eq!(v1::Batch::decode(record.batch.as_slice()).unwrap(), wire);
        assert_eq!((record.sequence, record.events), (wire.sequence, 1));

        // Sent between live batches, it reset the aggregator's tables: the
        // next live batch resets too and defines everything again.
        live.sent_self_contained();
        let next = live.encode(&batch(4));
        assert!(next.reset_strings);
        assert_eq!(next.strings.len(), first.strings.len());
        assert_eq!(next.containers.len(), 1);
        assert!(!live.encode(&batch(5)).reset_strings, "only once");
    }

    #[test]
    fn agents_spread_over_endpoints_stably() {
        let mut used = [0usize; 3];
        for i in 0..300 {
            let id = format!("host-{i}");
            let start = spread_start(&id, 3);
            assert_eq!(start, spread_start(&id, 3), "stable");
            used[start] += 1;
        }
        assert!(used.iter().all(|&n| n > 60), "uneven spread {used:?}");
        assert_eq!(spread_start("x", 1), 0);
    }
}
