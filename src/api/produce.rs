//! Produce (versions 3-13; 13 names topics by id): acks 0, 1 and all. Each partition's records go to its shard as they
//! came, the shard validates and appends them, and the answer waits for the acks asked for.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

use crate::protocol::errors::PartitionError;
use crate::router::scatter::{self, Gather};
use crate::router::Router;
use crate::shard::messages::{Acks, Appended, ProduceItem, ShardRequest, TopicPartition};

/// Partitions of one topic in request order: index, and the slot of its shard answer or the
/// error code it got without reaching a shard.
type TopicLayout = (kafka_protocol::messages::TopicName, uuid::Uuid, Vec<(i32, Result<usize, i16>)>);

/// A produce request whose batches are on their shards, awaiting acknowledgement.
pub struct Pending {
    /// Topic names with their partitions, in request order; `Err` for partitions that never
    /// reached a shard.
    layout: Vec<TopicLayout>,
    gather: Gather<Result<Appended, PartitionError>>,
}

/// Sends every partition's records to its shard.
pub async fn send(router: &Router, version: i16, req: ProduceRequest) -> Pending {
    let acks = Acks::from_wire(req.acks);
    let mut items = Vec::new();
    let mut layout = Vec::with_capacity(req.topic_data.len());
    for topic in req.topic_data {
        let resolved = if version >= 13 {
            router.metadata.borrow().topic_by_id(topic.topic_id).map(|(n, _)| n.clone())
        } else {
            Some(topic.name.to_string())
        };
        let name: std::sync::Arc<str> = std::sync::Arc::from(resolved.clone().unwrap_or_default().as_str());
        let mut parts = Vec::with_capacity(topic.partition_data.len());
        for p in topic.partition_data {
            let slot = match (acks, router.shard_of(&name, p.index), p.records) {
                (None, _, _) => Err(ResponseError::InvalidRequiredAcks.code()),
                (_, None, _) if resolved.is_none() => Err(ResponseError::UnknownTopicId.code()),
                (_, None, _) => Err(ResponseError::UnknownTopicOrPartition.code()),
                (_, _, None) => Err(ResponseError::CorruptMessage.code()),
                (Some(_), Some(shard), Some(records)) => {
                    items.push((
                        shard,
                        ProduceItem { tp: TopicPartition::new(name.clone(), p.index), records },
                    ));
                    Ok(items.len() - 1)
                }
            };
            parts.push((p.index, slot));
        }
        layout.push((topic.name, topic.topic_id, parts));
    }
    let acks = acks.unwrap_or(Acks::All);
    let gather =
        scatter::send(router, items, |items, reply| ShardRequest::Produce { acks, items, reply }).await;
    Pending { layout, gather }
}

impl Pending {
    pub async fn finish(self) -> ProduceResponse {
        let results = self.gather.collect().await;
        let responses = self
            .layout
            .into_iter()
            .map(|(name, topic_id, parts)| {
                let partition_responses = parts
                    .into_iter()
                    .map(|(index, slot)| {
                        let r = PartitionProduceResponse::default().with_index(index);
                        let outcome = slot.map(|s| results.get(s).cloned().flatten());
                        match outcome {
                            Ok(Some(Ok(a))) => r
                                .with_base_offset(a.base_offset)
                                .with_log_append_time_ms(a.log_append_time_ms)
                                .with_log_start_offset(a.log_start_offset),
                            Ok(Some(Err(e))) => r
                                .with_error_code(e.code())
                                .with_base_offset(-1)
                                .with_log_start_offset(-1)
                                .with_error_message(Some(StrBytes::from_string(e.to_string()))),
                            Ok(None) => r
                                .with_error_code(ResponseError::NotLeaderOrFollower.code())
                                .with_base_offset(-1),
                            Err(code) => {
                                r.with_error_code(code).with_base_offset(-1).with_log_start_offset(-1)
                            }
                        }
                    })
                    .collect();
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_topic_id(topic_id)
                    .with_partition_responses(partition_responses)
            })
            .collect();
        ProduceResponse::default().with_responses(responses)
    }
}
