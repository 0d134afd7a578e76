//! The Fetch response, encoded by hand so stored batches go to the socket untouched: the
//! encoder emits the response as a list of buffers, small encoded pieces interleaved with the
//! batches' own `Bytes`, ready for one vectored write. Field order and types follow Kafka's
//! FetchResponse schema, versions 4 to 18 (17 and 18 changed only the request).

use bytes::{BufMut, Bytes, BytesMut};
use uuid::Uuid;

use super::batch::Chunk;

pub const VERSION_MIN: i16 = 4;
pub const VERSION_MAX: i16 = 18;

pub struct PartitionOut {
    pub partition_index: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub batches: Vec<Chunk>,
}

pub struct TopicOut {
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: Vec<PartitionOut>,
}

pub struct FetchOut {
    pub error_code: i16,
    pub session_id: i32,
    pub topics: Vec<TopicOut>,
}

/// Encodes a whole response frame (size prefix included) as buffers to write in order.
pub fn encode(correlation_id: i32, version: i16, response: &FetchOut) -> Vec<Bytes> {
    debug_assert!((VERSION_MIN..=VERSION_MAX).contains(&version));
    let flexible = version >= 12;
    let mut pieces = Vec::new();
    let mut buf = BytesMut::with_capacity(128);
    buf.put_i32(correlation_id);
    if flexible {
        buf.put_u8(0); // response header tagged fields
    }
    buf.put_i32(0); // throttle_time_ms
    if version >= 7 {
        buf.put_i16(response.error_code);
        buf.put_i32(response.session_id);
    }
    put_len(&mut buf, response.topics.len(), flexible);
    for topic in &response.topics {
        if version >= 13 {
            buf.put_slice(topic.topic_id.as_bytes());
        } else {
            if flexible {
                put_uvarint(&mut buf, topic.name.len() as u64 + 1);
            } else {
                buf.put_i16(topic.name.len() as i16);
            }
            buf.put_slice(topic.name.as_bytes());
        }
        put_len(&mut buf, topic.partitions.len(), flexible);
        for p in &topic.partitions {
            buf.put_i32(p.partition_index);
            buf.put_i16(p.error_code);
            buf.put_i64(p.high_watermark);
            buf.put_i64(p.high_watermark); // last_stable_offset: no open transactions
            if version >= 5 {
                buf.put_i64(p.log_start_offset);
            }
            put_len(&mut buf, 0, flexible); // aborted_transactions: none
            if version >= 11 {
                buf.put_i32(-1); // preferred_read_replica
            }
            let records_bytes: usize = p.batches.iter().map(|b| b.len()).sum();
            if flexible {
                put_uvarint(&mut buf, records_bytes as u64 + 1);
            } else {
                buf.put_i32(records_bytes as i32);
            }
            if records_bytes > 0 {
                pieces.push(buf.split().freeze());
                for b in p.batches.iter().filter(|b| !b.is_empty()) {
                    b.pieces_into(&mut pieces);
                }
            }
            if flexible {
                buf.put_u8(0); // partition tagged fields
            }
        }
        if flexible {
            buf.put_u8(0); // topic tagged fields
        }
    }
    if flexible {
        buf.put_u8(0); // top-level tagged fields (no node_endpoints)
    }
    pieces.push(buf.freeze());
    let size: usize = pieces.iter().map(|p| p.len()).sum();
    pieces.insert(0, Bytes::copy_from_slice(&(size as i32).to_be_bytes()));
    pieces
}

fn put_len(buf: &mut BytesMut, len: usize, flexible: bool) {
    if flexible {
        put_uvarint(buf, len as u64 + 1);
    } else {
        buf.put_i32(len as i32);
    }
}

fn put_uvarint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{FetchResponse, ResponseHeader};
    use kafka_protocol::protocol::Decodable;

    /// The hand encoder must produce exactly what the crate decodes, for every version, with
    /// a cached batch's base offset put in place.
    #[test]
    fn crate_decodes_hand_encoded_response() {
        let batch = Bytes::from(crate::protocol::batch::tests::make_batch(5, 2, 1000, b"v"));
        // As a producer sends it (base offset 0), taken in at offset 7.
        let sent = Bytes::from(crate::protocol::batch::tests::make_batch(0, 2, 1000, b"v"));
        let at_7 = Bytes::from(crate::protocol::batch::tests::make_batch(7, 2, 1000, b"v"));
        let id = Uuid::new_v4();
        let out = FetchOut {
            error_code: 0,
            session_id: 0,
            topics: vec![TopicOut {
                name: "t".into(),
                topic_id: id,
                partitions: vec![
                    PartitionOut {
                        partition_index: 3,
                        error_code: 0,
                        high_watermark: 9,
                        log_start_offset: 0,
                        batches: vec![Chunk::stored(batch.clone()), Chunk::received(sent.clone(), 7)],
                    },
                    PartitionOut {
                        partition_index: 4,
                        error_code: 1,
                        high_watermark: -1,
                        log_start_offset: -1,
                        batches: vec![],
                    },
                ],
            }],
        };
        for version in VERSION_MIN..=VERSION_MAX {
            let pieces = encode(11, version, &out);
            let mut whole = BytesMut::new();
            for p in &pieces {
                whole.put_slice(p);
            }
            let mut frame = whole.freeze();
            let size = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
            assert_eq!(size as usize, frame.len() - 4);
            let _ = frame.split_to(4);
            let header_version = if version >= 12 { 1 } else { 0 };
            let header = ResponseHeader::decode(&mut frame, header_version).unwrap();
            assert_eq!(header.correlation_id, 11);
            let resp =
                FetchResponse::decode(&mut frame, version).unwrap_or_else(|e| panic!("v{version}: {e}"));
            assert!(frame.is_empty(), "v{version}: {} bytes left", frame.len());
            let t = &resp.responses[0];
            if version >= 13 {
                assert_eq!(t.topic_id, id);
            } else {
                assert_eq!(t.topic.as_str(), "t");
            }
            let p = &t.partitions[0];
            assert_eq!((p.partition_index, p.high_watermark), (3, 9));
            let records = p.records.as_ref().unwrap();
            assert_eq!(records.len(), batch.len() + at_7.len());
            assert_eq!(&records[..batch.len()], &batch[..]);
            assert_eq!(&records[batch.len()..], &at_7[..]);
            assert_eq!(t.partitions[1].error_code, 1);
        }
    }
}
