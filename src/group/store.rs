//! One partition of the internal `__consumer_offsets` log: committed offsets and group
//! metadata as records (key: group id, value: JSON), written through the same partition
//! machinery as topic data (CRC, aligned direct writes, group-committed fdatasync, recovery).
//! A commit is acknowledged only once its record is synced.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::buffers::ChunkBuf;
use crate::log::PartitionLog;
use crate::metadata::configs::LogConfig;
use crate::protocol::batch::Batches;
use crate::protocol::records;
use crate::shard::messages::{Acks, TopicPartition};
use crate::shard::partition::{CacheBudget, Partition};

/// The internal topic's name, as in Kafka.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Entries per record batch, so a snapshot of many groups stays within the batch size limit.
const ENTRIES_PER_BATCH: usize = 500;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SavedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// (protocol, metadata as hex)
    pub protocols: Vec<(String, String)>,
    pub assignment: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Entry {
    Offset {
        group: String,
        topic: String,
        partition: i32,
        offset: i64,
        leader_epoch: i32,
        metadata: Option<String>,
        commit_timestamp_ms: i64,
    },
    OffsetDelete {
        group: String,
        topic: String,
        partition: i32,
    },
    Group {
        group: String,
        protocol_type: Option<String>,
        protocol: Option<String>,
        generation_id: i32,
        leader: Option<String>,
        members: Vec<SavedMember>,
    },
    GroupDelete {
        group: String,
    },
}

impl Entry {
    pub fn group(&self) -> &str {
        match self {
            Entry::Offset { group, .. }
            | Entry::OffsetDelete { group, .. }
            | Entry::Group { group, .. }
            | Entry::GroupDelete { group } => group,
        }
    }
}

pub struct OffsetStore {
    partition: Rc<Partition>,
    arena: RefCell<ChunkBuf>,
}

impl OffsetStore {
    /// See `PartitionLog::set_zero_ahead`.
    pub fn set_zero_ahead(&self, bytes: u64) {
        self.partition.log.set_zero_ahead(bytes);
    }

    /// Opens (recovering) offsets partition `index` and returns every entry in it, oldest first.
    /// Segments roll at `segment_bytes` (`offsets.topic.segment.bytes`); a sealed segment is
    /// what makes the coordinator write a snapshot and drop it.
    pub async fn open(
        data_dir: &Path,
        index: usize,
        segment_bytes: u64,
    ) -> Result<(OffsetStore, Vec<Entry>), String> {
        let tp = TopicPartition::new(OFFSETS_TOPIC, index as i32);
        let config = LogConfig { segment_bytes, max_message_bytes: 64 << 20, ..LogConfig::default() };
        let (log, report) = PartitionLog::open(data_dir.join(tp.dir_name()), config.clone())
            .await
            .map_err(|e| e.to_string())?;
        if let Some((bytes, why)) = &report.truncated {
            eprintln!("pinion: {tp}: recovery truncated {bytes} bytes ({why})");
        }
        let mut entries = Vec::new();
        let mut offset = log.log_start_offset();
        let end = log.next_offset();
        while offset < end {
            let Some(chunk) =
                log.read(offset, 1 << 20, end, None).await.map_err(|e| e.to_string())?.batches()
            else {
                break;
            };
            let mut next = offset;
            for (_, header, batch) in Batches::new(&chunk) {
                next = header.last_offset() + 1;
                for record in records::read_records(batch).map_err(|e| format!("{tp}: {e}"))? {
                    match record.value.as_deref().map(serde_json::from_slice::<Entry>) {
                        Some(Ok(entry)) => entries.push(entry),
                        Some(Err(e)) => eprintln!("pinion: {tp}: skipping unreadable entry: {e}"),
                        None => {}
                    }
                }
            }
            if next <= offset {
                break;
            }
            offset = next;
        }
        // The offsets log is not cached: every entry is already in the coordinator's maps.
        let budget = CacheBudget::new(0);
        let partition = Partition::start(tp, log, config, budget);
        Ok((OffsetStore { partition, arena: RefCell::new(ChunkBuf::for_copies()) }, entries))
    }

    /// Appends entries now, so the log holds them in the order of the calls (the coordinator
    /// updates its maps in that same order); the returned future resolves once they are synced.
    pub fn queue(&self, entries: &[Entry]) -> Result<Synced, String> {
        let mut waits = Vec::new();
        for chunk in entries.chunks(ENTRIES_PER_BATCH) {
            let values: Vec<(Vec<u8>, Vec<u8>)> = chunk
                .iter()
                .map(|e| (e.group().as_bytes().to_vec(), serde_json::to_vec(e).unwrap_or_default()))
                .collect();
            let pairs: Vec<(Option<&[u8]>, Option<&[u8]>)> =
                values.iter().map(|(k, v)| (Some(k.as_slice()), Some(v.as_slice()))).collect();
            let batch: Bytes = records::build_batch(&pairs, now_ms());
            let (_, synced) =
                self.partition.append(&batch, Acks::All, &self.arena).map_err(|e| e.to_string())?;
            waits.push(synced);
        }
        Ok(Synced(waits))
    }

    /// Sealed segments of the log: entries a snapshot could replace.
    pub fn sealed_segments(&self) -> usize {
        self.partition.log.sealed_segments()
    }

    /// Deletes the sealed segments, once a synced snapshot after them holds all they said.
    pub async fn drop_sealed_segments(&self) -> Result<usize, String> {
        self.partition.log.delete_sealed_segments().await.map_err(|e| e.to_string())
    }

    pub async fn close(&self) {
        if let Err(e) = self.partition.close().await {
            eprintln!("pinion: closing the offsets log: {e}");
        }
    }
}

/// Entries queued, waiting for the fdatasync that covers them.
pub struct Synced(
    Vec<futures::channel::oneshot::Receiver<Result<(), crate::protocol::errors::PartitionError>>>,
);

impl Synced {
    pub async fn wait(self) -> Result<(), String> {
        for synced in self.0 {
            match synced.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err("the offsets log stopped".into()),
            }
        }
        Ok(())
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn from_hex(s: &str) -> Bytes {
    let bytes: Vec<u8> = (0..s.len() / 2)
        .filter_map(|i| s.get(2 * i..2 * i + 2))
        .filter_map(|h| u8::from_str_radix(h, 16).ok())
        .collect();
    Bytes::from(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_through_json_and_hex() {
        let e = Entry::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 3,
            offset: 42,
            leader_epoch: -1,
            metadata: Some("meta \u{1F600}".into()),
            commit_timestamp_ms: 7,
        };
        let back: Entry = serde_json::from_slice(&serde_json::to_vec(&e).unwrap()).unwrap();
        assert_eq!(back, e);
        assert_eq!(from_hex(&to_hex(b"\x00\xffab")), Bytes::from_static(b"\x00\xffab"));
    }
}
