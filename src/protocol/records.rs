//! Records inside an uncompressed RecordBatch v2: building a batch from key/value records (for
//! the broker's own logs) and reading the records back. The produce and fetch paths never use
//! this; they move whole batches.

use bytes::{BufMut, Bytes, BytesMut};

use super::batch::{self, BatchHeader, HEADER_BYTES, LOG_OVERHEAD};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset_delta: i32,
    pub timestamp_delta: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordsError {
    #[error("the batch is compressed (codec {0}); only uncompressed records are read here")]
    Compressed(i16),
    #[error("record {index} is malformed")]
    Malformed { index: usize },
}

/// Builds a valid, uncompressed batch at base offset 0 holding `records` as (key, value) pairs.
pub fn build_batch(records: &[(Option<&[u8]>, Option<&[u8]>)], timestamp_ms: i64) -> Bytes {
    let mut body = BytesMut::new();
    for (i, (key, value)) in records.iter().enumerate() {
        let mut rec = BytesMut::new();
        rec.put_u8(0); // attributes
        put_varlong(&mut rec, 0); // timestamp delta
        put_varlong(&mut rec, i as i64); // offset delta
        put_nullable(&mut rec, *key);
        put_nullable(&mut rec, *value);
        put_varlong(&mut rec, 0); // headers
        put_varlong(&mut body, rec.len() as i64);
        body.put_slice(&rec);
    }
    let count = records.len() as i32;
    let mut b = BytesMut::with_capacity(HEADER_BYTES + body.len());
    b.put_i64(0);
    b.put_i32((HEADER_BYTES - LOG_OVERHEAD + body.len()) as i32);
    b.put_i32(-1); // partition leader epoch
    b.put_i8(batch::CURRENT_MAGIC);
    b.put_u32(0); // CRC, filled below
    b.put_i16(0); // attributes: no compression, CreateTime
    b.put_i32(count - 1);
    b.put_i64(timestamp_ms);
    b.put_i64(timestamp_ms);
    b.put_i64(-1); // producer id
    b.put_i16(-1);
    b.put_i32(-1);
    b.put_i32(count);
    b.put_slice(&body);
    batch::seal_crc(&mut b);
    b.freeze()
}

/// The records of one whole, uncompressed batch.
pub fn read_records(batch: &[u8]) -> Result<Vec<Record>, RecordsError> {
    let header = BatchHeader::peek(batch).map_err(|_| RecordsError::Malformed { index: 0 })?;
    let codec = header.attributes.get() & 0x07;
    if codec != 0 {
        return Err(RecordsError::Compressed(codec));
    }
    let count = header.records_count.get().max(0) as usize;
    let mut r = Reader { buf: &batch[HEADER_BYTES.min(batch.len())..], pos: 0 };
    let mut out = Vec::with_capacity(count.min(batch.len()));
    for index in 0..count {
        let bad = || RecordsError::Malformed { index };
        let len = r.varlong().ok_or_else(bad)?;
        let end = r.pos.checked_add(usize::try_from(len).map_err(|_| bad())?).ok_or_else(bad)?;
        if end > r.buf.len() {
            return Err(bad());
        }
        r.pos += 1; // attributes
        let timestamp_delta = r.varlong().ok_or_else(bad)?;
        let offset_delta = r.varlong().ok_or_else(bad)? as i32;
        let key = r.nullable().ok_or_else(bad)?;
        let value = r.nullable().ok_or_else(bad)?;
        let header_count = r.varlong().ok_or_else(bad)?;
        let mut headers = Vec::new();
        for _ in 0..header_count.max(0) {
            let name = r.nullable().ok_or_else(bad)?.unwrap_or_default();
            let value = r.nullable().ok_or_else(bad)?;
            headers.push((String::from_utf8_lossy(&name).into_owned(), value));
        }
        if r.pos != end {
            return Err(bad());
        }
        out.push(Record { offset_delta, timestamp_delta, key, value, headers });
    }
    Ok(out)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn varlong(&mut self) -> Option<i64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos)?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(((v >> 1) as i64) ^ -((v & 1) as i64));
            }
        }
        None
    }

    fn nullable(&mut self) -> Option<Option<Bytes>> {
        let len = self.varlong()?;
        if len < 0 {
            return Some(None);
        }
        let end = self.pos.checked_add(len as usize)?;
        let bytes = Bytes::copy_from_slice(self.buf.get(self.pos..end)?);
        self.pos = end;
        Some(Some(bytes))
    }
}

fn put_varlong(out: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.put_u8((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.put_u8(z as u8);
}

fn put_nullable(out: &mut BytesMut, v: Option<&[u8]>) {
    match v {
        None => put_varlong(out, -1),
        Some(b) => {
            put_varlong(out, b.len() as i64);
            out.put_slice(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_batches_validate_and_read_back() {
        let b = build_batch(&[(Some(b"k1"), Some(b"v1")), (None, Some(b"v2")), (Some(b"k3"), None)], 1234);
        let h = batch::validate(&b).unwrap();
        assert_eq!((h.records_count.get(), h.last_offset(), h.max_timestamp.get()), (3, 2, 1234));
        let records = read_records(&b).unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(records[1].key, None);
        assert_eq!(records[2].value, None);
        assert_eq!(records[2].offset_delta, 2);
    }

    #[test]
    fn garbage_records_are_an_error() {
        let mut b = build_batch(&[(Some(b"k"), Some(b"v"))], 0).to_vec();
        let n = b.len();
        b[HEADER_BYTES] = 0x7f; // record length far past the end
        assert!(read_records(&b[..n]).is_err());
        assert!(read_records(&b[..10]).is_err());
    }
}
