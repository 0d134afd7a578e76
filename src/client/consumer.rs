//! Consuming: Fetch requests to a partition leader, and the records of the returned batches
//! (decompressed and CRC-checked by the kafka-protocol crate).

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest};
use kafka_protocol::records::{RecordBatchDecoder, TimestampType};

use super::admin::topic_name;
use super::{Client, ClientError};
use crate::protocol::batch::{self, BatchError, BatchHeader, CURRENT_MAGIC, MAGIC_OFFSET};

/// Bytes asked for per partition and per fetch; a larger first batch still comes whole.
const PARTITION_FETCH_BYTES: i32 = 1 << 20;
const FETCH_BYTES: i32 = 50 << 20;

/// One record as read from a partition.
#[derive(Debug, Clone)]
pub struct ConsumedRecord {
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: i64,
    pub log_append_time: bool,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// What one Fetch returned for one partition.
#[derive(Debug)]
pub struct PartitionFetch {
    pub partition: i32,
    pub error: i16,
    pub high_watermark: i64,
    pub records: Vec<ConsumedRecord>,
    /// Where the next fetch of this partition starts: past every batch returned, including
    /// control batches and records before the requested offset, which are not in `records`.
    pub next_offset: i64,
}

/// Fetches `positions` (partition, offset) of `topic` from `leader`, waiting up to `max_wait`
/// for at least one byte.
pub fn fetch(
    client: &mut Client,
    leader: i32,
    topic: &str,
    positions: &[(i32, i64)],
    max_wait: Duration,
) -> Result<Vec<PartitionFetch>, ClientError> {
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait.as_millis() as i32)
        .with_min_bytes(1)
        .with_max_bytes(FETCH_BYTES)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default().with_topic(topic_name(topic)).with_partitions(
            positions
                .iter()
                .map(|&(p, offset)| {
                    FetchPartition::default()
                        .with_partition(p)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(PARTITION_FETCH_BYTES)
                })
                .collect(),
        )]);
    let conn = client.broker(leader)?;
    let version = conn.version_of::<FetchRequest>()?;
    let response = conn.send_at(&request, version, max_wait)?;
    ClientError::check(response.error_code, None, || format!("fetching {topic}"))?;
    let mut out = Vec::new();
    for t in response.responses {
        for p in t.partitions {
            let from = positions.iter().find(|(q, _)| *q == p.partition_index).map_or(0, |(_, o)| *o);
            let (records, next_offset) = match (&p.records, p.error_code) {
                (Some(data), 0) => {
                    decode_records(p.partition_index, data.clone(), from).map_err(|reason| {
                        ClientError::Protocol {
                            addr: format!("broker {leader}"),
                            what: format!("batch of {topic}/{}", p.partition_index),
                            reason,
                        }
                    })?
                }
                _ => (Vec::new(), from),
            };
            out.push(PartitionFetch {
                partition: p.partition_index,
                error: p.error_code,
                high_watermark: p.high_watermark,
                records,
                next_offset,
            });
        }
    }
    Ok(out)
}

/// The records at or after offset `from` in `data`, batches laid end to end as a Fetch returns
/// them (the last one may be cut short by the size limit and is then left for the next fetch),
/// and the offset after the last whole batch.
pub fn decode_records(partition: i32, data: Bytes, from: i64) -> Result<(Vec<ConsumedRecord>, i64), String> {
    let mut records = Vec::new();
    let mut next_offset = from;
    let mut pos = 0;
    while pos < data.len() {
        let rest = &data[pos..];
        let length = match batch::frame_length(rest) {
            Ok(n) => n,
            Err(BatchError::Truncated { .. }) => break,
            Err(e) => return Err(format!("at byte {pos}: {e}")),
        };
        if rest.len() > MAGIC_OFFSET && rest[MAGIC_OFFSET] as i8 != CURRENT_MAGIC {
            return Err(format!("message format v{} is not supported (only v2)", rest[MAGIC_OFFSET]));
        }
        let header = BatchHeader::peek(rest).map_err(|e| e.to_string())?;
        let last_offset = header.last_offset();
        let mut one = data.slice(pos..pos + length);
        let set = RecordBatchDecoder::decode(&mut one)
            .map_err(|e| format!("batch at offset {}: {e}", header.base_offset()))?;
        for r in set.records {
            if r.control || r.offset < from {
                continue;
            }
            records.push(ConsumedRecord {
                partition,
                offset: r.offset,
                timestamp_ms: r.timestamp,
                log_append_time: r.timestamp_type == TimestampType::LogAppend,
                key: r.key,
                value: r.value,
                headers: r.headers.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            });
        }
        next_offset = next_offset.max(last_offset + 1);
        pos += length;
    }
    Ok((records, next_offset))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::producer::{encode_batch, OutRecord};
    use kafka_protocol::records::Compression;

    fn batch_at(base: i64, values: &[&str], codec: Compression) -> Vec<u8> {
        let records: Vec<OutRecord> = values
            .iter()
            .map(|v| OutRecord {
                key: None,
                value: Some(Bytes::from(v.to_string())),
                headers: Vec::new(),
                timestamp_ms: 5,
            })
            .collect();
        let mut b = encode_batch(&records, codec).unwrap().to_vec();
        batch::set_base_offset(&mut b, base);
        b
    }

    #[test]
    fn records_before_the_position_and_a_cut_batch_are_skipped() {
        let mut data = batch_at(10, &["a", "b", "c"], Compression::None);
        data.extend(batch_at(13, &["d", "e"], Compression::Gzip));
        let whole = data.len();
        data.extend(&batch_at(15, &["f"], Compression::None)[..30]);
        let (records, next) = decode_records(0, Bytes::from(data.clone()), 11).unwrap();
        let values: Vec<_> = records.iter().map(|r| r.value.clone().unwrap()).collect();
        assert_eq!(values, vec!["b", "c", "d", "e"]);
        assert_eq!(records[0].offset, 11);
        assert_eq!(next, 15);
        let (records, next) = decode_records(0, Bytes::from(data[..whole].to_vec()), 20).unwrap();
        assert!(records.is_empty());
        assert_eq!(next, 20);
    }

    #[test]
    fn a_corrupt_batch_is_an_error() {
        let mut data = batch_at(0, &["hello"], Compression::None);
        let last = data.len() - 2;
        data[last] ^= 0xff;
        assert!(decode_records(0, Bytes::from(data), 0).unwrap_err().contains("offset 0"));
    }
}
