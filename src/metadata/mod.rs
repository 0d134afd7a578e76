//! Topics, partitions, their shards and configs: owned by the router, stored durably in
//! `<data-dir>/pinion-metadata.json` (write-new + fsync + rename).

pub mod configs;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::shard::ShardId;

pub const METADATA_FILE: &str = "pinion-metadata.json";
/// Kafka's limit: a topic name becomes a directory name with a partition suffix.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Topic {
    pub id: Uuid,
    /// Shard of each partition, by partition index.
    pub partition_shards: Vec<usize>,
    /// Topic configs set explicitly (the rest default to broker configs).
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct MetadataFile {
    cluster_id: String,
    topics: BTreeMap<String, Topic>,
    /// Producer ids below this may have been handed out.
    #[serde(default)]
    producer_ids_reserved: i64,
    /// Shard of each `__consumer_offsets` partition.
    #[serde(default)]
    offsets_partitions: Vec<usize>,
}

/// Producer ids are reserved durably in blocks, so an id is never handed out twice, even
/// across a crash, without a write per id.
const PRODUCER_ID_BLOCK: i64 = 1000;

pub struct Metadata {
    path: PathBuf,
    pub cluster_id: String,
    pub topics: BTreeMap<String, Topic>,
    /// Producer ids below this are reserved: what the next save writes.
    producer_ids_reserved: i64,
    /// Producer ids below this are reserved on disk: only these are handed out.
    producer_ids_durable: i64,
    next_producer_id: i64,
    /// Shard of each `__consumer_offsets` partition; a group's partition is a hash of its id.
    pub offsets_partitions: Vec<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{path} is damaged: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// The metadata file's contents at one moment, to be written off the thread that owns it.
pub struct Snapshot {
    path: PathBuf,
    bytes: Vec<u8>,
    producer_ids_reserved: i64,
}

impl Snapshot {
    /// Write-new + fsync + rename + fsync the directory: blocking, so the router runs it on its
    /// executor's blocking thread.
    pub fn write(&self) -> Result<(), MetadataError> {
        crate::log::write_synced(&self.path, &self.bytes).map_err(|e| match e {
            crate::log::LogError::Io { op, path, source } => MetadataError::Io { op, path, source },
            other => MetadataError::Corrupt { path: self.path.clone(), reason: other.to_string() },
        })
    }
}

impl Metadata {
    /// Loads the metadata of `data_dir`, or starts empty. Partitions recorded on a shard that
    /// no longer exists (fewer shards than last run) move to `shard % shard_count`.
    pub fn load(data_dir: &Path, shard_count: usize) -> Result<Metadata, MetadataError> {
        let path = data_dir.join(METADATA_FILE);
        let file = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<MetadataFile>(&bytes)
                .map_err(|e| MetadataError::Corrupt { path: path.clone(), reason: e.to_string() })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => MetadataFile {
                cluster_id: Uuid::new_v4().simple().to_string()[..22].to_string(),
                topics: BTreeMap::new(),
                producer_ids_reserved: 0,
                offsets_partitions: Vec::new(),
            },
            Err(e) => return Err(MetadataError::Io { op: "read", path, source: e }),
        };
        let mut meta = Metadata {
            path,
            cluster_id: file.cluster_id,
            topics: file.topics,
            producer_ids_reserved: file.producer_ids_reserved,
            producer_ids_durable: file.producer_ids_reserved,
            next_producer_id: file.producer_ids_reserved,
            offsets_partitions: file.offsets_partitions,
        };
        let mut moved = false;
        for shard in meta.offsets_partitions.iter_mut() {
            if *shard >= shard_count {
                *shard %= shard_count;
                moved = true;
            }
        }
        for topic in meta.topics.values_mut() {
            for shard in topic.partition_shards.iter_mut() {
                if *shard >= shard_count {
                    *shard %= shard_count;
                    moved = true;
                }
            }
        }
        if moved {
            meta.save()?;
        }
        Ok(meta)
    }

    /// The metadata as it is now, encoded for the file. Writing it is `Snapshot::write`, and
    /// `saved` records that it is on disk.
    pub fn snapshot(&self) -> Result<Snapshot, MetadataError> {
        let file = MetadataFile {
            cluster_id: self.cluster_id.clone(),
            topics: self.topics.clone(),
            producer_ids_reserved: self.producer_ids_reserved,
            offsets_partitions: self.offsets_partitions.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&file)
            .map_err(|e| MetadataError::Corrupt { path: self.path.clone(), reason: e.to_string() })?;
        Ok(Snapshot { path: self.path.clone(), bytes, producer_ids_reserved: self.producer_ids_reserved })
    }

    /// Records that `snapshot` is on disk: the producer ids it reserves may be handed out.
    pub fn saved(&mut self, snapshot: &Snapshot) {
        self.producer_ids_durable = self.producer_ids_durable.max(snapshot.producer_ids_reserved);
    }

    /// Saves on the calling thread: for start-up, before the broker listens. Once it serves,
    /// the router saves off its thread (`Router::save_metadata`).
    pub fn save(&mut self) -> Result<(), MetadataError> {
        let snapshot = self.snapshot()?;
        snapshot.write()?;
        self.saved(&snapshot);
        Ok(())
    }

    /// Partitions per shard, the input of `place`.
    pub fn shard_loads(&self, shard_count: usize) -> Vec<usize> {
        let mut loads = vec![0; shard_count];
        for topic in self.topics.values() {
            for &s in &topic.partition_shards {
                if s < shard_count {
                    loads[s] += 1;
                }
            }
        }
        loads
    }

    /// Places the `__consumer_offsets` partitions the first time the broker starts.
    pub fn ensure_offsets_partitions(
        &mut self,
        count: usize,
        shard_count: usize,
    ) -> Result<(), MetadataError> {
        if self.offsets_partitions.is_empty() {
            self.offsets_partitions = (0..count).map(|i| i % shard_count.max(1)).collect();
            self.save()?;
        }
        Ok(())
    }

    /// A producer id never handed out before, if one is left in the block reserved on disk.
    /// When none is, `reserve_producer_ids` and a save make the next block available.
    pub fn take_producer_id(&mut self) -> Option<i64> {
        if self.next_producer_id >= self.producer_ids_durable {
            return None;
        }
        self.next_producer_id += 1;
        Some(self.next_producer_id - 1)
    }

    /// Reserves the next block of producer ids: the next save writes it. The reservation only
    /// grows, so what is on disk always covers every id handed out.
    pub fn reserve_producer_ids(&mut self) {
        self.producer_ids_reserved =
            self.producer_ids_reserved.max(self.next_producer_id + PRODUCER_ID_BLOCK);
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<(&String, &Topic)> {
        self.topics.iter().find(|(_, t)| t.id == id)
    }
}

/// Where `count` new partitions go: each to the least-loaded shard at that moment (the lowest
/// id on a tie). A pure function of the recorded loads, so placement is reproducible.
pub fn place(loads: &[usize], count: usize) -> Vec<ShardId> {
    let mut loads = loads.to_vec();
    (0..count)
        .map(|_| {
            let (shard, _) = loads.iter().enumerate().min_by_key(|(i, l)| (**l, *i)).unwrap_or((0, &0));
            if let Some(l) = loads.get_mut(shard) {
                *l += 1;
            }
            ShardId(shard)
        })
        .collect()
}

/// Kafka's topic name rules.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name == crate::group::store::OFFSETS_TOPIC {
        return Err(format!("topic name {name} is reserved for the broker's internal use"));
    }
    if name == "." || name == ".." {
        return Err(format!("topic name cannot be {name:?}"));
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return Err(format!("topic name is {} bytes, the limit is {TOPIC_NAME_BYTES_MAX}", name.len()));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!(
            "topic name {name:?} contains {c:?}: only ASCII letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_balances_and_is_deterministic() {
        assert_eq!(place(&[0, 0], 4), vec![ShardId(0), ShardId(1), ShardId(0), ShardId(1)]);
        assert_eq!(place(&[3, 1, 1], 3), vec![ShardId(1), ShardId(2), ShardId(1)]);
        assert_eq!(place(&[5], 2), vec![ShardId(0), ShardId(0)]);
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("my_topic.v1-2").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("a/b").is_err());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
    }

    #[test]
    fn metadata_survives_reload_and_shrinking_shard_count() {
        let dir = tempfile::tempdir().unwrap();
        let mut meta = Metadata::load(dir.path(), 4).unwrap();
        let topic = Topic { id: Uuid::new_v4(), partition_shards: vec![0, 3], configs: BTreeMap::new() };
        meta.topics.insert("t".into(), topic.clone());
        meta.save().unwrap();
        let again = Metadata::load(dir.path(), 4).unwrap();
        assert_eq!(again.topics["t"], topic);
        assert_eq!(again.cluster_id, meta.cluster_id);
        let mut fewer = Metadata::load(dir.path(), 2).unwrap();
        assert_eq!(fewer.take_producer_id(), None, "no id before a block is reserved on disk");
        fewer.reserve_producer_ids();
        let unsaved = fewer.snapshot().unwrap();
        assert_eq!(fewer.take_producer_id(), None, "nor before the save that reserves it");
        unsaved.write().unwrap();
        fewer.saved(&unsaved);
        let id = fewer.take_producer_id().unwrap();
        let mut restarted = Metadata::load(dir.path(), 2).unwrap();
        restarted.reserve_producer_ids();
        restarted.save().unwrap();
        assert!(restarted.take_producer_id().unwrap() > id, "producer ids are never reused");
        assert_eq!(fewer.topics["t"].partition_shards, vec![0, 1]);
    }
}
