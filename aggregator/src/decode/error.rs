//! Why a batch was refused: one variant per problem, naming the batch, the
//! event and the reference at fault.

use std::fmt;

/// Which list of periodic samples a refusal is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleKind {
    SyscallProfile,
    ResourceSample,
}

impl fmt::Display for SampleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SampleKind::SyscallProfile => "syscall profile",
            SampleKind::ResourceSample => "resource sample",
        })
    }
}

/// Why a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// `events` counts events and samples (see the module documentation).
    #[error("batch {sequence} has {events} events, limit is {max}")]
    TooManyEvents { sequence: u64, events: usize, max: u32 },
    #[error("batch {sequence}: string dictionary would exceed {max} entries")]
    TooManyStrings { sequence: u64, max: u32 },
    /// The rows would take more than `max_batch_bytes` once built (every
    /// string reference counted with its string's length).
    #[error("batch {sequence}: rows would take more than max_batch_bytes = {max} bytes once built (at least {bytes})")]
    OverBatchBudget { sequence: u64, bytes: usize, max: usize },
    /// The batch's times spread wider than the time window allows.
    #[error("batch {sequence}: event times span {span_s} s, more than the {max_s} s one batch may cover")]
    TimeSpan { sequence: u64, span_s: i64, max_s: i64 },
    /// The stream's dictionary would hold more than `max_string_bytes`.
    #[error("batch {sequence}: string dictionary would hold {bytes} bytes, more than max_string_bytes = {max}")]
    OverStringBudget { sequence: u64, bytes: usize, max: usize },
    #[error("batch {sequence}: string id 0 is reserved")]
    StringIdZero { sequence: u64 },
    #[error("batch {sequence}: container ref 0 is reserved")]
    ContainerRefZero { sequence: u64 },
    #[error("batch {sequence}, event {index}: unknown string reference {id}")]
    UnknownString { sequence: u64, index: usize, id: u32 },
    #[error("batch {sequence}: container {container_ref} uses unknown string reference {id}")]
    UnknownContainerString { sequence: u64, container_ref: u32, id: u32 },
    #[error("batch {sequence}, event {index}: unknown container reference {container_ref}")]
    UnknownContainer {
        sequence: u64,
        index: usize,
        container_ref: u32,
    },
    #[error("batch {sequence}, event {index}: unknown process event kind {kind}")]
    UnknownKind { sequence: u64, index: usize, kind: i32 },
    #[error("batch {sequence}, event {index}: unknown network event kind {kind}")]
    UnknownNetworkKind { sequence: u64, index: usize, kind: i32 },
    #[error("batch {sequence}, event {index}: unknown file event kind {kind}")]
    UnknownFileKind { sequence: u64, index: usize, kind: i32 },
    #[error("batch {sequence}, event {index}: file event without a path")]
    MissingPath { sequence: u64, index: usize },
    #[error("batch {sequence}, event {index}: {side} address of {len} bytes, expected {expected}")]
    BadAddress {
        sequence: u64,
        index: usize,
        side: &'static str,
        len: usize,
        expected: &'static str,
    },
    #[error("batch {sequence}, event {index}: local and remote addresses of different families")]
    AddressFamilyMismatch { sequence: u64, index: usize },
    #[error("batch {sequence}, event {index}: {side} port {port} out of range")]
    BadPort {
        sequence: u64,
        index: usize,
        side: &'static str,
        port: u32,
    },
    #[error("batch {sequence}, event {index}: timestamp out of range")]
    BadTimestamp { sequence: u64, index: usize },
    /// Samples are per container: host processes are neither profiled nor sampled.
    #[error("batch {sequence}, {sample} {index}: container 0, a sample must name a container")]
    SampleWithoutContainer {
        sequence: u64,
        sample: SampleKind,
        index: usize,
    },
    #[error("batch {sequence}, {sample} {index}: unknown container reference {container_ref}")]
    UnknownSampleContainer {
        sequence: u64,
        sample: SampleKind,
        index: usize,
        container_ref: u32,
    },
    #[error("batch {sequence}, {sample} {index}: timestamp out of range")]
    BadSampleTimestamp {
        sequence: u64,
        sample: SampleKind,
        index: usize,
    },
    #[error(
        "batch {sequence}, syscall profile {index}: interval ends at {end_unix_ns}, before its start {start_unix_ns}"
    )]
    ReversedInterval {
        sequence: u64,
        index: usize,
        start_unix_ns: i64,
        end_unix_ns: i64,
    },
    #[error("batch {sequence}, syscall profile {index}: {numbers} syscall numbers but {counts} counts")]
    ProfileLengthMismatch {
        sequence: u64,
        index: usize,
        numbers: usize,
        counts: usize,
    },
    /// Gaps do not count against the event limit but have their own of the same size.
    #[error("batch {sequence} has {gaps} gaps, limit is {max}")]
    TooManyGaps { sequence: u64, gaps: usize, max: u32 },
    #[error("batch {sequence}, gap {index}: unknown gap reason {reason}")]
    UnknownGapReason { sequence: u64, index: usize, reason: i32 },
    #[error("batch {sequence}, gap {index}: unknown container reference {container_ref}")]
    UnknownGapContainer {
        sequence: u64,
        index: usize,
        container_ref: u32,
    },
    #[error("batch {sequence}, gap {index}: timestamp out of range")]
    BadGapTimestamp { sequence: u64, index: usize },
    #[error("batch {sequence}, gap {index}: window ends at {end_unix_ns}, before its start {start_unix_ns}")]
    ReversedGap {
        sequence: u64,
        index: usize,
        start_unix_ns: i64,
        end_unix_ns: i64,
    },
    /// A gap reports events that were not sent: zero of them is no gap.
    #[error("batch {sequence}, gap {index}: 0 events dropped")]
    EmptyGap { sequence: u64, index: usize },
    /// Inventories have their own limit (the event limit), packages per
    /// inventory [`MAX_PACKAGES`].
    #[error("batch {sequence} has {inventories} inventories, limit is {max}")]
    TooManyInventories {
        sequence: u64,
        inventories: usize,
        max: u32,
    },
    #[error("batch {sequence}, inventory {index}: {reason}")]
    BadInventory {
        sequence: u64,
        index: usize,
        reason: String,
    },
    #[error("batch sequence {sequence} is not after {previous}")]
    SequenceNotIncreasing { sequence: u64, previous: u64 },
}

impl DecodeError {
    /// The batch refused, when the error concerns one batch.
    pub fn sequence(&self) -> Option<u64> {
        match self {
            DecodeError::TooManyEvents { sequence, .. }
            | DecodeError::TooManyStrings { sequence, .. }
            | DecodeError::OverBatchBudget { sequence, .. }
            | DecodeError::OverStringBudget { sequence, .. }
            | DecodeError::TimeSpan { sequence, .. }
            | DecodeError::StringIdZero { sequence }
            | DecodeError::ContainerRefZero { sequence }
            | DecodeError::UnknownString { sequence, .. }
            | DecodeError::UnknownContainerString { sequence, .. }
            | DecodeError::UnknownContainer { sequence, .. }
            | DecodeError::UnknownKind { sequence, .. }
            | DecodeError::UnknownNetworkKind { sequence, .. }
            | DecodeError::UnknownFileKind { sequence, .. }
            | DecodeError::MissingPath { sequence, .. }
            | DecodeError::BadAddress { sequence, .. }
            | DecodeError::AddressFamilyMismatch { sequence, .. }
            | DecodeError::BadPort { sequence, .. }
            | DecodeError::BadTimestamp { sequence, .. }
            | DecodeError::SampleWithoutContainer { sequence, .. }
            | DecodeError::UnknownSampleContainer { sequence, .. }
            | DecodeError::BadSampleTimestamp { sequence, .. }
            | DecodeError::ReversedInterval { sequence, .. }
            | DecodeError::ProfileLengthMismatch { sequence, .. }
            | DecodeError::TooManyGaps { sequence, .. }
            | DecodeError::UnknownGapReason { sequence, .. }
            | DecodeError::UnknownGapContainer { sequence, .. }
            | DecodeError::BadGapTimestamp { sequence, .. }
            | DecodeError::ReversedGap { sequence, .. }
            | DecodeError::EmptyGap { sequence, .. }
            | DecodeError::TooManyInventories { sequence, .. }
            | DecodeError::BadInventory { sequence, .. } => Some(*sequence),
            // Not the batch's fault alone: a duplicate or reordered sequence.
            DecodeError::SequenceNotIncreasing { .. } => None,
        }
    }
}
