//! What every event family shares while one batch is resolved: time chains
//! and the plausible-time window, the byte budget, string lookup, and
//! container references → [`Attribution`].

use std::collections::HashMap;

use glasshouse_proto::record::{Attribution, Str};

use super::{DecodeError, TimeWindow};

/// 2000-01-01 and 2200-01-01 in Unix ns: anything outside is a broken clock or input.
const MIN_TIME_NS: i64 = 946_684_800_000_000_000;
const MAX_TIME_NS: i64 = 7_258_118_400_000_000_000;

/// The times a batch may carry, and the earliest and latest it did.
#[derive(Debug)]
pub(super) struct Times {
    range: std::ops::Range<i64>,
    seen: (i64, i64),
}

impl Times {
    pub(super) fn new(window: Option<TimeWindow>, now_ns: i64) -> Times {
        let range = match window {
            Some(w) => {
                MIN_TIME_NS.max(now_ns.saturating_sub(w.max_age_ns))
                    ..MAX_TIME_NS.min(now_ns.saturating_add(w.max_ahead_ns).saturating_add(1))
            }
            None => MIN_TIME_NS..MAX_TIME_NS,
        };
        Times {
            range,
            seen: (i64::MAX, i64::MIN),
        }
    }

    /// Whether `t` is plausible; remembered for the batch's spread.
    pub(super) fn accept(&mut self, t: i64) -> bool {
        if !self.range.contains(&t) {
            return false;
        }
        self.seen = (self.seen.0.min(t), self.seen.1.max(t));
        true
    }

    pub(super) fn span_ns(&self) -> i64 {
        self.seen.1.saturating_sub(self.seen.0).max(0)
    }
}

/// What the rows of one batch will take once built, charged row by row
/// (each record's `approx_bytes`) before the next row is made; for a
/// process event the referenced argv is checked before its list is
/// allocated, so no batch can make the decoder hold more than the budget.
#[derive(Debug)]
pub(super) struct Budget {
    sequence: u64,
    used: usize,
    max: usize,
}

impl Budget {
    pub(super) fn new(sequence: u64, max: usize) -> Budget {
        Budget { sequence, used: 0, max }
    }

    pub(super) fn used(&self) -> usize {
        self.used
    }

    /// Whether `more` bytes would still fit.
    pub(super) fn check(&self, more: usize) -> Result<(), DecodeError> {
        let bytes = self.used.saturating_add(more);
        if bytes > self.max {
            return Err(DecodeError::OverBatchBudget {
                sequence: self.sequence,
                bytes,
                max: self.max,
            });
        }
        Ok(())
    }

    pub(super) fn charge(&mut self, bytes: usize) -> Result<(), DecodeError> {
        self.check(bytes)?;
        self.used += bytes;
        Ok(())
    }
}

/// One batch being resolved against its stream's tables.
#[derive(Debug)]
pub(super) struct Cursor<'t> {
    pub(super) sequence: u64,
    pub(super) strings: &'t HashMap<u32, Str>,
    pub(super) containers: &'t HashMap<u32, Attribution>,
    /// The attribution of host events.
    pub(super) host: &'t Attribution,
    pub(super) times: Times,
    pub(super) budget: Budget,
}

/// The time of each event of one list: a delta from the previous event's
/// (the first from the batch's base time), each checked as plausible.
#[derive(Debug)]
pub(super) struct TimeChain(i64);

impl TimeChain {
    pub(super) fn new(base_unix_ns: i64) -> TimeChain {
        TimeChain(base_unix_ns)
    }

    /// The next event's time, `delta_ns` after the previous one.
    pub(super) fn next(&mut self, cursor: &mut Cursor<'_>, delta_ns: i64, index: usize) -> Result<i64, DecodeError> {
        self.0 = self
            .0
            .checked_add(delta_ns)
            .filter(|t| cursor.times.accept(*t))
            .ok_or(DecodeError::BadTimestamp {
                sequence: cursor.sequence,
                index,
            })?;
        Ok(self.0)
    }
}

impl Cursor<'_> {
    /// String `id` of event `index`: 0 is none, an undefined id refuses the batch.
    pub(super) fn string(&self, index: usize, id: u32) -> Result<Option<Str>, DecodeError> {
        if id == 0 {
            return Ok(None);
        }
        self.strings
            .get(&id)
            .map(|s| Some(s.clone()))
            .ok_or(DecodeError::UnknownString {
                sequence: self.sequence,
                index,
                id,
            })
    }

    /// The attribution of container `container_ref` in this batch (0: the
    /// host); an undefined reference is refused with `unknown(ref)`.
    pub(super) fn attribution(
        &self,
        container_ref: u32,
        unknown: impl FnOnce(u32) -> DecodeError,
    ) -> Result<Attribution, DecodeError> {
        let of = match container_ref {
            0 => self.host,
            r => self.containers.get(&r).ok_or_else(|| unknown(r))?,
        };
        Ok(Attribution {
            batch_seq: self.sequence,
            ..of.clone()
        })
    }

    /// The attribution of event `index` (process, network or file).
    pub(super) fn event_attribution(&self, index: usize, container_ref: u32) -> Result<Attribution, DecodeError> {
        let sequence = self.sequence;
        self.attribution(container_ref, |container_ref| DecodeError::UnknownContainer {
            sequence,
            index,
            container_ref,
        })
    }

    /// Whether `t` is a plausible time for this batch.
    pub(super) fn accept_time(&mut self, t: i64) -> bool {
        self.times.accept(t)
    }
}
