//! Splitting a request's partitions by shard and putting the answers back in request order.

use futures::channel::oneshot;

use super::Router;
use crate::shard::messages::{Reply, ShardRequest};
use crate::shard::ShardId;

/// The slots of one shard's items, and the receiver of that shard's answers.
type ShardWait<R> = (Vec<usize>, Option<oneshot::Receiver<Vec<R>>>);

/// Answers on their way back from the shards, each to be put at its slot.
pub struct Gather<R> {
    slots: usize,
    waiting: Vec<ShardWait<R>>,
}

/// Sends `items` (each tagged with its shard) in one message per shard, built by `make`.
pub async fn send<I, R: Send + 'static>(
    router: &Router,
    items: Vec<(ShardId, I)>,
    make: impl Fn(Vec<I>, Reply<Vec<R>>) -> ShardRequest,
) -> Gather<R> {
    let slots = items.len();
    let mut per_shard: Vec<(Vec<usize>, Vec<I>)> =
        (0..router.shard_count()).map(|_| (Vec::new(), Vec::new())).collect();
    for (slot, (shard, item)) in items.into_iter().enumerate() {
        if let Some((s, i)) = per_shard.get_mut(shard.0) {
            s.push(slot);
            i.push(item);
        }
    }
    let mut waiting = Vec::new();
    for (shard, (slot_list, shard_items)) in per_shard.into_iter().enumerate() {
        if shard_items.is_empty() {
            continue;
        }
        let rx = router.send(ShardId(shard), |reply| make(shard_items, reply)).await.ok();
        waiting.push((slot_list, rx));
    }
    Gather { slots, waiting }
}

impl<R> Gather<R> {
    /// Every answer in the order the items were given; `None` where a shard did not answer.
    pub async fn collect(self) -> Vec<Option<R>> {
        let mut out: Vec<Option<R>> = (0..self.slots).map(|_| None).collect();
        for (slots, rx) in self.waiting {
            let Some(rx) = rx else { continue };
            if let Ok(answers) = rx.await {
                for (slot, answer) in slots.into_iter().zip(answers) {
                    out[slot] = Some(answer);
                }
            }
        }
        out
    }
}

/// Sends and waits.
pub async fn ask<I, R: Send + 'static>(
    router: &Router,
    items: Vec<(ShardId, I)>,
    make: impl Fn(Vec<I>, Reply<Vec<R>>) -> ShardRequest,
) -> Vec<Option<R>> {
    send(router, items, make).await.collect().await
}
