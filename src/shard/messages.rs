//! What the router asks of a shard, and what it answers. Everything here crosses cores, so it is
//! `Send`: `Bytes`, `Arc<str>`, plain structs, and a oneshot for the reply.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::channel::oneshot;
use glommio::channels::shared_channel::ConnectedSender;

use crate::metadata::configs::LogConfig;
use crate::protocol::batch::Chunk;
use crate::protocol::errors::PartitionError;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicPartition {
    pub topic: Arc<str>,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<Arc<str>>, partition: i32) -> Self {
        TopicPartition { topic: topic.into(), partition }
    }

    /// `<topic>-<partition>`, the partition's directory name.
    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.topic, self.partition)
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// acks=0: no response at all.
    None,
    /// acks=1: answered once the write has completed.
    Leader,
    /// acks=all (-1): answered once an fdatasync covers the batch.
    All,
}

impl Acks {
    pub fn from_wire(acks: i16) -> Option<Acks> {
        match acks {
            0 => Some(Acks::None),
            1 => Some(Acks::Leader),
            -1 => Some(Acks::All),
            _ => None,
        }
    }
}

pub struct ProduceItem {
    pub tp: TopicPartition,
    pub records: Bytes,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Appended {
    pub base_offset: i64,
    pub log_start_offset: i64,
    /// -1 unless the topic uses LogAppendTime.
    pub log_append_time_ms: i64,
}

pub struct FetchItem {
    pub tp: TopicPartition,
    pub offset: i64,
    pub max_bytes: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Fetched {
    pub high_watermark: i64,
    pub log_start_offset: i64,
    /// The batches, from the cache or the log; the first holds the fetch offset.
    pub batches: Vec<Chunk>,
    /// The partition has data at the offset, left for a later fetch: this one read as much from
    /// disk as the shard lets one fetch read (`log::read_ahead::FetchReads`).
    pub deferred: bool,
}

impl Fetched {
    pub fn bytes(&self) -> usize {
        self.batches.iter().map(|b| b.len()).sum()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetAndTimestamp {
    pub offset: i64,
    pub timestamp: i64,
}

/// Work to run on the router's thread: completing (or dropping) a reply.
pub type Completion = Box<dyn FnOnce() + Send>;

thread_local! {
    /// On a shard thread: the channel that carries completions back to the router.
    static COMPLETIONS: std::cell::RefCell<Option<std::rc::Rc<ConnectedSender<Completion>>>> =
        const { std::cell::RefCell::new(None) };
}

/// Makes this thread ship every `Reply` it completes or drops to the router through `sender`.
pub fn ship_replies_through(sender: ConnectedSender<Completion>) {
    COMPLETIONS.with(|c| *c.borrow_mut() = Some(std::rc::Rc::new(sender)));
}

/// The answer to a request from the router. A shard never completes it on its own thread:
/// completing or dropping a oneshot wakes the router task waiting on it, and glommio's path for
/// waking a task from a foreign thread races with that task's teardown (a double free was seen
/// under load). So the completion travels back on a glommio channel, which notifies the router's
/// executor safely, and runs there.
pub struct Reply<T: Send + 'static> {
    tx: Option<oneshot::Sender<T>>,
}

impl<T: Send + 'static> Reply<T> {
    pub fn new(tx: oneshot::Sender<T>) -> Reply<T> {
        Reply { tx: Some(tx) }
    }

    pub fn send(mut self, value: T) {
        if let Some(tx) = self.tx.take() {
            ship(Box::new(move || {
                let _ = tx.send(value);
            }));
        }
    }
}

impl<T: Send + 'static> Drop for Reply<T> {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            ship(Box::new(move || drop(tx)));
        }
    }
}

fn ship(completion: Completion) {
    let sender = COMPLETIONS.with(|c| c.borrow().clone());
    match sender {
        // The router's own thread (a shard running inside the router, or the router itself),
        // or a test: the waiting task is local, so complete here.
        None => completion(),
        Some(sender) => match sender.try_send(completion) {
            Ok(()) => {}
            Err(glommio::GlommioError::WouldBlock(glommio::ResourceType::Channel(completion))) => {
                glommio::spawn_local(async move {
                    let _ = sender.send(completion).await;
                })
                .detach();
            }
            // The router is gone: nobody waits for the answer any more.
            Err(_) => {}
        },
    }
}

pub enum ShardRequest {
    Produce {
        acks: Acks,
        items: Vec<ProduceItem>,
        reply: Reply<Vec<Result<Appended, PartitionError>>>,
    },
    Fetch {
        items: Vec<FetchItem>,
        /// The fetch's `max_bytes`: what the shard reads from disk for it, bar the first read,
        /// stays within this and within the fetch's share of the read memory (reads made ahead
        /// for it are taken whole).
        max_bytes: usize,
        /// The connection the fetch came on: consumers reading from disk share the shard's
        /// read memory (`log::read_ahead`).
        connection: u64,
        reply: Reply<Vec<Result<Fetched, PartitionError>>>,
    },
    /// Answered as soon as any partition's high watermark passes its offset, or at `deadline`.
    WaitForData {
        items: Vec<(TopicPartition, i64)>,
        deadline: Instant,
        reply: Reply<()>,
    },
    /// Timestamps as in ListOffsets: -2 earliest, -1 latest, -3 max timestamp, else a time.
    ListOffsets {
        items: Vec<(TopicPartition, i64)>,
        reply: Reply<Vec<Result<OffsetAndTimestamp, PartitionError>>>,
    },
    /// Opens (creating or recovering) partition logs. With `fresh`, the partitions are new and
    /// whatever a crash left in their directories (a deleted topic of the same name) goes first.
    OpenPartitions {
        fresh: bool,
        items: Vec<(TopicPartition, LogConfig)>,
        reply: Reply<Vec<Result<(), String>>>,
    },
    /// Stops partitions and removes their data.
    DeletePartitions {
        items: Vec<TopicPartition>,
        reply: Reply<()>,
    },
    SetConfig {
        topic: Arc<str>,
        config: LogConfig,
    },
    /// Starts the group coordinator for the `__consumer_offsets` partitions this shard owns.
    OpenGroups {
        owned: Vec<usize>,
        total: usize,
        limits: crate::group::state::Limits,
        retention_ms: u64,
        segment_bytes: u64,
        reply: Reply<Result<(), String>>,
    },
    /// A consumer-group request for a group this shard coordinates.
    Group(crate::group::GroupCall),
    /// Flush, sync and seal every partition, then stop.
    Shutdown {
        reply: Reply<()>,
    },
}
