//! Kafka RecordBatch v2, both ways: building a batch in place in a reused buffer (no allocation
//! per record) and walking the batches of a fetched record set without decoding records.
//!
//! Layout of the 61-byte header (big endian):
//! `baseOffset i64 | batchLength i32 | partitionLeaderEpoch i32 | magic i8 | crc u32 |
//!  attributes i16 | lastOffsetDelta i32 | baseTimestamp i64 | maxTimestamp i64 |
//!  producerId i64 | producerEpoch i16 | baseSequence i32 | recordsCount i32`
//! The CRC-32C covers everything from `attributes` to the end of the batch.

use anyhow::{bail, Context, Result};
use bytes::{BufMut, Bytes};
use kafka_protocol::compression::{Compressor, Decompressor, Gzip, Lz4, Snappy, Zstd};

use crate::args::Compression;

pub const HEADER_BYTES: usize = 61;
/// baseOffset and batchLength: the bytes not counted in batchLength.
pub const LOG_OVERHEAD: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
/// First byte the CRC covers (attributes).
const CRC_START: usize = 21;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const RECORDS_COUNT_AT: usize = 57;
const MAGIC_V2: u8 = 2;
const CODEC_MASK: i16 = 0x07;

/// CRC-32C (Castagnoli), the checksum a batch carries over its bytes from `CRC_START` on: the
/// same function as the broker's `protocol::batch::crc32c` (this binary shares no module with it).
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, bytes) as u32
}

/// Most bytes a record with a null key, no headers and a `value_bytes`-long value takes in a
/// batch (every varint at its longest).
pub fn record_bytes_max(value_bytes: usize) -> usize {
    // length + attributes + timestampDelta + offsetDelta + key(-1) + value length + value + headers
    5 + 1 + 10 + 5 + 1 + 5 + value_bytes + 1
}

/// Appends records to a batch being built in `buf`. Records are written uncompressed, either
/// straight after the header or, for a compressed batch, into a scratch buffer compressed on
/// `finish`.
pub struct BatchBuilder {
    codec: Compression,
    records: i32,
    base_timestamp_ms: i64,
    max_timestamp_ms: i64,
    /// Uncompressed records of a compressed batch.
    scratch: Vec<u8>,
}

impl BatchBuilder {
    pub fn new(codec: Compression) -> BatchBuilder {
        BatchBuilder { codec, records: 0, base_timestamp_ms: 0, max_timestamp_ms: 0, scratch: Vec::new() }
    }

    /// Starts a new batch in `buf` (which is cleared; its allocation is kept).
    pub fn begin(&mut self, buf: &mut Vec<u8>, timestamp_ms: i64) {
        buf.clear();
        buf.resize(HEADER_BYTES, 0);
        self.scratch.clear();
        self.records = 0;
        self.base_timestamp_ms = timestamp_ms;
        self.max_timestamp_ms = timestamp_ms;
    }

    pub fn records(&self) -> i32 {
        self.records
    }

    /// Uncompressed size of the batch so far.
    pub fn size(&self, buf: &[u8]) -> usize {
        buf.len() + self.scratch.len()
    }

    /// Appends one record whose value is `prefix` followed by `payload`.
    pub fn append(&mut self, buf: &mut Vec<u8>, timestamp_ms: i64, prefix: &[u8], payload: &[u8]) {
        let out = if self.codec == Compression::None { buf } else { &mut self.scratch };
        let timestamp_delta = timestamp_ms - self.base_timestamp_ms;
        let offset_delta = i64::from(self.records);
        let value_bytes = (prefix.len() + payload.len()) as i64;
        let body_bytes = 1
            + varint_bytes(timestamp_delta)
            + varint_bytes(offset_delta)
            + 1
            + varint_bytes(value_bytes)
            + value_bytes as usize
            + 1;
        put_varint(out, body_bytes as i64);
        out.push(0); // attributes
        put_varint(out, timestamp_delta);
        put_varint(out, offset_delta);
        put_varint(out, -1); // null key
        put_varint(out, value_bytes);
        out.extend_from_slice(prefix);
        out.extend_from_slice(payload);
        put_varint(out, 0); // no headers
        self.records += 1;
        self.max_timestamp_ms = self.max_timestamp_ms.max(timestamp_ms);
    }

    /// Compresses the records if needed, fills in the header and the CRC.
    pub fn finish(&mut self, buf: &mut Vec<u8>) -> Result<()> {
        assert!(self.records > 0, "an empty batch is never sent");
        match self.codec {
            Compression::None => {}
            Compression::Gzip => compress::<Gzip>(buf, &self.scratch)?,
            Compression::Snappy => compress::<Snappy>(buf, &self.scratch)?,
            Compression::Lz4 => compress::<Lz4>(buf, &self.scratch)?,
            Compression::Zstd => compress::<Zstd>(buf, &self.scratch)?,
        }
        let batch_length = (buf.len() - LOG_OVERHEAD) as i32;
        let mut header = &mut buf[..HEADER_BYTES];
        header.put_i64(0); // base offset: the broker assigns it
        header.put_i32(batch_length);
        header.put_i32(-1); // partition leader epoch
        header.put_u8(MAGIC_V2);
        header.put_u32(0); // CRC, below
        header.put_i16(self.codec.attribute()); // CreateTime, not transactional
        header.put_i32(self.records - 1);
        header.put_i64(self.base_timestamp_ms);
        header.put_i64(self.max_timestamp_ms);
        header.put_i64(-1); // producer id: not idempotent
        header.put_i16(-1);
        header.put_i32(-1);
        header.put_i32(self.records);
        let crc = crc32c(&buf[CRC_START..]);
        buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        Ok(())
    }
}

fn compress<C: Compressor<Vec<u8>>>(buf: &mut Vec<u8>, records: &[u8]) -> Result<()> {
    C::compress(buf, |tmp| {
        tmp.put_slice(records);
        Ok(())
    })
}

fn varint_bytes(v: i64) -> usize {
    let zigzag = ((v << 1) ^ (v >> 63)) as u64;
    (64 - (zigzag | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut zigzag = ((v << 1) ^ (v >> 63)) as u64;
    while zigzag >= 0x80 {
        out.push((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

/// Bytes at the start of every value in end-to-end mode: intended send time (ns since the run
/// started), producer id, partition, and the producer's sequence number in that partition.
pub const STAMP_BYTES: usize = 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub send_ns: u64,
    pub producer: u32,
    pub partition: u32,
    pub sequence: u64,
}

impl Stamp {
    pub fn encode(&self) -> [u8; STAMP_BYTES] {
        let mut out = [0u8; STAMP_BYTES];
        out[0..8].copy_from_slice(&self.send_ns.to_le_bytes());
        out[8..12].copy_from_slice(&self.producer.to_le_bytes());
        out[12..16].copy_from_slice(&self.partition.to_le_bytes());
        out[16..24].copy_from_slice(&self.sequence.to_le_bytes());
        out
    }

    pub fn decode(value: &[u8]) -> Option<Stamp> {
        let v = value.get(..STAMP_BYTES)?;
        Some(Stamp {
            send_ns: u64::from_le_bytes(v[0..8].try_into().ok()?),
            producer: u32::from_le_bytes(v[8..12].try_into().ok()?),
            partition: u32::from_le_bytes(v[12..16].try_into().ok()?),
            sequence: u64::from_le_bytes(v[16..24].try_into().ok()?),
        })
    }
}

/// The fields of a stored batch header the consumer checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchView {
    pub base_offset: i64,
    /// Bytes of the whole batch, header included.
    pub total_bytes: usize,
    pub last_offset_delta: i32,
    pub records_count: i32,
    pub codec: i16,
}

impl BatchView {
    pub fn next_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta) + 1
    }
}

/// Walks the whole batches at the start of a record set. A batch cut short at the end (a fetch
/// response may end in a partial batch) ends the walk; `remainder` then says how many bytes
/// were left over.
pub struct Batches<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Batches<'a> {
    pub fn new(data: &'a [u8]) -> Batches<'a> {
        Batches { data, pos: 0 }
    }

    /// Reads the next whole batch: its header view and its bytes.
    pub fn next_batch(&mut self) -> Result<Option<(BatchView, &'a [u8])>> {
        let rest = &self.data[self.pos..];
        if rest.len() < HEADER_BYTES {
            return Ok(None);
        }
        let base_offset = i64::from_be_bytes(rest[0..8].try_into().expect("8 bytes"));
        let batch_length = i32::from_be_bytes(rest[8..12].try_into().expect("4 bytes"));
        if batch_length < (HEADER_BYTES - LOG_OVERHEAD) as i32 {
            bail!("batch at offset {base_offset} has a batchLength of {batch_length}");
        }
        let total_bytes = LOG_OVERHEAD + batch_length as usize;
        if rest.len() < total_bytes {
            return Ok(None);
        }
        if rest[MAGIC_AT] != MAGIC_V2 {
            bail!("batch at offset {base_offset} has magic {} (only v2 is read)", rest[MAGIC_AT]);
        }
        let be_i32 = |at: usize| i32::from_be_bytes(rest[at..at + 4].try_into().expect("4 bytes"));
        let attributes = i16::from_be_bytes([rest[ATTRIBUTES_AT], rest[ATTRIBUTES_AT + 1]]);
        let view = BatchView {
            base_offset,
            total_bytes,
            last_offset_delta: be_i32(LAST_OFFSET_DELTA_AT),
            records_count: be_i32(RECORDS_COUNT_AT),
            codec: attributes & CODEC_MASK,
        };
        self.pos += total_bytes;
        Ok(Some((view, &rest[..total_bytes])))
    }

    /// Bytes after the last whole batch.
    #[cfg(test)]
    pub fn remainder(&self) -> usize {
        self.data.len() - self.pos
    }
}

/// Whether the stored CRC of a whole batch matches its bytes.
pub fn crc_ok(batch: &[u8]) -> bool {
    let stored = u32::from_be_bytes(batch[CRC_AT..CRC_AT + 4].try_into().expect("4 bytes"));
    crc32c(&batch[CRC_START..]) == stored
}

/// Calls `f` with the value of every record of a whole batch, decompressing it if needed.
pub fn for_each_value(batch: &[u8], codec: i16, mut f: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
    let records = &batch[HEADER_BYTES..];
    let count =
        i32::from_be_bytes(batch[RECORDS_COUNT_AT..RECORDS_COUNT_AT + 4].try_into().expect("4 bytes"));
    let mut walk = |data: &[u8]| walk_records(data, count, &mut f);
    match codec {
        0 => walk(records),
        1 => decompress::<Gzip>(records, &mut walk),
        2 => decompress::<Snappy>(records, &mut walk),
        3 => decompress::<Lz4>(records, &mut walk),
        4 => decompress::<Zstd>(records, &mut walk),
        other => bail!("unknown compression codec {other}"),
    }
}

fn decompress<D: Decompressor<Bytes, Buf = Bytes>>(
    records: &[u8],
    walk: &mut impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut compressed = Bytes::copy_from_slice(records);
    D::decompress(&mut compressed, |plain| walk(plain))
}

fn walk_records(data: &[u8], count: i32, f: &mut impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
    let mut r = Reader { data, pos: 0 };
    for index in 0..count {
        let bad = || format!("record {index} of a batch is malformed");
        let length = r.varint().with_context(bad)?;
        let end = r.pos + usize::try_from(length).ok().with_context(bad)?;
        if end > data.len() {
            bail!(bad());
        }
        r.pos += 1; // attributes
        r.varint().with_context(bad)?; // timestamp delta
        r.varint().with_context(bad)?; // offset delta
        let key_bytes = r.varint().with_context(bad)?;
        r.pos += usize::try_from(key_bytes.max(0)).unwrap_or(0);
        let value_bytes = r.varint().with_context(bad)?;
        let value_end = r.pos + usize::try_from(value_bytes.max(0)).unwrap_or(0);
        if value_end > end {
            bail!(bad());
        }
        f(&data[r.pos..value_end])?;
        r.pos = end;
    }
    Ok(())
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn varint(&mut self) -> Option<i64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self.data.get(self.pos)?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(((v >> 1) as i64) ^ -((v & 1) as i64));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::RecordBatchDecoder;

    fn build(codec: Compression, values: &[&[u8]]) -> Vec<u8> {
        let mut b = BatchBuilder::new(codec);
        let mut buf = Vec::new();
        b.begin(&mut buf, 1_700_000_000_000);
        for (i, v) in values.iter().enumerate() {
            b.append(&mut buf, 1_700_000_000_000 + i as i64, b"", v);
        }
        b.finish(&mut buf).unwrap();
        buf
    }

    #[test]
    fn varint_sizes() {
        for v in [0i64, 1, -1, 63, 64, -64, -65, 1 << 20, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_bytes(v), "{v}");
            assert_eq!(Reader { data: &out, pos: 0 }.varint(), Some(v));
        }
    }

    /// The crate's decoder (which checks the CRC) reads what the builder wrote.
    #[test]
    fn built_batches_decode_with_the_crate() {
        let values: Vec<Vec<u8>> = (0..300).map(|i| vec![b'A' + (i % 26) as u8; 100 + i]).collect();
        let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        for codec in
            [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd]
        {
            let batch = build(codec, &refs);
            assert!(crc_ok(&batch));
            let mut bytes = Bytes::from(batch.clone());
            let set = RecordBatchDecoder::decode(&mut bytes).unwrap();
            assert_eq!(set.records.len(), values.len(), "{codec:?}");
            for (i, r) in set.records.iter().enumerate() {
                assert_eq!(r.offset, i as i64);
                assert_eq!(r.timestamp, 1_700_000_000_000 + i as i64);
                assert_eq!(r.value.as_deref(), Some(values[i].as_slice()));
                assert!(r.key.is_none());
            }
            let mut seen = Vec::new();
            let mut walk = Batches::new(&batch);
            let (view, whole) = walk.next_batch().unwrap().unwrap();
            assert_eq!(view.records_count, 300);
            assert_eq!(view.next_offset(), 300);
            assert_eq!(view.codec, codec.attribute());
            for_each_value(whole, view.codec, |v| {
                seen.push(v.to_vec());
                Ok(())
            })
            .unwrap();
            assert_eq!(seen, values);
        }
    }

    #[test]
    fn stamps_round_trip() {
        let s = Stamp { send_ns: 1 << 40, producer: 3, partition: 999, sequence: 12345 };
        let mut value = s.encode().to_vec();
        value.extend_from_slice(b"payload");
        assert_eq!(Stamp::decode(&value), Some(s));
        assert_eq!(Stamp::decode(b"short"), None);
    }

    #[test]
    fn partial_batch_ends_the_walk() {
        let mut data = build(Compression::None, &[b"one", b"two"]);
        let second = build(Compression::None, &[b"three"]);
        data.extend_from_slice(&second[..second.len() - 1]);
        let mut walk = Batches::new(&data);
        assert!(walk.next_batch().unwrap().is_some());
        assert!(walk.next_batch().unwrap().is_none());
        assert_eq!(walk.remainder(), second.len() - 1);
    }

    #[test]
    fn corruption_is_caught() {
        let mut batch = build(Compression::None, &[b"one"]);
        let last = batch.len() - 2;
        batch[last] ^= 1;
        assert!(!crc_ok(&batch));
    }
}
