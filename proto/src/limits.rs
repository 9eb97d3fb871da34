//! Budgets the agent, the aggregator and the consumers must agree on, so that
//! a batch a correct agent builds is always accepted, and a batch the
//! aggregator acknowledges is always one the consumers will decode (no
//! ack-then-drop).
//!
//! ```text
//!  agent: seals a batch at AGENT_BATCH_BYTES of expanded rows,
//!         resets its dictionary before AGENT_STRING_TABLE_BYTES
//!    │
//!    ▼  aggregator: refuses a batch whose rows would take more than
//!       max_batch_bytes (≥ MIN_BATCH_BYTES) once built, and a stream whose
//!       dictionary would exceed max_string_bytes (≥ MIN_STRING_BYTES);
//!       buffers at most flush_max_bytes + max_batch_bytes ≤ MAX_BUFFERED_ROW_BYTES
//!    │   and checks every message with ipc::check before producing it
//!    ▼
//!  consumers: ipc::decode refuses a message claiming more than ipc::MAX_DECODED_BYTES
//! ```
//!
//! Row sizes are the records' own `approx_bytes` (string bytes plus a
//! per-row and per-string allowance), which the Arrow buffers of the same
//! rows stay under (checked in the aggregator's sink tests).

use crate::ipc::MAX_DECODED_BYTES;

/// The agent closes a batch once its rows would take this many bytes in
/// the aggregator: every string reference counted with its string's length
/// (interned once on the wire, expanded on every row), attribution included.
pub const AGENT_BATCH_BYTES: usize = 8 << 20;

/// The agent clears its string dictionary (and re-defines what it uses)
/// before the strings defined on one stream would exceed this many bytes.
pub const AGENT_STRING_TABLE_BYTES: usize = 32 << 20;

/// Smallest dictionary budget an aggregator accepts in its config: twice
/// where agents reset theirs (the agent estimates container strings).
pub const MIN_STRING_BYTES: usize = 2 * AGENT_STRING_TABLE_BYTES;

/// Smallest per-batch budget an aggregator accepts in its config: what a
/// correct agent's largest batch can take (twice its own estimate, plus
/// fixed columns for up to 16,384 rows of 512 bytes).
pub const MIN_BATCH_BYTES: usize = 2 * AGENT_BATCH_BYTES + 16_384 * 512;

/// Most row bytes the aggregator may hold in its builders at once
/// (`flush_max_bytes` plus one batch): half the consumers' limit, so Arrow's
/// own overhead (offsets, validity, padding) cannot push a message over it.
pub const MAX_BUFFERED_ROW_BYTES: usize = (MAX_DECODED_BYTES / 2) as usize;

// The budgets nest: a correct agent's batch fits the smallest aggregator
// budget, and the default sink buffer (8 MiB) plus that budget fits what
// consumers decode. Checked when the crate compiles.
const _: () = assert!(AGENT_BATCH_BYTES < MIN_BATCH_BYTES);
const _: () = assert!(MIN_BATCH_BYTES + (8 << 20) <= MAX_BUFFERED_ROW_BYTES);

/// Most packages in one container inventory: the agent reports at most
/// this many (and says so), the aggregator refuses an inventory with more
/// (a large distribution image holds a few thousand; language lockfiles add
/// some thousands more).
pub const MAX_INVENTORY_PACKAGES: usize = 100_000;
