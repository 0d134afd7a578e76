//! The produce request, framed by hand so that record batches go from the buffers they were
//! built in straight to the socket with one vectored write: the bytes around the batches are
//! encoded into a small side buffer, and the batches are never copied into a request buffer.
//! A unit test checks the result byte for byte against the kafka-protocol crate's encoder.

use std::io::{IoSlice, Write};
use std::ops::Range;

use anyhow::{bail, Result};
use kafka_protocol::messages::ApiKey;
use uuid::Uuid;

use crate::conn::Wanted;

/// v3 is the first with RecordBatch v2; v13 names topics by id.
pub const PRODUCE: Wanted = Wanted { key: ApiKey::Produce, min: 3, max: 13 };
const FIRST_FLEXIBLE_VERSION: i16 = 9;
const FIRST_TOPIC_ID_VERSION: i16 = 13;
/// Batches per vectored write; longer requests take several calls.
const IOVECS_MAX: usize = 512;

/// What every produce request of one producer shares.
#[derive(Debug, Clone)]
pub struct ProduceTarget {
    pub version: i16,
    pub acks: i16,
    pub timeout_ms: i32,
    pub topic: String,
    pub topic_id: Uuid,
    pub client_id: String,
}

enum Piece {
    Framing(Range<usize>),
    Batch(usize),
}

/// A produce request as the bytes around the batches plus the order to write everything in.
#[derive(Default)]
pub struct ProduceFrame {
    framing: Vec<u8>,
    pieces: Vec<Piece>,
    piece_start: usize,
}

impl ProduceFrame {
    /// Frames a request carrying `batches` as (partition index, batch bytes), in that order.
    pub fn encode(&mut self, target: &ProduceTarget, correlation_id: i32, batches: &[(i32, &[u8])]) {
        let flexible = target.version >= FIRST_FLEXIBLE_VERSION;
        self.framing.clear();
        self.pieces.clear();
        self.piece_start = 0;
        let f = &mut self.framing;
        f.extend_from_slice(&[0; 4]); // size, below
                                      // Request header v1, or v2 (with tagged fields) for flexible versions.
        f.extend_from_slice(&(ApiKey::Produce as i16).to_be_bytes());
        f.extend_from_slice(&target.version.to_be_bytes());
        f.extend_from_slice(&correlation_id.to_be_bytes());
        f.extend_from_slice(&(target.client_id.len() as i16).to_be_bytes());
        f.extend_from_slice(target.client_id.as_bytes());
        if flexible {
            f.push(0);
        }
        // transactional_id: null
        if flexible {
            f.push(0);
        } else {
            f.extend_from_slice(&(-1i16).to_be_bytes());
        }
        f.extend_from_slice(&target.acks.to_be_bytes());
        f.extend_from_slice(&target.timeout_ms.to_be_bytes());
        put_array_len(f, flexible, 1);
        if target.version >= FIRST_TOPIC_ID_VERSION {
            f.extend_from_slice(target.topic_id.as_bytes());
        } else if flexible {
            put_uvarint(f, target.topic.len() as u64 + 1);
            f.extend_from_slice(target.topic.as_bytes());
        } else {
            f.extend_from_slice(&(target.topic.len() as i16).to_be_bytes());
            f.extend_from_slice(target.topic.as_bytes());
        }
        put_array_len(f, flexible, batches.len());
        let mut batch_bytes = 0;
        for (i, (partition, batch)) in batches.iter().enumerate() {
            f.extend_from_slice(&partition.to_be_bytes());
            if flexible {
                put_uvarint(f, batch.len() as u64 + 1);
            } else {
                f.extend_from_slice(&(batch.len() as i32).to_be_bytes());
            }
            self.pieces.push(Piece::Framing(self.piece_start..f.len()));
            self.pieces.push(Piece::Batch(i));
            self.piece_start = f.len();
            batch_bytes += batch.len();
            if flexible {
                f.push(0); // partition tagged fields
            }
        }
        if flexible {
            f.push(0); // topic tagged fields
            f.push(0); // request tagged fields
        }
        self.pieces.push(Piece::Framing(self.piece_start..f.len()));
        let size = (f.len() - 4 + batch_bytes) as i32;
        f[..4].copy_from_slice(&size.to_be_bytes());
    }

    /// Writes the request framed last, with the same batches, as one stream of vectored writes.
    pub fn write_to(&self, out: &mut impl Write, batches: &[(i32, &[u8])]) -> Result<()> {
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(self.pieces.len().min(IOVECS_MAX));
        let mut pieces = self.pieces.iter().peekable();
        while pieces.peek().is_some() {
            slices.clear();
            for piece in pieces.by_ref().take(IOVECS_MAX) {
                let bytes = match piece {
                    Piece::Framing(range) => &self.framing[range.clone()],
                    Piece::Batch(i) => batches[*i].1,
                };
                if !bytes.is_empty() {
                    slices.push(IoSlice::new(bytes));
                }
            }
            write_all_vectored(out, &mut slices)?;
        }
        Ok(())
    }
}

fn write_all_vectored(out: &mut impl Write, mut slices: &mut [IoSlice<'_>]) -> Result<()> {
    while !slices.is_empty() {
        match out.write_vectored(slices) {
            Ok(0) => bail!("the broker closed the connection"),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn put_array_len(f: &mut Vec<u8>, flexible: bool, len: usize) {
    if flexible {
        put_uvarint(f, len as u64 + 1);
    } else {
        f.extend_from_slice(&(len as i32).to_be_bytes());
    }
}

fn put_uvarint(f: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        f.push((v as u8) | 0x80);
        v >>= 7;
    }
    f.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, RequestHeader, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};

    fn crate_encoding(target: &ProduceTarget, correlation_id: i32, batches: &[(i32, &[u8])]) -> Vec<u8> {
        let mut buf = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(ApiKey::Produce as i16)
            .with_request_api_version(target.version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_string(target.client_id.clone())))
            .encode(&mut buf, ApiKey::Produce.request_header_version(target.version))
            .unwrap();
        let partitions = batches
            .iter()
            .map(|(p, b)| {
                PartitionProduceData::default().with_index(*p).with_records(Some(Bytes::copy_from_slice(b)))
            })
            .collect();
        ProduceRequest::default()
            .with_transactional_id(None)
            .with_acks(target.acks)
            .with_timeout_ms(target.timeout_ms)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(target.topic.clone())))
                .with_topic_id(target.topic_id)
                .with_partition_data(partitions)])
            .encode(&mut buf, target.version)
            .unwrap();
        let mut framed = (buf.len() as i32).to_be_bytes().to_vec();
        framed.extend_from_slice(&buf);
        framed
    }

    #[test]
    fn matches_the_crate_for_every_version() {
        let long = vec![7u8; 300]; // a length that needs a two-byte varint
        let batches: Vec<(i32, &[u8])> = vec![(3, b"first batch"), (0, &long), (7, b"")];
        for version in PRODUCE.min..=PRODUCE.max {
            let target = ProduceTarget {
                version,
                acks: -1,
                timeout_ms: 1234,
                topic: "bench-topic".into(),
                topic_id: Uuid::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
                client_id: "pinion-bench".into(),
            };
            let mut frame = ProduceFrame::default();
            frame.encode(&target, 42, &batches);
            let mut ours = Vec::new();
            frame.write_to(&mut ours, &batches).unwrap();
            assert_eq!(ours, crate_encoding(&target, 42, &batches), "produce v{version}");
        }
    }
}
