//! Producing: records -> one RecordBatch v2 per partition (compressed by the kafka-protocol
//! crate), Produce requests to each partition's leader, and the partition a key maps to.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType, NO_PARTITION_LEADER_EPOCH,
    NO_PRODUCER_EPOCH, NO_PRODUCER_ID,
};

use super::admin::topic_name;
use super::error::codes;
use super::{Client, ClientError};

/// One record to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    pub timestamp_ms: i64,
}

/// Encodes `records` as one RecordBatch v2 at base offset 0, compressed with `compression`.
pub fn encode_batch(records: &[OutRecord], compression: Compression) -> Result<Bytes, ClientError> {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch whenever `offset - sequence` changes; with this
            // sequence every record stays in one batch and the batch's base sequence is -1,
            // as for any producer that is not idempotent.
            sequence: i as i32 - 1,
            timestamp: r.timestamp_ms,
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (StrBytes::from_string(k.clone()), v.clone()))
                .collect::<IndexMap<_, _>>(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression };
    RecordBatchEncoder::encode(&mut buf, &records, &options).map_err(|e| ClientError::Protocol {
        addr: "(local)".into(),
        what: "record batch".into(),
        reason: format!("cannot encode it: {e}"),
    })?;
    Ok(buf.freeze())
}

/// What happened to one partition's batch.
#[derive(Debug)]
pub struct Produced {
    pub partition: i32,
    /// The offset of the batch's first record, or -1 with acks=0.
    pub result: Result<i64, ClientError>,
}

/// Sends one batch per partition of `topic` (`batches`: partition -> encoded batch) to the
/// partitions' leaders and reports each partition's outcome.
pub fn produce(
    client: &mut Client,
    topic: &str,
    leaders: &BTreeMap<i32, i32>,
    batches: Vec<(i32, Bytes)>,
    acks: i16,
) -> Result<Vec<Produced>, ClientError> {
    let mut by_leader: BTreeMap<i32, Vec<(i32, Bytes)>> = BTreeMap::new();
    let mut out = Vec::new();
    for (partition, batch) in batches {
        match leaders.get(&partition) {
            Some(&leader) if leader >= 0 => by_leader.entry(leader).or_default().push((partition, batch)),
            _ => out.push(Produced {
                partition,
                result: Err(ClientError::Kafka {
                    context: format!("{topic}/{partition}"),
                    code: codes::LEADER_NOT_AVAILABLE,
                    message: None,
                }),
            }),
        }
    }
    let timeout_ms = client.timeout().as_millis() as i32;
    for (leader, batches) in by_leader {
        let partitions: Vec<i32> = batches.iter().map(|(p, _)| *p).collect();
        let request =
            ProduceRequest::default().with_acks(acks).with_timeout_ms(timeout_ms).with_topic_data(vec![
                TopicProduceData::default().with_name(topic_name(topic)).with_partition_data(
                    batches
                        .into_iter()
                        .map(|(p, b)| PartitionProduceData::default().with_index(p).with_records(Some(b)))
                        .collect(),
                ),
            ]);
        let conn = client.broker(leader)?;
        if acks == 0 {
            conn.send_without_response(&request)?;
            out.extend(partitions.into_iter().map(|partition| Produced { partition, result: Ok(-1) }));
            continue;
        }
        let response = conn.send(&request)?;
        for t in response.responses {
            for p in t.partition_responses {
                let context = || format!("{topic}/{}", p.index);
                // Record-level messages (v8+) say which record was refused and why.
                let mut message = p.error_message.as_ref().map(|m| m.to_string());
                for e in &p.record_errors {
                    let why = e.batch_index_error_message.as_deref().unwrap_or("refused");
                    let line = format!("record {} of the batch: {why}", e.batch_index);
                    message = Some(match message {
                        Some(m) if !m.is_empty() => format!("{m}; {line}"),
                        _ => line,
                    });
                }
                let result = match p.error_code {
                    0 => Ok(p.base_offset),
                    code => Err(ClientError::Kafka { context: context(), code, message }),
                };
                out.push(Produced { partition: p.index, result });
            }
        }
    }
    Ok(out)
}

/// Kafka's murmur2 (the Java client's default partitioner hashes keys with it, so the same key
/// lands on the same partition whichever of the two produced it).
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition the Java client's default partitioner picks for `key`.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    assert!(partitions > 0, "a topic has at least one partition");
    (murmur2(key) & 0x7fff_ffff) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch;
    use kafka_protocol::records::RecordBatchDecoder;

    #[test]
    fn murmur2_matches_kafka() {
        // Values from Kafka's UtilsTest.testMurmur2.
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"), -58897971);
        assert_eq!(murmur2(b"abc"), 479470107);
    }

    #[test]
    fn batches_validate_and_decode_for_every_codec() {
        let records: Vec<OutRecord> = (0..5)
            .map(|i| OutRecord {
                key: (i % 2 == 0).then(|| Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(format!("value {i}"))),
                headers: vec![("h".into(), Some(Bytes::from_static(b"v"))), ("n".into(), None)],
                timestamp_ms: 1_700_000_000_000 + i,
            })
            .collect();
        for codec in
            [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd]
        {
            let encoded = encode_batch(&records, codec).unwrap();
            let header = batch::validate(&encoded).unwrap();
            assert_eq!(header.records_count.get(), 5);
            assert_eq!(header.base_sequence.get(), -1);
            assert_eq!(header.attributes.get() & 7, codec as i16);
            let set = RecordBatchDecoder::decode(&mut encoded.clone()).unwrap();
            assert_eq!(set.records.len(), 5);
            assert_eq!(set.records[4].value.as_deref(), Some(&b"value 4"[..]));
            assert_eq!(set.records[1].key, None);
            assert_eq!(set.records[3].timestamp, 1_700_000_000_003);
            assert_eq!(set.records[0].headers.len(), 2);
        }
    }
}
