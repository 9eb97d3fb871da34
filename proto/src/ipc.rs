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
    #[error("malformed arrow ipc stream: {0}")]
    Framing(String),
    #[error("arrow ipc stream claims {claimed} bytes once decompressed, more than the {limit} a message may hold")]
    TooLarge { claimed: u64, limit: u64 },
}

/// Most bytes the buffers of one message may claim once decompressed
/// (arrow allocates what each buffer's length prefix claims before
/// decompressing it). The aggregator's messages hold a few MiB
/// (`flush_max_bytes`, 8 MiB by default).
pub const MAX_DECODED_BYTES: u64 = 256 << 20;

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
/// consumer lives on (`tests/tests/ingest/hostile_input.rs` found it).
pub fn decode(bytes: &[u8]) -> Result<RecordBatch, DecodeError> {
    check_sizes(bytes)?;
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

/// Walks the stream's messages before arrow reads them and refuses any size
/// the input claims but cannot back: a metadata or body length beyond the
/// bytes there are, a buffer outside its body, or compressed buffers
/// claiming more than [`MAX_DECODED_BYTES`] together. Arrow's reader
/// allocates each of these sizes before it looks at the bytes
/// (`tests/tests/ingest/hostile_input.rs` measures its largest allocation).
///
/// The aggregator runs the same check on every message before producing
/// it, so that what it acknowledges is what consumers decode. Returns the
/// bytes the compressed buffers claim together.
pub fn check_sizes(bytes: &[u8]) -> Result<u64, DecodeError> {
    fn take<'a>(rest: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        if rest.len() < n {
            return Err(DecodeError::Framing(format!(
                "{what} of {n} bytes, {} left",
                rest.len()
            )));
        }
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        Ok(head)
    }
    fn size(v: i64, what: &str) -> Result<usize, DecodeError> {
        usize::try_from(v).map_err(|_| DecodeError::Framing(format!("{what} {v}")))
    }
    let mut rest = bytes;
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let mut prefix = take(&mut rest, 4, "message length")?;
        if prefix == [0xff; 4] {
            prefix = take(&mut rest, 4, "message length")?;
        }
        let meta_len = i32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        if meta_len == 0 {
            return Ok(total); // end of stream
        }
        let meta = take(&mut rest, size(meta_len.into(), "metadata length")?, "metadata")?;
        let message = arrow_ipc::root_as_message(meta).map_err(|e| DecodeError::Framing(e.to_string()))?;
        let body = take(&mut rest, size(message.bodyLength(), "body length")?, "body")?;
        let batch = message
            .header_as_record_batch()
            .or_else(|| message.header_as_dictionary_batch().and_then(|d| d.data()));
        let Some(batch) = batch else { continue };
        let compressed = batch.compression().is_some();
        let mut claimed: u64 = 0;
        for buffer in batch.buffers().into_iter().flatten() {
            let offset = size(buffer.offset(), "buffer offset")?;
            let length = size(buffer.length(), "buffer length")?;
            let data = offset
                .checked_add(length)
                .and_then(|end| body.get(offset..end))
                .ok_or_else(|| {
                    DecodeError::Framing(format!("buffer {offset}+{length} outside a body of {}", body.len()))
                })?;
            if compressed && let Some(prefix) = data.first_chunk::<8>() {
                // -1: stored uncompressed; otherwise the decompressed length.
                claimed = claimed.saturating_add(u64::try_from(i64::from_le_bytes(*prefix)).unwrap_or(0));
            }
        }
        if claimed > MAX_DECODED_BYTES {
            return Err(DecodeError::TooLarge {
                claimed,
                limit: MAX_DECODED_BYTES,
            });
        }
        total = total.saturating_add(claimed);
    }
    Ok(total)
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
    fn claimed_sizes_beyond_the_bytes_or_the_limit_are_refused() {
        let mut b = Builder::default();
        b.append(&sample_row());
        let bytes = encode(&b.finish()).unwrap();
        // A body longer than the bytes: cut the last message short.
        let cut = &bytes[..bytes.len() - 20];
        assert!(matches!(decode(cut), Err(DecodeError::Framing(_))), "{:?}", decode(cut));
        // A compressed buffer claiming 1 TiB: find a decompressed-length
        // prefix (a small positive i64 right after the record batch's
        // metadata) and raise it.
        let mut found = 0;
        for i in 0..bytes.len() - 8 {
            let v = i64::from_le_bytes(bytes[i..i + 8].try_into().unwrap());
            if !(1..4096).contains(&v) {
                continue;
            }
            let mut m = bytes.clone();
            m[i..i + 8].copy_from_slice(&(1i64 << 40).to_le_bytes());
            if let Err(DecodeError::TooLarge { claimed, limit }) = decode(&m) {
                assert!(claimed >= 1 << 40 && limit == MAX_DECODED_BYTES);
                found += 1;
            }
        }
        assert!(found > 0, "no buffer's length prefix was recognised");
        assert!(decode(&bytes).is_ok());
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
