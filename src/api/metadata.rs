//! Metadata (versions 0-13, with auto-creation of unknown topics) and DescribeCluster (0-2).

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use crate::metadata::{validate_topic_name, Topic};
use crate::router::Router;

/// "Authorized operations not requested" in Kafka's encoding.
const OPERATIONS_OMITTED: i32 = i32::MIN;

pub async fn handle(router: &Router, version: i16, req: MetadataRequest) -> MetadataResponse {
    let node = router.config.node_id;
    let (host, port) = router.advertised.clone();
    let mut response = MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(node))
            .with_host(StrBytes::from_string(host))
            .with_port(port)])
        .with_cluster_id(Some(StrBytes::from_string(router.metadata.borrow().cluster_id.clone())))
        .with_controller_id(BrokerId(node))
        .with_cluster_authorized_operations(OPERATIONS_OMITTED);
    // v0 asks for every topic with an empty list; later versions use null for that.
    let requested: Option<Vec<(Option<String>, Uuid)>> = match req.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(t.into_iter().map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id)).collect()),
    };
    let auto_create = req.allow_auto_topic_creation || version < 4;
    let topics = match requested {
        None => {
            let meta = router.metadata.borrow();
            meta.topics.iter().map(|(name, t)| describe_topic(node, name, t)).collect()
        }
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for (name, id) in list {
                out.push(requested_topic(router, node, name, id, auto_create).await);
            }
            out
        }
    };
    response.topics = topics;
    response
}

async fn requested_topic(
    router: &Router,
    node: i32,
    name: Option<String>,
    id: Uuid,
    auto_create: bool,
) -> MetadataResponseTopic {
    let name = match name {
        Some(n) => n,
        None => {
            let meta = router.metadata.borrow();
            return match meta.topic_by_id(id) {
                Some((n, t)) => describe_topic(node, n, t),
                None => MetadataResponseTopic::default()
                    .with_error_code(ResponseError::UnknownTopicId.code())
                    .with_topic_id(id)
                    .with_topic_authorized_operations(OPERATIONS_OMITTED),
            };
        }
    };
    if let Some(t) = router.metadata.borrow().topics.get(&name) {
        return describe_topic(node, &name, t);
    }
    let error = |code: ResponseError| {
        MetadataResponseTopic::default()
            .with_error_code(code.code())
            .with_name(Some(TopicName(StrBytes::from_string(name.clone()))))
            .with_topic_authorized_operations(OPERATIONS_OMITTED)
    };
    if validate_topic_name(&name).is_err() {
        return error(ResponseError::InvalidTopicException);
    }
    if !(auto_create && router.config.broker.auto_create_topics()) {
        return error(ResponseError::UnknownTopicOrPartition);
    }
    let partitions = router.config.broker.num_partitions().max(1) as usize;
    match router.create_topic(&name, partitions, BTreeMap::new()).await {
        Ok(()) => match router.metadata.borrow().topics.get(&name) {
            Some(t) => describe_topic(node, &name, t),
            None => error(ResponseError::UnknownTopicOrPartition),
        },
        Err(e) => {
            eprintln!("pinion: auto-creating topic {name}: {e}");
            error(ResponseError::LeaderNotAvailable)
        }
    }
}

fn describe_topic(node: i32, name: &str, topic: &Topic) -> MetadataResponseTopic {
    let partitions = (0..topic.partition_shards.len() as i32)
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p)
                .with_leader_id(BrokerId(node))
                .with_leader_epoch(0)
                .with_replica_nodes(vec![BrokerId(node)])
                .with_isr_nodes(vec![BrokerId(node)])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
        .with_topic_id(topic.id)
        .with_partitions(partitions)
        .with_topic_authorized_operations(OPERATIONS_OMITTED)
}

pub fn describe_cluster(router: &Router, _req: DescribeClusterRequest) -> DescribeClusterResponse {
    let (host, port) = router.advertised.clone();
    let node = router.config.node_id;
    DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_string(router.metadata.borrow().cluster_id.clone()))
        .with_controller_id(BrokerId(node))
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(BrokerId(node))
            .with_host(StrBytes::from_string(host))
            .with_port(port)])
        .with_cluster_authorized_operations(OPERATIONS_OMITTED)
}
