//! The router: accepts connections, frames requests, dispatches them to the API handlers, and
//! owns the topic metadata. It knows nothing of files; partitions live on the shards.

pub mod connection;
pub mod scatter;
pub mod write;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use glommio::net::TcpListener;

use crate::config::ServeConfig;
use crate::metadata::configs::LogConfig;
use crate::metadata::{self, Metadata, Topic};
use crate::shard::link::ShardLink;
use crate::shard::messages::{Reply, ShardRequest, TopicPartition};
use crate::shard::ShardId;

/// How long a graceful stop waits for in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Router {
    pub config: ServeConfig,
    /// Host and port clients are told to connect to.
    pub advertised: (String, i32),
    shards: Vec<ShardLink>,
    pub metadata: RefCell<Metadata>,
    /// One metadata save at a time (`save_metadata`).
    metadata_saves: glommio::sync::Semaphore,
    /// Requests accepted but not yet answered, across connections.
    pub in_flight: Cell<usize>,
    pub stopping: Cell<bool>,
    /// Connections accepted so far: each is numbered by it.
    pub connections: Cell<u64>,
}

#[derive(Debug, thiserror::Error)]
#[error("shard {0} is not running")]
pub struct ShardGone(pub usize);

impl Router {
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Sends a request to a shard and waits for its reply.
    pub async fn ask<T: Send + 'static>(
        &self,
        shard: ShardId,
        make: impl FnOnce(Reply<T>) -> ShardRequest,
    ) -> Result<T, ShardGone> {
        let rx = self.send(shard, make).await?;
        rx.await.map_err(|_| ShardGone(shard.0))
    }

    /// Sends a request to a shard; the reply comes on the returned receiver.
    pub async fn send<T: Send + 'static>(
        &self,
        shard: ShardId,
        make: impl FnOnce(Reply<T>) -> ShardRequest,
    ) -> Result<oneshot::Receiver<T>, ShardGone> {
        let (tx, rx) = oneshot::channel();
        let sender = self.shards.get(shard.0).ok_or(ShardGone(shard.0))?;
        sender.send(make(Reply::new(tx))).await.map_err(|_| ShardGone(shard.0))?;
        Ok(rx)
    }

    /// Sends a request that carries its own reply channel (or needs none).
    pub async fn post(&self, shard: ShardId, request: ShardRequest) -> Result<(), ShardGone> {
        let sender = self.shards.get(shard.0).ok_or(ShardGone(shard.0))?;
        sender.send(request).await.map_err(|_| ShardGone(shard.0))
    }

    /// The shard that owns a partition, if the topic and partition exist.
    pub fn shard_of(&self, topic: &str, partition: i32) -> Option<ShardId> {
        let meta = self.metadata.borrow();
        let t = meta.topics.get(topic)?;
        usize::try_from(partition).ok().and_then(|p| t.partition_shards.get(p)).map(|&s| ShardId(s))
    }

    pub fn log_config(&self, topic: &Topic) -> LogConfig {
        LogConfig::resolve(&topic.configs, &self.config.broker)
    }

    /// Makes the metadata, as it is when its turn comes, durable. The file is written on the
    /// executor's blocking thread (write, fsync, rename, fsync the directory: about a
    /// millisecond here), not on the router's, which serves every connection. Saves take turns
    /// and each encodes the metadata only once its turn has come, so the file always ends with
    /// the newest state.
    pub async fn save_metadata(&self) -> Result<(), String> {
        let _turn = self.metadata_saves.acquire_permit(1).await.map_err(|e| e.to_string())?;
        let snapshot = self.metadata.borrow().snapshot().map_err(|e| e.to_string())?;
        let snapshot = glommio::executor()
            .spawn_blocking(move || snapshot.write().map(|()| snapshot))
            .await
            .map_err(|e| e.to_string())?;
        self.metadata.borrow_mut().saved(&snapshot);
        Ok(())
    }

    /// Puts a topic's metadata back as it was before a change that failed (`None`: it did not
    /// exist), in memory and on disk, where a save made meanwhile may have written the change.
    pub async fn restore_topic(&self, name: &str, before: Option<Topic>) {
        {
            let mut meta = self.metadata.borrow_mut();
            match before {
                Some(topic) => meta.topics.insert(name.to_string(), topic),
                None => meta.topics.remove(name),
            };
        }
        if let Err(e) = self.save_metadata().await {
            eprintln!("pinion: the metadata on disk may keep a failed change to {name}: {e}");
        }
    }

    /// Records a new topic (or new partitions of one) and opens the partitions on their shards.
    /// The metadata is made durable first, so a crash never leaves data without a topic. If a
    /// partition cannot be opened (the process out of open files, say), the partitions opened
    /// here are closed and removed again, after the topic is put back as it was, in memory and
    /// on disk: a topic never goes on naming partitions that did not open, and the open error
    /// is the one returned.
    pub async fn add_partitions(&self, name: &str, topic: Topic, first_new: usize) -> Result<(), String> {
        let config = self.log_config(&topic);
        let shards = topic.partition_shards.clone();
        let before = self.metadata.borrow_mut().topics.insert(name.to_string(), topic);
        if let Err(e) = self.save_metadata().await {
            self.restore_topic(name, before).await;
            return Err(e);
        }
        let topic_name: Arc<str> = Arc::from(name);
        let opened = self.open_partitions(&topic_name, &shards, first_new, &config, true).await;
        if opened.is_err() {
            self.restore_topic(name, before).await;
            if let Err(e) = self.delete_partitions(&topic_name, &shards, first_new).await {
                eprintln!("pinion: removing the partitions of {name} that failed to open: {e}");
            }
        }
        opened
    }

    async fn open_partitions(
        &self,
        topic: &Arc<str>,
        shards: &[usize],
        first: usize,
        config: &LogConfig,
        fresh: bool,
    ) -> Result<(), String> {
        for shard in 0..self.shards.len() {
            let items: Vec<(TopicPartition, LogConfig)> =
                partitions_on(topic, shards, first, shard).map(|tp| (tp, config.clone())).collect();
            if items.is_empty() {
                continue;
            }
            let results = self
                .ask(ShardId(shard), |reply| ShardRequest::OpenPartitions { fresh, items, reply })
                .await
                .map_err(|e| e.to_string())?;
            if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Creates a topic with default placement.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: usize,
        configs: std::collections::BTreeMap<String, String>,
    ) -> Result<(), String> {
        let placement = {
            let meta = self.metadata.borrow();
            metadata::place(&meta.shard_loads(self.shards.len()), partitions)
        };
        let topic = Topic {
            id: uuid::Uuid::new_v4(),
            partition_shards: placement.into_iter().map(|s| s.0).collect(),
            configs,
        };
        self.add_partitions(name, topic, 0).await
    }

    /// Removes a topic from the metadata (durably), then its partitions and their data.
    pub async fn delete_topic(&self, name: &str) -> Result<(), String> {
        let topic =
            self.metadata.borrow_mut().topics.remove(name).ok_or_else(|| format!("unknown topic {name}"))?;
        if let Err(e) = self.save_metadata().await {
            self.restore_topic(name, Some(topic)).await;
            return Err(e);
        }
        let topic_name: Arc<str> = Arc::from(name);
        self.delete_partitions(&topic_name, &topic.partition_shards, 0).await?;
        for shard in 0..self.shards.len() {
            // Committed offsets of the topic go with it, as in Kafka.
            let call = crate::group::GroupCall::DropTopic { topic: name.to_string() };
            self.post(ShardId(shard), ShardRequest::Group(call)).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Closes a topic's partitions from `first` on and deletes their data.
    async fn delete_partitions(
        &self,
        topic: &Arc<str>,
        shards: &[usize],
        first: usize,
    ) -> Result<(), String> {
        for shard in 0..self.shards.len() {
            let items: Vec<TopicPartition> = partitions_on(topic, shards, first, shard).collect();
            if !items.is_empty() {
                self.ask(ShardId(shard), |reply| ShardRequest::DeletePartitions { items, reply })
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    /// Starts each shard's group coordinator on the offsets partitions it owns.
    async fn open_groups(&self) -> Result<(), String> {
        let broker = &self.config.broker;
        let placement = {
            let mut meta = self.metadata.borrow_mut();
            meta.ensure_offsets_partitions(broker.offsets_topic_partitions(), self.shards.len())
                .map_err(|e| e.to_string())?;
            meta.offsets_partitions.clone()
        };
        for shard in 0..self.shards.len() {
            let owned: Vec<usize> = (0..placement.len()).filter(|&p| placement[p] == shard).collect();
            let (total, limits, retention_ms) =
                (placement.len(), broker.group_limits(), broker.offsets_retention_ms());
            let segment_bytes = broker.offsets_segment_bytes();
            self.ask(ShardId(shard), |reply| ShardRequest::OpenGroups {
                owned,
                total,
                limits,
                retention_ms,
                segment_bytes,
                reply,
            })
            .await
            .map_err(|e| e.to_string())??;
        }
        Ok(())
    }

    /// The shard that coordinates a group.
    pub fn group_shard(&self, group_id: &str) -> ShardId {
        let meta = self.metadata.borrow();
        let partition = crate::group::offsets_partition(group_id, meta.offsets_partitions.len());
        ShardId(meta.offsets_partitions.get(partition).copied().unwrap_or(0))
    }

    /// Tells the shards about a topic's new configs.
    pub async fn push_config(&self, name: &str) -> Result<(), ShardGone> {
        let config = match self.metadata.borrow().topics.get(name) {
            Some(t) => self.log_config(t),
            None => return Ok(()),
        };
        let topic: Arc<str> = Arc::from(name);
        for (i, sender) in self.shards.iter().enumerate() {
            let msg = ShardRequest::SetConfig { topic: topic.clone(), config: config.clone() };
            sender.send(msg).await.map_err(|_| ShardGone(i))?;
        }
        Ok(())
    }
}

/// Runs the router until `stop` is set: opens every recorded partition on its shard, then
/// accepts connections. On stop: no new connections, in-flight requests finish, shards seal
/// their logs.
pub async fn run(config: ServeConfig, shards: Vec<ShardLink>, stop: Arc<AtomicBool>) -> Result<(), String> {
    let metadata = Metadata::load(&config.data_dir, shards.len()).map_err(|e| e.to_string())?;
    let listener =
        TcpListener::bind(config.listen).map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let advertised =
        config.advertised.clone().unwrap_or_else(|| (bound.ip().to_string(), i32::from(bound.port())));
    let router = Rc::new(Router {
        config,
        advertised,
        shards,
        metadata: RefCell::new(metadata),
        metadata_saves: glommio::sync::Semaphore::new(1),
        in_flight: Cell::new(0),
        stopping: Cell::new(false),
        connections: Cell::new(0),
    });
    let started = Instant::now();
    let topics: Vec<(String, Topic)> =
        router.metadata.borrow().topics.iter().map(|(n, t)| (n.clone(), t.clone())).collect();
    for (name, topic) in &topics {
        let config = router.log_config(topic);
        router.open_partitions(&Arc::from(name.as_str()), &topic.partition_shards, 0, &config, false).await?;
    }
    router.open_groups().await?;
    if !topics.is_empty() {
        eprintln!("pinion: opened {} topics in {} ms", topics.len(), started.elapsed().as_millis());
    }
    println!("pinion: listening on {bound}");
    use std::io::Write;
    let _ = std::io::stdout().flush();

    let acceptor = glommio::spawn_local(accept_loop(router.clone(), listener));
    while !stop.load(Ordering::Relaxed) {
        glommio::timer::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("pinion: stopping");
    router.stopping.set(true);
    drop(acceptor); // cancels the accept loop: no new connections
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while router.in_flight.get() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    for shard in 0..router.shard_count() {
        if let Err(e) = router.ask(ShardId(shard), |reply| ShardRequest::Shutdown { reply }).await {
            eprintln!("pinion: {e}");
        }
    }
    eprintln!("pinion: stopped");
    Ok(())
}

async fn accept_loop(router: Rc<Router>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                glommio::spawn_local(connection::serve(router.clone(), stream)).detach();
            }
            Err(e) => {
                // Out of descriptors and the like: say so, back off, keep serving the others.
                eprintln!("pinion: accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A topic's partitions from `first` on that live on `shard` (`shards` gives each partition's).
fn partitions_on<'a>(
    topic: &'a Arc<str>,
    shards: &'a [usize],
    first: usize,
    shard: usize,
) -> impl Iterator<Item = TopicPartition> + 'a {
    shards
        .iter()
        .enumerate()
        .skip(first)
        .filter(move |(_, &s)| s == shard)
        .map(|(p, _)| TopicPartition::new(topic.clone(), p as i32))
}
