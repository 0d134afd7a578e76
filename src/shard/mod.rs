//! A shard: the owner of a disjoint set of partitions, serving the router's requests for them.
//! It runs on a pinned executor of its own, or inside the router's when it is placed on the
//! router's CPU (see `link`). It never blocks on I/O and shares nothing with other cores.

pub mod link;
pub mod messages;
pub mod partition;
pub mod producers;

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

use futures::channel::oneshot;
use futures::future::select;
use futures::StreamExt;

use crate::buffers::ChunkBuf;
use crate::group::{Coordinator, GroupCall};
use crate::log::read_ahead::ReadAhead;
use crate::log::PartitionLog;
use crate::metadata::configs::LogConfig;
use crate::protocol::errors::PartitionError;
use link::Inbox;
use messages::*;
use partition::{CacheBudget, Partition};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub usize);

pub struct Shard {
    data_dir: PathBuf,
    zero_ahead_bytes: u64,
    partitions: RefCell<HashMap<TopicPartition, Rc<Partition>>>,
    budget: Rc<CacheBudget>,
    read_ahead: Rc<ReadAhead>,
    /// Small incoming batches are copied here (patched with their offsets) before caching and
    /// writing (`partition::KEEP_AS_RECEIVED_BYTES`).
    arena: RefCell<ChunkBuf>,
    groups: RefCell<Option<Rc<Coordinator>>>,
}

impl Shard {
    pub fn new(storage: Storage) -> Rc<Shard> {
        Rc::new(Shard {
            data_dir: storage.data_dir,
            zero_ahead_bytes: storage.zero_ahead_bytes,
            partitions: RefCell::new(HashMap::new()),
            budget: CacheBudget::new(storage.cache_bytes),
            read_ahead: Rc::new(ReadAhead::new(storage.io_memory_bytes / 4)),
            arena: RefCell::new(ChunkBuf::for_copies()),
            groups: RefCell::new(None),
        })
    }

    /// Reads a fetch's partitions, concurrently, so that one slow read does not delay the rest.
    /// What each may read from disk is decided in turn (`read_ahead::FetchReads`), starting
    /// where the consumer's previous fetch left off; the answers keep the fetch's order.
    async fn fetch(
        &self,
        items: Vec<FetchItem>,
        max_bytes: usize,
        connection: u64,
    ) -> Vec<Result<Fetched, PartitionError>> {
        let found: Vec<_> = items.iter().map(|item| self.partition(&item.tp)).collect();
        let made_ahead: Vec<bool> = items
            .iter()
            .zip(&found)
            .map(|(item, p)| p.as_ref().is_ok_and(|p| p.is_read_ahead(item.offset, &self.read_ahead)))
            .collect();
        let first = self.read_ahead.first(&made_ahead, connection);
        let reads = self.read_ahead.fetch(max_bytes, connection);
        // Collected here, so each partition's read is decided now, in this order.
        let fetches: Vec<_> = (0..items.len())
            .map(|k| {
                let i = (first + k) % items.len();
                let item = &items[i];
                let fetch = found[i].as_ref().map(|p| p.fetch(item.offset, item.max_bytes, Some(&reads)));
                async move {
                    match fetch {
                        Ok(f) => f.await,
                        Err(e) => Err(e.clone()),
                    }
                }
            })
            .collect();
        reads.read_ahead_deferred();
        let mut answers = futures::future::join_all(fetches).await;
        answers.rotate_right(first);
        answers
    }

    fn partition(&self, tp: &TopicPartition) -> Result<Rc<Partition>, PartitionError> {
        self.partitions.borrow().get(tp).cloned().ok_or(PartitionError::UnknownTopicOrPartition)
    }

    /// Serves requests until `Shutdown`. Produce appends happen here, in arrival order, so that
    /// requests from one connection keep their order; everything that waits runs in its own task.
    pub async fn run(self: Rc<Self>, requests: Inbox) {
        glommio::spawn_local(retention_loop(Rc::downgrade(&self))).detach();
        while let Some(request) = requests.recv().await {
            // Disk reads the router has finished sending, if it runs on another thread.
            crate::log::read_buf::release_returned();
            match request {
                ShardRequest::Produce { acks, items, reply } => self.produce(acks, items, reply),
                ShardRequest::Shutdown { reply } => {
                    self.shutdown().await;
                    reply.send(());
                    return;
                }
                other => {
                    let shard = self.clone();
                    glommio::spawn_local(async move { shard.handle(other).await }).detach();
                }
            }
        }
        self.shutdown().await;
    }

    async fn handle(&self, request: ShardRequest) {
        match request {
            ShardRequest::Fetch { items, max_bytes, connection, reply } => {
                reply.send(self.fetch(items, max_bytes, connection).await)
            }
            ShardRequest::WaitForData { items, deadline, reply } => {
                self.wait_for_data(items, deadline, reply).await
            }
            ShardRequest::ListOffsets { items, reply } => {
                let mut out = Vec::with_capacity(items.len());
                for (tp, timestamp) in items {
                    out.push(match self.partition(&tp) {
                        Ok(p) => list_offset(&p, timestamp).await,
                        Err(e) => Err(e),
                    });
                }
                reply.send(out);
            }
            ShardRequest::OpenPartitions { fresh, items, reply } => {
                let mut out = Vec::with_capacity(items.len());
                for (tp, config) in items {
                    if fresh {
                        self.delete_partition(&tp).await;
                    }
                    out.push(self.open_partition(tp, config).await);
                }
                reply.send(out);
            }
            ShardRequest::DeletePartitions { items, reply } => {
                for tp in items {
                    self.delete_partition(&tp).await;
                }
                reply.send(());
            }
            ShardRequest::SetConfig { topic, config } => {
                for (tp, p) in self.partitions.borrow().iter() {
                    if tp.topic == topic {
                        p.set_config(config.clone());
                    }
                }
            }
            ShardRequest::OpenGroups { owned, total, limits, retention_ms, segment_bytes, reply } => {
                let opened =
                    Coordinator::open(&self.data_dir, &owned, total, limits, retention_ms, segment_bytes)
                        .await;
                reply.send(opened.map(|c| {
                    c.set_zero_ahead(self.zero_ahead_bytes);
                    *self.groups.borrow_mut() = Some(c);
                }));
            }
            ShardRequest::Group(call) => {
                let coordinator = self.groups.borrow().clone();
                match coordinator {
                    Some(c) => c.handle(call).await,
                    // Dropping the call drops its reply: the router answers COORDINATOR_NOT_AVAILABLE.
                    None => drop::<GroupCall>(call),
                }
            }
            ShardRequest::Produce { .. } | ShardRequest::Shutdown { .. } => {
                unreachable!("handled in run")
            }
        }
    }

    fn produce(
        &self,
        acks: Acks,
        items: Vec<ProduceItem>,
        reply: Reply<Vec<Result<Appended, PartitionError>>>,
    ) {
        let mut results = Vec::with_capacity(items.len());
        let mut waits = Vec::with_capacity(items.len());
        for item in items {
            let appended = self.partition(&item.tp).and_then(|p| p.append(&item.records, acks, &self.arena));
            match appended {
                Ok((a, rx)) => {
                    results.push(Ok(a));
                    waits.push(Some(rx));
                }
                Err(e) => {
                    results.push(Err(e));
                    waits.push(None);
                }
            }
        }
        glommio::spawn_local(async move {
            for (result, wait) in results.iter_mut().zip(waits) {
                if let Some(rx) = wait {
                    match rx.await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => *result = Err(e),
                        Err(_) => *result = Err(PartitionError::Storage("partition stopped".into())),
                    }
                }
            }
            reply.send(results);
        })
        .detach();
    }

    async fn wait_for_data(&self, items: Vec<(TopicPartition, i64)>, deadline: Instant, reply: Reply<()>) {
        let (tx, rx) = oneshot::channel();
        let waiter = Rc::new(RefCell::new(Some(tx)));
        let mut waiting = true;
        for (tp, offset) in &items {
            match self.partition(tp) {
                Ok(p) if p.wait_for_data(*offset, &waiter) => {}
                // Data already there, or an error the fetch will report: answer now.
                _ => waiting = false,
            }
        }
        if waiting {
            let timeout = glommio::timer::sleep(deadline.saturating_duration_since(Instant::now()));
            let _ = select(rx, Box::pin(timeout)).await;
        }
        waiter.borrow_mut().take();
        reply.send(());
    }

    async fn open_partition(&self, tp: TopicPartition, config: LogConfig) -> Result<(), String> {
        if self.partitions.borrow().contains_key(&tp) {
            return Ok(());
        }
        let dir = self.data_dir.join(tp.dir_name());
        let (log, report) = PartitionLog::open(dir, config.clone()).await.map_err(|e| e.to_string())?;
        log.set_zero_ahead(self.zero_ahead_bytes);
        if let Some((bytes, why)) = &report.truncated {
            eprintln!("pinion: {tp}: recovery truncated {bytes} bytes ({why})");
        }
        if report.rebuilt_indexes > 0 {
            eprintln!("pinion: {tp}: rebuilt {} segment indexes", report.rebuilt_indexes);
        }
        let partition = Partition::start(tp.clone(), log, config, self.budget.clone());
        partition.restore_producers(&report.producer_batches);
        self.partitions.borrow_mut().insert(tp, partition);
        Ok(())
    }

    async fn delete_partition(&self, tp: &TopicPartition) {
        let removed = self.partitions.borrow_mut().remove(tp);
        let dir = self.data_dir.join(tp.dir_name());
        if let Some(p) = removed {
            p.abandon();
        }
        let result = glommio::executor()
            .spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err((dir, e)),
                _ => Ok(()),
            })
            .await;
        if let Err((dir, e)) = result {
            eprintln!("pinion: removing {}: {e}", dir.display());
        }
    }

    async fn shutdown(&self) {
        let groups = self.groups.borrow_mut().take();
        if let Some(c) = groups {
            c.close().await;
        }
        let partitions: Vec<Rc<Partition>> = self.partitions.borrow().values().cloned().collect();
        // Each close waits on a few syncs of its own; overlapping them keeps a shard with
        // thousands of partitions from taking thousands of sync round trips to stop.
        futures::stream::iter(partitions)
            .for_each_concurrent(CLOSING_AT_ONCE, |p| async move {
                if let Err(e) = p.close().await {
                    eprintln!("pinion: closing {}: {e}", p.tp);
                }
            })
            .await;
    }
}

/// How many partitions a stopping shard closes at once.
const CLOSING_AT_ONCE: usize = 64;

/// How often each partition's retention is checked (Kafka: log.retention.check.interval.ms).
const RETENTION_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

async fn retention_loop(shard: std::rc::Weak<Shard>) {
    loop {
        glommio::timer::sleep(RETENTION_CHECK).await;
        let Some(shard) = shard.upgrade() else { return };
        let now = crate::group::store::now_ms();
        let partitions: Vec<Rc<Partition>> = shard.partitions.borrow().values().cloned().collect();
        for p in partitions {
            match p.log.apply_retention(now).await {
                Ok(0) => {}
                Ok(n) => eprintln!(
                    "pinion: {}: retention deleted {n} segments, log starts at {}",
                    p.tp,
                    p.log.log_start_offset()
                ),
                Err(e) => eprintln!("pinion: {}: retention: {e}", p.tp),
            }
        }
    }
}

async fn list_offset(p: &Partition, timestamp: i64) -> Result<OffsetAndTimestamp, PartitionError> {
    let found = match timestamp {
        -2 => Some((p.log.log_start_offset(), -1)),
        -1 => Some((p.high_watermark(), -1)),
        -3 => p.log.max_timestamp().await.map_err(|e| PartitionError::Storage(e.to_string()))?,
        t => p.log.offset_for_timestamp(t).await.map_err(|e| PartitionError::Storage(e.to_string()))?,
    };
    let (offset, timestamp) = found.unwrap_or((-1, -1));
    Ok(OffsetAndTimestamp { offset, timestamp })
}

/// Where a shard keeps its partitions and how it treats them.
pub struct Storage {
    pub data_dir: PathBuf,
    /// Budget of the cache of recent batches.
    pub cache_bytes: usize,
    /// See `PartitionLog::set_zero_ahead`.
    pub zero_ahead_bytes: u64,
    /// The executor's I/O memory; disk reads out on loan may hold half of it (`log::read_buf`),
    /// and reads made ahead a quarter (`log::read_ahead`).
    pub io_memory_bytes: usize,
}

/// Serves one shard on the calling executor: its own, or the router's (`main` decides).
pub async fn serve(_id: ShardId, storage: Storage, requests: Inbox) {
    crate::log::read_buf::set_budget(storage.io_memory_bytes / 2);
    let shard = Shard::new(storage);
    shard.run(requests).await;
}
