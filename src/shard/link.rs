//! The channel between the router and one shard. A shard on a CPU of its own runs its own
//! executor, and the router reaches it through a glommio shared channel: each request and each
//! reply wakes the other thread through the kernel. A shard placed on the router's CPU runs as
//! tasks of the router's executor instead, reached through a local channel: no thread to wake,
//! no second executor parking and waking on the same CPU.

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::channels::shared_channel::{ConnectedReceiver, ConnectedSender};

use super::messages::ShardRequest;

/// Requests queued from the router to one shard before senders wait.
pub const QUEUE_DEPTH: usize = 1024;

/// The router's end.
pub enum ShardLink {
    Remote(ConnectedSender<ShardRequest>),
    Local(LocalSender<ShardRequest>),
}

/// The shard's end.
pub enum Inbox {
    Remote(ConnectedReceiver<ShardRequest>),
    Local(LocalReceiver<ShardRequest>),
}

/// The shard has stopped and takes no more requests.
#[derive(Debug)]
pub struct Closed;

/// A link to a shard that will run on the calling thread's executor.
pub fn local() -> (ShardLink, Inbox) {
    let (tx, rx) = local_channel::new_bounded(QUEUE_DEPTH);
    (ShardLink::Local(tx), Inbox::Local(rx))
}

impl ShardLink {
    /// Queues a request, waiting while the shard's queue is full.
    pub async fn send(&self, request: ShardRequest) -> Result<(), Closed> {
        match self {
            ShardLink::Remote(tx) => tx.send(request).await.map_err(|_| Closed),
            ShardLink::Local(tx) => tx.send(request).await.map_err(|_| Closed),
        }
    }
}

impl Inbox {
    /// The next request; `None` once the router has gone.
    pub async fn recv(&self) -> Option<ShardRequest> {
        match self {
            Inbox::Remote(rx) => rx.recv().await,
            Inbox::Local(rx) => rx.recv().await,
        }
    }
}
