//! The on-disk spool: a bounded, append-only, crash-safe queue of encoded
//! batches that the aggregator has not acknowledged yet. The client writes to
//! it when memory is not enough (window full, aggregator unreachable, agent
//! stopping) and reads it back, oldest first, to re-send.
//!
//! ```text
//!            head (first unacknowledged record)     read (next record to hand out)
//!              ▼                                      ▼
//!  [seg 7: ....|████████] [seg 8: ███████████] [seg 9: ████▒▒▒▒▒]  ◀── append
//!   acked, deleted once     sealed (fsynced)     active segment
//!   the head leaves it
//! ```
//!
//! # Format
//! A directory holds segment files `NNNNNNNNNNNNNNNNNNNN.seg` (20-digit ids,
//! increasing), a `head` file and a `lock` file (`flock`, one agent per
//! spool). A segment starts with the magic `GHSPOOL1`, then records:
//!
//! ```text
//! u32 LE  payload length
//! u32 LE  CRC-32 (IEEE) of the payload
//! payload u64 LE boot_id | u64 LE sequence | u32 LE events |
//!         u16 LE agent_id length | agent_id | batch bytes
//! ```
//!
//! The spool does not interpret the batch bytes; the client stores a
//! self-contained, prost-encoded `v1::Batch` there (see `client`).
//!
//! # Crash safety
//! A record is appended with one `write(2)` and never rewritten, so a crash of
//! the agent process loses nothing that was appended (the page cache keeps
//! it). Segments are fsynced when sealed and at close; a host crash can lose
//! the unsynced tail of the active segment. On open every segment is scanned:
//! a short record or one whose CRC does not match (a torn write) ends the
//! segment, which is truncated there with a warning, not an error.
//!
//! The `head` file records how far acknowledgements have come; it is written
//! at most once a second and at close, so after a crash up to a second of
//! acknowledged records is handed out again: duplicates, which consumers drop
//! by event id.
//!
//! # Bound
//! Segments rotate at `segment_bytes`. When an append would take the spool
//! over `max_bytes`, the oldest segments are deleted; their records that were
//! never handed out are counted as dropped (and logged). Appending never waits
//! for the aggregator: that is the point of the spool.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glasshouse_runtime::metrics::{Counter, Gauge, Metric};

const MAGIC: &[u8; 8] = b"GHSPOOL1";
const HEADER: u64 = MAGIC.len() as u64;
/// Length and CRC before each payload.
const FRAME: u64 = 8;
/// boot_id, sequence, events, agent_id length.
const FIXED: usize = 8 + 8 + 4 + 2;
/// Longest payload read back: a corrupt length must not allocate gigabytes.
const MAX_PAYLOAD: u64 = 1 << 30;
const SEGMENT_SUFFIX: &str = ".seg";
const HEAD_FILE: &str = "head";
const LOCK_FILE: &str = "lock";
/// How often the `head` file is rewritten while acknowledgements come in.
const HEAD_INTERVAL: Duration = Duration::from_secs(1);

/// Where and how big.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    /// Upper bound of all segment files together.
    pub max_bytes: u64,
    /// A segment is sealed and a new one started past this size.
    pub segment_bytes: u64,
    /// Shared with the `/metrics` endpoint.
    pub metrics: Arc<SpoolMetrics>,
}

impl SpoolConfig {
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64) -> SpoolConfig {
        SpoolConfig {
            dir: dir.into(),
            max_bytes,
            segment_bytes: default_segment_bytes(max_bytes),
            metrics: Arc::default(),
        }
    }
}

/// An eighth of the bound, so dropping the oldest segment gives up about an
/// eighth of the backlog; at most 32 MiB, which also bounds what a crash
/// re-sends; at least 64 KiB.
fn default_segment_bytes(max_bytes: u64) -> u64 {
    (max_bytes / 8).clamp(64 << 10, 32 << 20)
}

/// Who sent a batch: the `Hello` a stream re-sending it must carry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub agent_id: String,
    pub boot_id: u64,
}

/// One spooled batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub identity: Identity,
    pub sequence: u64,
    /// Events in the batch (for drop counts).
    pub events: u32,
    /// The encoded batch.
    pub batch: Vec<u8>,
}

/// Where a record ends: what [`Spool::ack`] takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordPos {
    segment: u64,
    end: u64,
}

/// A point in the spool: a segment and a byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    segment: u64,
    offset: u64,
}

/// What the spool holds and has lost.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SpoolStats {
    /// Records not acknowledged yet (handed out or not).
    pub batches: u64,
    /// Records not handed out yet.
    pub unread: u64,
    /// Bytes of all segment files.
    pub bytes: u64,
    /// Records (and their events) dropped since open: oldest segments deleted
    /// because the spool was full, records refused as larger than the whole
    /// spool, unreadable records.
    pub dropped_batches: u64,
    pub dropped_events: u64,
}

/// The spool's numbers for `/metrics`.
#[derive(Debug)]
pub struct SpoolMetrics {
    batches: Gauge,
    bytes: Gauge,
    dropped_batches: Counter,
    dropped_events: Counter,
}

impl Default for SpoolMetrics {
    fn default() -> SpoolMetrics {
        SpoolMetrics {
            batches: Gauge::new(
                "glasshouse_agent_spool_batches",
                "Unacknowledged batches in the on-disk spool.",
            ),
            bytes: Gauge::new(
                "glasshouse_agent_spool_bytes",
                "Bytes of the on-disk spool's segment files.",
            ),
            dropped_batches: Counter::new(
                "glasshouse_agent_spool_dropped_batches_total",
                "Batches lost by the spool: oldest dropped when full, unwritable or unreadable.",
            ),
            dropped_events: Counter::new(
                "glasshouse_agent_spool_dropped_events_total",
                "Events of the batches lost by the spool.",
            ),
        }
    }
}

impl SpoolMetrics {
    fn publish(&self, s: &SpoolStats, dropped_batches: u64, dropped_events: u64) {
        self.batches.set(s.batches);
        self.bytes.set(s.bytes);
        self.count_lost(dropped_batches, dropped_events);
    }

    /// Counts batches lost outside the spool's own bound (a failed write).
    pub fn count_lost(&self, batches: u64, events: u64) {
        self.dropped_batches.add(batches);
        self.dropped_events.add(events);
    }

    /// The Prometheus text of the spool's samples.
    pub fn render(&self, out: &mut String) {
        self.batches.render(out);
        self.bytes.render(out);
        self.dropped_batches.render(out);
        self.dropped_events.render(out);
    }
}

/// Why the spool could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("spool {path} is in use by another agent")]
    Locked { path: PathBuf },
    #[error("a batch of {bytes} bytes does not fit in a spool of {max} bytes")]
    TooLarge { bytes: u64, max: u64 },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

#[derive(Debug)]
struct Segment {
    id: u64,
    /// File length: the end of the last whole record.
    len: u64,
    records: u64,
    events: u64,
    /// Records handed out (or skipped as unreadable), a prefix.
    read_records: u64,
    read_events: u64,
    /// Records acknowledged (or skipped), a prefix.
    acked: u64,
}

impl Segment {
    fn empty(id: u64) -> Segment {
        Segment {
            id,
            len: HEADER,
            records: 0,
            events: 0,
            read_records: 0,
            read_events: 0,
            acked: 0,
        }
    }
}

/// The spool. Its methods do blocking file I/O: call them from a blocking
/// thread (`spawn_blocking`), not from an async task.
#[derive(Debug)]
pub struct Spool {
    config: SpoolConfig,
    /// Oldest first; when `writer` is set, the last one is being appended to.
    segments: VecDeque<Segment>,
    writer: Option<File>,
    next_id: u64,
    read: Pos,
    head: Pos,
    reader: Option<(u64, File)>,
    dropped_batches: u64,
    dropped_events: u64,
    head_dirty: bool,
    head_written: Instant,
    /// Holds the `flock` for as long as the spool is open.
    _lock: File,
}

impl Spool {
    /// Opens (creating) the spool directory, recovers its segments (a torn
    /// tail is truncated) and positions the reader at the first record not
    /// acknowledged before.
    pub fn open(config: SpoolConfig) -> Result<Spool, SpoolError> {
        let dir = config.dir.clone();
        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let lock = lock(&dir)?;
        let head = read_head(&dir.join(HEAD_FILE));
        let mut ids = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_error(&dir))? {
            let entry = entry.map_err(io_error(&dir))?;
            let name = entry.file_name();
            if let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(SEGMENT_SUFFIX))
                .and_then(|n| n.parse::<u64>().ok())
            {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let next_id = ids.last().map_or(1, |id| id + 1);
        let mut segments = VecDeque::new();
        let mut head_found = false;
        for id in ids {
            let path = segment_path(&dir, id);
            if head.is_some_and(|h| id < h.segment) {
                // Acknowledged; the agent stopped before deleting it.
                remove(&path);
                continue;
            }
            let head_offset = head.filter(|h| h.segment == id).map(|h| h.offset);
            match scan(&path, head_offset)? {
                Some((segment, at_head)) => {
                    head_found |= at_head;
                    segments.push_back(segment);
                }
                None => {
                    tracing::warn!(segment = %path.display(), "not a spool segment; removed");
                    remove(&path);
                }
            }
        }
        if head.is_some() && !head_found {
            tracing::warn!(dir = %dir.display(), "spool head points nowhere; re-reading every segment");
            for s in &mut segments {
                s.acked = 0;
                s.read_records = 0;
                s.read_events = 0;
            }
        }
        let start = segments.iter().find(|s| s.acked < s.records).map_or(
            Pos {
                segment: next_id,
                offset: HEADER,
            },
            |s| Pos {
                segment: s.id,
                offset: head
                    .filter(|h| head_found && h.segment == s.id)
                    .map_or(HEADER, |h| h.offset),
            },
        );
        let mut spool = Spool {
            config,
            segments,
            writer: None,
            next_id,
            read: start,
            head: start,
            reader: None,
            dropped_batches: 0,
            dropped_events: 0,
            head_dirty: false,
            head_written: Instant::now(),
            _lock: lock,
        };
        if spool.stats().batches == 0 {
            spool.reset();
        }
        spool.publish(0, 0);
        Ok(spool)
    }

    pub fn stats(&self) -> SpoolStats {
        SpoolStats {
            batches: self.segments.iter().map(|s| s.records - s.acked).sum(),
            unread: self.segments.iter().map(|s| s.records - s.read_records).sum(),
            bytes: self.segments.iter().map(|s| s.len).sum(),
            dropped_batches: self.dropped_batches,
            dropped_events: self.dropped_events,
        }
    }

    /// Appends a record, dropping the oldest segments if the spool would go
    /// over its bound. `in_flight`: the caller already holds the batch (it is
    /// being sent), so the reader skips it; only allowed while nothing is
    /// unread, so the reader's order stays the append order.
    pub fn append(&mut self, record: &Record, in_flight: bool) -> Result<RecordPos, SpoolError> {
        debug_assert!(
            !in_flight || self.stats().unread == 0,
            "in-flight append with unread records"
        );
        let frame = encode_frame(record);
        let size = frame.len() as u64;
        if HEADER + size > self.config.max_bytes {
            self.drop_records(1, u64::from(record.events));
            return Err(SpoolError::TooLarge {
                bytes: size,
                max: self.config.max_bytes,
            });
        }
        let active_len = self.writer.as_ref().and(self.segments.back()).map(|s| s.len);
        match active_len {
            None => self.rotate()?,
            Some(len) if len > HEADER && len + size > self.config.segment_bytes => self.rotate()?,
            Some(_) => {}
        }
        while self.stats().bytes + size > self.config.max_bytes {
            if self.segments.len() > 1 {
                self.drop_oldest();
            } else if self.segments.back().is_some_and(|s| s.len > HEADER) {
                self.rotate()?;
            } else {
                break;
            }
        }
        let (Some(writer), Some(segment)) = (&mut self.writer, self.segments.back_mut()) else {
            unreachable!("rotate leaves an active segment");
        };
        let path = segment_path(&self.config.dir, segment.id);
        if let Err(source) = writer.write_all(&frame) {
            // Take back a partial record so the next append starts clean; if
            // that fails too, the scan at the next open truncates it.
            let _ = writer.set_len(segment.len);
            return Err(SpoolError::Io { path, source });
        }
        segment.len += size;
        segment.records += 1;
        segment.events += u64::from(record.events);
        if in_flight {
            segment.read_records += 1;
            segment.read_events += u64::from(record.events);
            self.read = Pos {
                segment: segment.id,
                offset: segment.len,
            };
        }
        let pos = RecordPos {
            segment: segment.id,
            end: segment.len,
        };
        self.publish(0, 0);
        Ok(pos)
    }

    /// The identity of the next record to hand out.
    pub fn peek_identity(&mut self) -> Option<Identity> {
        self.locate().map(|(record, _)| record.identity)
    }

    /// Hands out the next record.
    pub fn next_record(&mut self) -> Option<(Record, RecordPos)> {
        let (record, pos) = self.locate()?;
        if let Some(s) = self.segments.iter_mut().find(|s| s.id == pos.segment) {
            s.read_records += 1;
            s.read_events += u64::from(record.events);
        }
        self.read = Pos {
            segment: pos.segment,
            offset: pos.end,
        };
        Some((record, pos))
    }

    /// Hands out up to `max` records of `identity`, stopping at the first
    /// record of another.
    pub fn next_of(&mut self, identity: &Identity, max: usize) -> Vec<(Record, RecordPos)> {
        let mut out = Vec::new();
        while out.len() < max && self.peek_identity().as_ref() == Some(identity) {
            match self.next_record() {
                Some(r) => out.push(r),
                None => break,
            }
        }
        out
    }

    /// Whether the record is still on disk (its segment was not dropped).
    pub fn holds(&self, pos: RecordPos) -> bool {
        self.segments.iter().any(|s| s.id == pos.segment && s.len >= pos.end)
    }

    /// Acknowledges a handed-out record. Records are acknowledged in the
    /// order they were handed out; segments wholly behind the head are
    /// deleted, and an empty spool deletes all its files.
    pub fn ack(&mut self, pos: RecordPos) {
        let Some(i) = self.segments.iter().position(|s| s.id == pos.segment) else {
            // Its segment was dropped while the batch was in flight.
            return;
        };
        for _ in 0..i {
            if let Some(s) = self.segments.pop_front() {
                self.delete_segment(s.id);
            }
        }
        if let Some(s) = self.segments.front_mut() {
            s.acked = (s.acked + 1).min(s.records);
        }
        self.head = Pos {
            segment: pos.segment,
            offset: pos.end,
        };
        self.head_dirty = true;
        if self.stats().batches == 0 {
            self.reset();
        } else {
            let sealed = self.writer.is_none() || self.segments.len() > 1;
            if sealed
                && self
                    .segments
                    .front()
                    .is_some_and(|s| s.acked == s.records && s.len == pos.end)
                && let Some(s) = self.segments.pop_front()
            {
                self.delete_segment(s.id);
            }
            if self.head_written.elapsed() >= HEAD_INTERVAL {
                self.write_head();
            }
        }
        self.publish(0, 0);
    }

    /// Syncs the active segment and records the head: what the next open
    /// re-reads is exactly what was not acknowledged. Dropping the spool
    /// without `close` is a crash: safe, with duplicates.
    pub fn close(&mut self) {
        if let Some(w) = &self.writer
            && let Err(error) = w.sync_data()
        {
            tracing::warn!(dir = %self.config.dir.display(), %error, "spool sync failed");
        }
        if self.stats().batches == 0 {
            self.reset();
        } else {
            self.write_head();
        }
    }

    /// Finds the record at the read position without handing it out,
    /// skipping ended segments and unreadable records (counted as dropped).
    fn locate(&mut self) -> Option<(Record, RecordPos)> {
        loop {
            let i = self.segments.iter().position(|s| s.id >= self.read.segment)?;
            let (id, len) = (self.segments[i].id, self.segments[i].len);
            if id != self.read.segment {
                self.read = Pos {
                    segment: id,
                    offset: HEADER,
                };
            }
            if self.read.offset >= len {
                let next = self.segments.get(i + 1)?.id;
                self.read = Pos {
                    segment: next,
                    offset: HEADER,
                };
                continue;
            }
            match self.read_at(id, self.read.offset, len) {
                Ok(record) => {
                    let end = self.read.offset + FRAME + payload_len(&record);
                    return Some((record, RecordPos { segment: id, end }));
                }
                Err(error) => {
                    let s = &mut self.segments[i];
                    let lost = s.records - s.read_records;
                    let lost_events = s.events.saturating_sub(s.read_events);
                    tracing::error!(
                        segment = id,
                        offset = self.read.offset,
                        batches = lost,
                        %error,
                        "unreadable spool record; skipped the rest of its segment"
                    );
                    s.read_records = s.records;
                    s.read_events = s.events;
                    s.acked += lost;
                    self.read.offset = len;
                    self.drop_records(lost, lost_events);
                }
            }
        }
    }

    fn read_at(&mut self, segment: u64, offset: u64, len: u64) -> io::Result<Record> {
        if self.reader.as_ref().is_none_or(|(id, _)| *id != segment) {
            let file = File::open(segment_path(&self.config.dir, segment))?;
            self.reader = Some((segment, file));
        }
        let Some((_, file)) = &self.reader else {
            unreachable!("opened above");
        };
        let mut frame = [0u8; FRAME as usize];
        file.read_exact_at(&mut frame, offset)?;
        let (payload_len, crc) = split_frame(frame);
        if payload_len > len.saturating_sub(offset + FRAME) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "record runs past the segment",
            ));
        }
        let mut payload = vec![0u8; usize::try_from(payload_len).unwrap_or(usize::MAX)];
        file.read_exact_at(&mut payload, offset + FRAME)?;
        decode_payload(payload, crc).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad record"))
    }

    /// Seals the active segment (fsync) and starts a new one.
    fn rotate(&mut self) -> Result<(), SpoolError> {
        if let Some(w) = self.writer.take()
            && let Err(error) = w.sync_data()
        {
            tracing::warn!(dir = %self.config.dir.display(), %error, "spool sync failed");
        }
        let id = self.next_id;
        let path = segment_path(&self.config.dir, id);
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io_error(&path))?;
        if let Err(source) = file.write_all(MAGIC) {
            remove(&path);
            return Err(SpoolError::Io { path, source });
        }
        self.next_id += 1;
        self.segments.push_back(Segment::empty(id));
        self.writer = Some(file);
        Ok(())
    }

    /// Deletes the oldest segment to make room, counting its records that
    /// were never handed out.
    fn drop_oldest(&mut self) {
        let Some(s) = self.segments.pop_front() else { return };
        let lost = s.records - s.read_records;
        let lost_events = s.events.saturating_sub(s.read_events);
        tracing::warn!(
            segment = s.id,
            batches = lost,
            events = lost_events,
            max_bytes = self.config.max_bytes,
            "spool full; dropped its oldest segment"
        );
        self.delete_segment(s.id);
        let next = Pos {
            segment: self.segments.front().map_or(self.next_id, |s| s.id),
            offset: HEADER,
        };
        if self.read.segment <= s.id {
            self.read = next;
        }
        if self.head.segment <= s.id {
            self.head = next;
            self.head_dirty = true;
        }
        self.drop_records(lost, lost_events);
    }

    fn drop_records(&mut self, batches: u64, events: u64) {
        self.dropped_batches += batches;
        self.dropped_events += events;
        self.publish(batches, events);
    }

    fn delete_segment(&mut self, id: u64) {
        if self.reader.as_ref().is_some_and(|(r, _)| *r == id) {
            self.reader = None;
        }
        if self.segments.is_empty() {
            self.writer = None;
        }
        remove(&segment_path(&self.config.dir, id));
    }

    /// Nothing left: delete every file, start the next segment fresh.
    fn reset(&mut self) {
        while let Some(s) = self.segments.pop_front() {
            self.delete_segment(s.id);
        }
        self.writer = None;
        self.reader = None;
        let start = Pos {
            segment: self.next_id,
            offset: HEADER,
        };
        self.read = start;
        self.head = start;
        self.head_dirty = false;
        remove(&self.config.dir.join(HEAD_FILE));
    }

    fn write_head(&mut self) {
        self.head_written = Instant::now();
        if !self.head_dirty {
            return;
        }
        let mut bytes = Vec::with_capacity(20);
        bytes.extend_from_slice(&self.head.segment.to_le_bytes());
        bytes.extend_from_slice(&self.head.offset.to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
        let tmp = self.config.dir.join("head.tmp");
        // Write, then rename over the old one: a reader sees one or the other.
        let written = fs::write(&tmp, &bytes).and_then(|()| fs::rename(&tmp, self.config.dir.join(HEAD_FILE)));
        match written {
            Ok(()) => self.head_dirty = false,
            Err(error) => tracing::warn!(dir = %self.config.dir.display(), %error, "cannot write the spool head"),
        }
    }

    fn publish(&self, dropped_batches: u64, dropped_events: u64) {
        self.config
            .metrics
            .publish(&self.stats(), dropped_batches, dropped_events);
    }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}{SEGMENT_SUFFIX}"))
}

fn remove(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(error) => tracing::warn!(path = %path.display(), %error, "cannot delete spool file"),
    }
}

fn lock(dir: &Path) -> Result<File, SpoolError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_error(&path))?;
    // SAFETY: flock(2) on a descriptor we own, which stays open with `file`.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let source = io::Error::last_os_error();
        if source.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(SpoolError::Locked { path: dir.to_owned() });
        }
        return Err(SpoolError::Io { path, source });
    }
    Ok(file)
}

fn read_head(path: &Path) -> Option<Pos> {
    let bytes = fs::read(path).ok()?;
    let bytes: [u8; 20] = bytes.try_into().ok()?;
    let (body, crc) = bytes.split_at(16);
    if crc32fast::hash(body).to_le_bytes() != crc {
        tracing::warn!(path = %path.display(), "corrupt spool head ignored");
        return None;
    }
    let (segment, offset) = body.split_at(8);
    Some(Pos {
        segment: u64::from_le_bytes(segment.try_into().ok()?),
        offset: u64::from_le_bytes(offset.try_into().ok()?),
    })
}

fn payload_len(record: &Record) -> u64 {
    (FIXED + record.identity.agent_id.len() + record.batch.len()) as u64
}

fn encode_frame(record: &Record) -> Vec<u8> {
    // An agent id is a host name: far below 64 KiB; longer ones are cut.
    let agent = &record.identity.agent_id.as_bytes()[..record.identity.agent_id.len().min(usize::from(u16::MAX))];
    let mut payload = Vec::with_capacity(FIXED + agent.len() + record.batch.len());
    payload.extend_from_slice(&record.identity.boot_id.to_le_bytes());
    payload.extend_from_slice(&record.sequence.to_le_bytes());
    payload.extend_from_slice(&record.events.to_le_bytes());
    payload.extend_from_slice(&u16::try_from(agent.len()).unwrap_or(u16::MAX).to_le_bytes());
    payload.extend_from_slice(agent);
    payload.extend_from_slice(&record.batch);
    let mut frame = Vec::with_capacity(FRAME as usize + payload.len());
    frame.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(u32::MAX).to_le_bytes());
    frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    frame
}

fn split_frame(frame: [u8; FRAME as usize]) -> (u64, u32) {
    let [a, b, c, d, e, f, g, h] = frame;
    (
        u64::from(u32::from_le_bytes([a, b, c, d])),
        u32::from_le_bytes([e, f, g, h]),
    )
}

/// The record in a payload whose CRC matches, `None` otherwise.
fn decode_payload(mut payload: Vec<u8>, crc: u32) -> Option<Record> {
    if crc32fast::hash(&payload) != crc || payload.len() < FIXED {
        return None;
    }
    let u64_at = |at: usize| payload.get(at..at + 8)?.try_into().ok().map(u64::from_le_bytes);
    let boot_id = u64_at(0)?;
    let sequence = u64_at(8)?;
    let events = u32::from_le_bytes(payload.get(16..20)?.try_into().ok()?);
    let agent_len = usize::from(u16::from_le_bytes(payload.get(20..22)?.try_into().ok()?));
    let agent_id = String::from_utf8(payload.get(FIXED..FIXED + agent_len)?.to_vec()).ok()?;
    let batch = payload.split_off(FIXED + agent_len);
    Some(Record {
        identity: Identity { agent_id, boot_id },
        sequence,
        events,
        batch,
    })
}

/// Checks a segment: its records are counted, a torn or corrupt tail is
/// truncated. `None` when the file is not a segment. The flag says whether
/// `head_offset` fell on a record boundary (everything before it counts as
/// acknowledged).
fn scan(path: &Path, head_offset: Option<u64>) -> Result<Option<(Segment, bool)>, SpoolError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_error(path))?;
    let file_len = file.metadata().map_err(io_error(path))?.len();
    let mut reader = BufReader::with_capacity(1 << 20, &file);
    let mut magic = [0u8; MAGIC.len()];
    if file_len < HEADER || reader.read_exact(&mut magic).is_err() || &magic != MAGIC {
        return Ok(None);
    }
    let id = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(SEGMENT_SUFFIX))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let mut segment = Segment::empty(id);
    let mut at_head = false;
    let mut offset = HEADER;
    loop {
        if head_offset == Some(offset) {
            at_head = true;
            segment.acked = segment.records;
            segment.read_records = segment.records;
            segment.read_events = segment.events;
        }
        if offset == file_len {
            break;
        }
        let Some(events) = scan_record(&mut reader, file_len - offset) else {
            tracing::warn!(
                segment = %path.display(),
                kept_bytes = offset,
                dropped_bytes = file_len - offset,
                "spool segment ends in a torn or corrupt record; truncated"
            );
            file.set_len(offset).map_err(io_error(path))?;
            break;
        };
        segment.records += 1;
        segment.events += u64::from(events.0);
        offset += events.1;
    }
    segment.len = offset;
    Ok(Some((segment, at_head)))
}

/// Reads one record: (events, bytes including the frame), or `None` when it
/// is short or fails its CRC.
fn scan_record(reader: &mut impl Read, remaining: u64) -> Option<(u32, u64)> {
    let mut frame = [0u8; FRAME as usize];
    reader.read_exact(&mut frame).ok()?;
    let (len, crc) = split_frame(frame);
    if len > remaining.saturating_sub(FRAME) || len > MAX_PAYLOAD {
        return None;
    }
    let mut payload = vec![0u8; usize::try_from(len).ok()?];
    reader.read_exact(&mut payload).ok()?;
    let record = decode_payload(payload, crc)?;
    Some((record.events, FRAME + len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "glasshouse-spool-{name}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn record(boot: u64, sequence: u64, size: usize) -> Record {
        Record {
            identity: Identity {
                agent_id: "host-a".into(),
                boot_id: boot,
            },
            sequence,
            events: u32::try_from(sequence % 7 + 1).unwrap(),
            batch: (0..size).map(|i| (i as u64 ^ sequence) as u8).collect(),
        }
    }

    fn config(dir: &TempDir, max_bytes: u64, segment_bytes: u64) -> SpoolConfig {
        SpoolConfig {
            segment_bytes,
            ..SpoolConfig::new(&dir.0, max_bytes)
        }
    }

    fn segment_files(dir: &TempDir) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        files.sort();
        files
    }

    fn drain(spool: &mut Spool) -> Vec<Record> {
        std::iter::from_fn(|| spool.next_record().map(|(r, _)| r)).collect()
    }

    #[test]
    fn records_come_back_in_order_and_acks_empty_the_spool() {
        let dir = TempDir::new("roundtrip");
        let mut spool = Spool::open(SpoolConfig::new(&dir.0, 1 << 20)).unwrap();
        let written: Vec<Record> = (1..=5).map(|s| record(7, s, 100 * s as usize)).collect();
        for r in &written {
            spool.append(r, false).unwrap();
        }
        let stats = spool.stats();
        assert_eq!((stats.batches, stats.unread), (5, 5));
        assert!(stats.bytes > 1500);
        let id = Identity {
            agent_id: "host-a".into(),
            boot_id: 7,
        };
        assert_eq!(spool.peek_identity(), Some(id.clone()));
        let read = spool.next_of(&id, 10);
        assert_eq!(read.iter().map(|(r, _)| r.clone()).collect::<Vec<_>>(), written);
        assert_eq!(spool.stats().unread, 0);
        assert_eq!(spool.stats().batches, 5);
        for (_, pos) in read {
            spool.ack(pos);
        }
        assert_eq!(spool.stats(), SpoolStats::default());
        assert!(segment_files(&dir).is_empty(), "an empty spool leaves no segments");
        spool.close();
        drop(spool);
        let mut reopened = Spool::open(SpoolConfig::new(&dir.0, 1 << 20)).unwrap();
        assert!(reopened.next_record().is_none());
    }

    #[test]
    fn reader_stops_at_another_identity() {
        let dir = TempDir::new("identity");
        let mut spool = Spool::open(SpoolConfig::new(&dir.0, 1 << 20)).unwrap();
        spool.append(&record(1, 1, 10), false).unwrap();
        spool.append(&record(1, 2, 10), false).unwrap();
        spool.append(&record(2, 1, 10), false).unwrap();
        let first = Identity {
            agent_id: "host-a".into(),
            boot_id: 1,
        };
        assert_eq!(spool.next_of(&first, 10).len(), 2);
        assert_eq!(spool.peek_identity().map(|i| i.boot_id), Some(2));
        assert!(spool.next_of(&first, 10).is_empty());
    }

    #[test]
    fn torn_tail_is_truncated_not_fatal() {
        let dir = TempDir::new("torn");
        let written: Vec<Record> = (1..=3).map(|s| record(1, s, 200)).collect();
        {
            let mut spool = Spool::open(SpoolConfig::new(&dir.0, 1 << 20)).unwrap();
            for r in &written {
                spool.append(r, false).unwrap();
            }
        }
        let file = segment_files(&dir).pop().unwrap();
        let good = fs::metadata(&file).unwrap().len();
        // A crash mid-write: the frame of a fourth record and part of its payload.
        let mut torn = encode_frame(&record(1, 4, 200));
        torn.truncate(50);
        let mut f = OpenOptions::new().append(true).open(&file).unwrap();
        f.write_all(&torn).unwrap();
        drop(f);

        let mut spool = Spool::open(SpoolConfig::new(&dir.0, 1 << 20)).unwrap();
        assert_eq!(fs::metadata(&file).unwrap().len(), good, "torn tail truncated");
        assert_eq!(drain(&mut spool), written);
        // Appending after recovery works.
        spool.append(&record(1, 5, 10), false).unwrap();
        assert_eq!(drain(&mut spool).len(), 1);
    }

    #[test]
    fn corrupt_last_record_is_truncated() {
        let dir = TempDir::new("crc");
        {
            let mut spool = Spool::open(SpoolConfig::new(&dir.0, 1 << 20)).unwrap();
            for s in 1..=3 {
                spool.append(&record(1, s, 64), false).unwrap();
            }
        }
        let file = segment_files(&dir).pop().unwrap();
        let mut bytes = fs::read(&file).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&file, &bytes).unwrap();
        let mut spool = Spool::open(SpoolConfig::new(&dir.0, 1 << 20)).unwrap();
        let read = drain(&mut spool);
        assert_eq!(read.iter().map(|r| r.sequence).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn segments_rotate_and_the_oldest_are_dropped_when_full() {
        let dir = TempDir::new("bound");
        let max = 64 * 1024;
        let mut spool = Spool::open(config(&dir, max, 8 * 1024)).unwrap();
        let mut events_written = 0;
        for s in 1..=200 {
            let r = record(1, s, 1000);
            events_written += u64::from(r.events);
            spool.append(&r, false).unwrap();
            assert!(spool.stats().bytes <= max, "over the bound after {s}");
        }
        let files = segment_files(&dir);
        assert!(files.len() >= 7, "rotated into {} segments", files.len());
        let stats = spool.stats();
        assert!(stats.dropped_batches > 100, "{stats:?}");
        assert_eq!(stats.batches + stats.dropped_batches, 200);
        let read = drain(&mut spool);
        assert_eq!(read.len() as u64, stats.batches);
        // The newest survive, in order, with no gap.
        let sequences: Vec<u64> = read.iter().map(|r| r.sequence).collect();
        let first = 200 - sequences.len() as u64 + 1;
        assert_eq!(sequences, (first..=200).collect::<Vec<_>>());
        let events_read: u64 = read.iter().map(|r| u64::from(r.events)).sum();
        assert_eq!(events_read + stats.dropped_events, events_written);
        // A record larger than the whole spool is refused and counted.
        let huge = record(1, 201, 2 * max as usize);
        assert!(matches!(spool.append(&huge, false), Err(SpoolError::TooLarge { .. })));
        assert_eq!(spool.stats().dropped_batches, stats.dropped_batches + 1);
    }

    #[test]
    fn reopen_after_crash_keeps_unacknowledged_records() {
        let dir = TempDir::new("crash");
        let cfg = || config(&dir, 1 << 20, 4096);
        let mut spool = Spool::open(cfg()).unwrap();
        for s in 1..=20 {
            spool.append(&record(3, s, 500), false).unwrap();
        }
        assert!(segment_files(&dir).len() > 2);
        // Records 1..=7 fill segment 1, 8..=14 segment 2, ...
        let first: Vec<_> = (0..10).map(|_| spool.next_record().unwrap()).collect();
        for (_, pos) in &first[..8] {
            spool.ack(*pos);
        }
        // Crash: no close, the head is not written (less than a second).
        drop(spool);
        let mut spool = Spool::open(cfg()).unwrap();
        let sequences: Vec<u64> = drain(&mut spool).iter().map(|r| r.sequence).collect();
        // Segment 1 was wholly acknowledged and deleted; segment 2 is read
        // again from its start (8 comes twice: a duplicate, not a loss).
        assert_eq!(sequences, (8..=20).collect::<Vec<_>>());

        // A clean close records the head exactly.
        drop(spool);
        let mut spool = Spool::open(cfg()).unwrap();
        for _ in 0..10 {
            let (_, pos) = spool.next_record().unwrap();
            spool.ack(pos);
        }
        spool.close();
        drop(spool);
        let mut spool = Spool::open(cfg()).unwrap();
        let rest: Vec<u64> = drain(&mut spool).iter().map(|r| r.sequence).collect();
        assert_eq!(rest, (18..=20).collect::<Vec<_>>());
    }

    #[test]
    fn in_flight_appends_are_not_handed_out_again() {
        let dir = TempDir::new("inflight");
        let mut spool = Spool::open(SpoolConfig::new(&dir.0, 1 << 20)).unwrap();
        let a = spool.append(&record(1, 1, 10), true).unwrap();
        let _b = spool.append(&record(1, 2, 10), false).unwrap();
        assert_eq!(spool.stats().unread, 1);
        assert_eq!(spool.next_record().unwrap().0.sequence, 2);
        assert!(spool.holds(a));
        spool.close();
        drop(spool);
        // After a restart nothing is in flight: both come back.
        let mut spool = Spool::open(SpoolConfig::new(&dir.0, 1 << 20)).unwrap();
        assert_eq!(drain(&mut spool).len(), 2);
    }

    #[test]
    fn one_agent_per_spool() {
        let dir = TempDir::new("lock");
        let _spool = Spool::open(SpoolConfig::new(&dir.0, 1 << 20)).unwrap();
        assert!(matches!(
            Spool::open(SpoolConfig::new(&dir.0, 1 << 20)),
            Err(SpoolError::Locked { .. })
        ));
    }
}
