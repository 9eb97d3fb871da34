//! One Kafka message value is one Arrow IPC *stream*: a schema message followed by
//! exactly one record batch, zstd-compressed. Self-describing, so any consumer
//! (or `pyarrow.ipc.open_stream`) can read a message on its own.

use arrow_array::RecordBatch;
use arrow_ipc::CompressionType;
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow_schema::ArrowError;

/// Why a message value could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("invalid arrow ipc stream")]
    Arrow(#[source] ArrowError),
    #[error("arrow ipc stream holds {count} record batches, expected exactly one")]
    BatchCount { count: usize },
    #[error("malformed arrow ipc stream (the arrow reader gave up: {0})")]
    Malformed(String),
}

/// zstd level of the IPC body compression: level 1 compresses these
/// batches about as well as the default 3 at a fraction of the CPU.
pub const ZSTD_LEVEL: i32 = 1;

/// Encodes `batch` as an Arrow IPC stream with zstd body compression.
pub fn encode(batch: &RecordBatch) -> Result<Vec<u8>, ArrowError> {
    let options = IpcWriteOptions::default()
        .try_with_compression(Some(CompressionType::ZSTD))?
        .try_with_compression_level(Some(ZSTD_LEVEL))?;
    let mut out = Vec::with_capacity(batch.get_array_memory_size() / 2 + 256);
    {
        let mut writer = StreamWriter::try_new_with_options(&mut out, &batch.schema(), options)?;
        writer.write(batch)?;
        writer.finish()?;
    }
    Ok(out)
}

/// Decodes a message value written by [`encode`].
///
/// The bytes come from Kafka, where anything with write access can put
/// anything: arrow's reader panics on some malformed buffer layouts (arrow
/// 60: a buffer offset past the body), so a panic while decoding is caught
/// and returned as [`DecodeError::Malformed`] — the message is skipped, the
/// consumer lives on (`tests/tests/hostile_input.rs` found it).
pub fn decode(bytes: &[u8]) -> Result<RecordBatch, DecodeError> {
    let read = || {
        let reader = StreamReader::try_new(bytes, None).map_err(DecodeError::Arrow)?;
        let mut batches = reader.collect::<Result<Vec<_>, _>>().map_err(DecodeError::Arrow)?;
        match batches.len() {
            1 => Ok(batches.remove(0)),
            count => Err(DecodeError::BatchCount { count }),
        }
    };
    std::panic::catch_unwind(read).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("panic");
        Err(DecodeError::Malformed(why.to_owned()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::{Builder, tests::sample_row};

    #[test]
    fn round_trip() {
        let mut b = Builder::default();
        b.append(&sample_row());
        let batch = b.finish();
        let bytes = encode(&batch).unwrap();
        let back = decode(&bytes).unwrap();
        assert_eq!(back, batch);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode(b"not arrow at all").is_err());
        assert!(decode(&[]).is_err());
    }

    #[test]
    fn a_body_the_reader_panics_on_is_an_error() {
        let mut b = Builder::default();
        b.append(&sample_row());
        let bytes = encode(&b.finish()).unwrap();
        // Every single-byte change of the message: an error or a batch.
        let mut malformed = 0;
        for i in 0..bytes.len() {
            for v in [0u8, 7, 0x7f, 0xff] {
                let mut m = bytes.clone();
                m[i] = v;
                if let Err(DecodeError::Malformed(_)) = decode(&m) {
                    malformed += 1;
                }
            }
        }
        // Some layouts make arrow panic; all were caught.
        assert!(
            malformed > 0,
            "no single-byte change reaches the arrow reader's panic any more: is the catch still needed?"
        );
    }
}
