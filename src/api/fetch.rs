//! Fetch (versions 4-16): long polling on the shards' high-watermark notifications, `max_bytes`
//! and per-partition limits with Kafka's at-least-one-batch rule, and a response that carries the
//! stored batches as they are (see `protocol::fetch_response`).

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::select_all;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::FetchRequest;

use super::Response;
use crate::protocol::errors::PartitionError;
use crate::protocol::fetch_response::{self, FetchOut, PartitionOut, TopicOut};
use crate::router::scatter;
use crate::router::Router;
use crate::shard::messages::{FetchItem, Fetched, ShardRequest, TopicPartition};
use crate::shard::ShardId;

/// Longest a fetch may wait, whatever the client asks.
const MAX_WAIT_MS_MAX: i32 = 30_000;

struct Wanted {
    topic: usize,
    tp: TopicPartition,
    shard: ShardId,
    offset: i64,
    max_bytes: usize,
}

pub async fn handle(
    router: &Rc<Router>,
    connection: u64,
    correlation_id: i32,
    version: i16,
    req: FetchRequest,
) -> Response {
    let mut topics = Vec::with_capacity(req.topics.len());
    let mut wanted = Vec::new();
    // Partitions that cannot be fetched, answered with an error right away.
    let mut refused: Vec<(usize, i32, i16)> = Vec::new();
    for (ti, topic) in req.topics.into_iter().enumerate() {
        let name = if version >= 13 {
            router.metadata.borrow().topic_by_id(topic.topic_id).map(|(n, _)| n.clone())
        } else {
            Some(topic.topic.to_string())
        };
        // One shared name for all of the topic's partitions, not one allocation each.
        let shared: Option<Arc<str>> = name.as_deref().map(Arc::from);
        topics.push(TopicOut {
            name: name.unwrap_or_default(),
            topic_id: topic.topic_id,
            partitions: Vec::with_capacity(topic.partitions.len()),
        });
        for p in topic.partitions {
            let shard = shared.as_deref().and_then(|n| router.shard_of(n, p.partition));
            match (&shared, shard) {
                (Some(n), Some(shard)) => wanted.push(Wanted {
                    topic: ti,
                    tp: TopicPartition::new(n.clone(), p.partition),
                    shard,
                    offset: p.fetch_offset,
                    max_bytes: p.partition_max_bytes.max(0) as usize,
                }),
                (None, _) => refused.push((ti, p.partition, ResponseError::UnknownTopicId.code())),
                (Some(_), None) => {
                    refused.push((ti, p.partition, ResponseError::UnknownTopicOrPartition.code()))
                }
            }
        }
    }
    let wait = Duration::from_millis(req.max_wait_ms.clamp(0, MAX_WAIT_MS_MAX) as u64);
    let deadline = Instant::now() + wait;
    let min_bytes = req.min_bytes.max(0) as usize;
    let max_bytes = req.max_bytes.max(0) as usize;
    let results = loop {
        let items: Vec<(ShardId, FetchItem)> = wanted
            .iter()
            .map(|w| (w.shard, FetchItem { tp: w.tp.clone(), offset: w.offset, max_bytes: w.max_bytes }))
            .collect();
        let results = scatter::ask(router, items, |items, reply| ShardRequest::Fetch {
            items,
            max_bytes,
            connection,
            reply,
        })
        .await;
        let bytes: usize = results.iter().flatten().flatten().map(Fetched::bytes).sum();
        let any_error = results.iter().any(|r| !matches!(r, Some(Ok(_))));
        // Data left for the next fetch is there to be had: no reason to wait for more.
        let deferred = results.iter().flatten().flatten().any(|f| f.deferred);
        if bytes >= min_bytes.max(1)
            || any_error
            || deferred
            || wanted.is_empty()
            || Instant::now() >= deadline
        {
            break results;
        }
        if bytes > 0 && min_bytes <= 1 {
            break results;
        }
        wait_for_data(router, &wanted, &results, deadline).await;
        if Instant::now() >= deadline {
            // One last look, so data that arrived with the deadline is not left behind.
            continue;
        }
    };
    let mut budget = max_bytes;
    let mut first_data = true;
    for (w, result) in wanted.iter().zip(results) {
        let out = match result {
            Some(Ok(mut f)) => {
                limit(&mut f, &mut budget, &mut first_data);
                PartitionOut {
                    partition_index: w.tp.partition,
                    error_code: 0,
                    high_watermark: f.high_watermark,
                    log_start_offset: f.log_start_offset,
                    batches: f.batches,
                }
            }
            Some(Err(e)) => error_partition(w.tp.partition, &e),
            None => PartitionOut {
                partition_index: w.tp.partition,
                error_code: ResponseError::NotLeaderOrFollower.code(),
                high_watermark: -1,
                log_start_offset: -1,
                batches: Vec::new(),
            },
        };
        topics[w.topic].partitions.push(out);
    }
    for (ti, partition, code) in refused {
        topics[ti].partitions.push(PartitionOut {
            partition_index: partition,
            error_code: code,
            high_watermark: -1,
            log_start_offset: -1,
            batches: Vec::new(),
        });
    }
    let response = FetchOut { error_code: 0, session_id: 0, topics };
    fetch_response::encode(correlation_id, version, &response)
}

fn error_partition(partition: i32, e: &PartitionError) -> PartitionOut {
    let (hwm, start) = match e {
        PartitionError::OffsetOutOfRange { log_start, log_end, .. } => (*log_end, *log_start),
        _ => (-1, -1),
    };
    PartitionOut {
        partition_index: partition,
        error_code: e.code(),
        high_watermark: hwm,
        log_start_offset: start,
        batches: Vec::new(),
    }
}

/// Applies the response-wide `max_bytes`: batches stop once it is used up, except that the first
/// partition with data always gets its first batch, so a large batch can never block a consumer.
fn limit(f: &mut Fetched, budget: &mut usize, first_data: &mut bool) {
    let mut keep = 0;
    for b in &f.batches {
        if b.len() > *budget && !(*first_data && keep == 0) {
            break;
        }
        *budget = budget.saturating_sub(b.len());
        keep += 1;
    }
    f.batches.truncate(keep);
    if keep > 0 {
        *first_data = false;
    }
}

/// Waits until any wanted partition's high watermark moves past what was just seen, or until
/// `deadline`. Each shard answers for its own partitions; the first answer ends the wait.
async fn wait_for_data(
    router: &Router,
    wanted: &[Wanted],
    results: &[Option<Result<Fetched, PartitionError>>],
    deadline: Instant,
) {
    let mut per_shard: Vec<Vec<(TopicPartition, i64)>> = vec![Vec::new(); router.shard_count()];
    for (w, r) in wanted.iter().zip(results) {
        let seen = match r {
            Some(Ok(f)) => f.high_watermark,
            _ => w.offset,
        };
        if let Some(list) = per_shard.get_mut(w.shard.0) {
            list.push((w.tp.clone(), seen));
        }
    }
    let mut waits = Vec::new();
    for (shard, items) in per_shard.into_iter().enumerate() {
        if items.is_empty() {
            continue;
        }
        if let Ok(rx) =
            router.send(ShardId(shard), |reply| ShardRequest::WaitForData { items, deadline, reply }).await
        {
            waits.push(rx);
        }
    }
    if !waits.is_empty() {
        let _ = select_all(waits).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::Chunk;
    use bytes::Bytes;

    fn fetched(sizes: &[usize]) -> Fetched {
        Fetched {
            high_watermark: 0,
            log_start_offset: 0,
            batches: sizes.iter().map(|&n| Chunk::stored(Bytes::from(vec![0; n]))).collect(),
            deferred: false,
        }
    }

    #[test]
    fn max_bytes_keeps_the_first_batch_even_when_too_large() {
        let (mut budget, mut first) = (100, true);
        let mut a = fetched(&[150, 10]);
        limit(&mut a, &mut budget, &mut first);
        assert_eq!(a.batches.len(), 1);
        let mut b = fetched(&[10]);
        limit(&mut b, &mut budget, &mut first);
        assert_eq!(b.batches.len(), 0, "budget used up by the first partition");
    }

    #[test]
    fn max_bytes_counts_across_partitions() {
        let (mut budget, mut first) = (100, true);
        let mut a = fetched(&[40, 40]);
        limit(&mut a, &mut budget, &mut first);
        let mut b = fetched(&[30, 10]);
        limit(&mut b, &mut budget, &mut first);
        assert_eq!((a.batches.len(), b.batches.len(), budget), (2, 0, 20));
    }
}
