//! ListOffsets (versions 1-10): earliest (-2), latest (-1), max timestamp (-3), and lookup by
//! timestamp. The tiered-storage variants (-4 earliest local, -5 latest tiered) mean earliest and
//! latest here, since every segment is local.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use crate::router::scatter;
use crate::router::Router;
use crate::shard::messages::{ShardRequest, TopicPartition};

pub async fn handle(router: &Router, version: i16, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let mut items = Vec::new();
    let mut layout = Vec::new();
    for topic in &req.topics {
        let mut parts = Vec::new();
        for p in &topic.partitions {
            let timestamp = match p.timestamp {
                -4 => -2,
                -5 => -1,
                t => t,
            };
            match router.shard_of(&topic.name, p.partition_index) {
                Some(shard) => {
                    items.push((
                        shard,
                        (TopicPartition::new(topic.name.as_str(), p.partition_index), timestamp),
                    ));
                    parts.push((p.partition_index, Some(items.len() - 1)));
                }
                None => parts.push((p.partition_index, None)),
            }
        }
        layout.push((topic.name.clone(), parts));
    }
    let results =
        scatter::ask(router, items, |items, reply| ShardRequest::ListOffsets { items, reply }).await;
    let topics = layout
        .into_iter()
        .map(|(name, parts)| {
            let partitions = parts
                .into_iter()
                .map(|(index, slot)| {
                    let mut r = ListOffsetsPartitionResponse::default().with_partition_index(index);
                    if version >= 4 {
                        r = r.with_leader_epoch(0);
                    }
                    match slot.and_then(|s| results[s].clone()) {
                        Some(Ok(found)) => r.with_offset(found.offset).with_timestamp(found.timestamp),
                        Some(Err(e)) => r.with_error_code(e.code()).with_offset(-1).with_timestamp(-1),
                        None => r
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                            .with_offset(-1)
                            .with_timestamp(-1),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default().with_name(name).with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}
