//! CreateTopics (2-7), DeleteTopics (1-6), CreatePartitions (0-3): Kafka's validation rules and
//! error codes, on a one-node cluster.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::metadata::configs::{self, topic_value};
use crate::metadata::{self as meta, validate_topic_name, Topic};
use crate::router::Router;

/// The most partitions one topic may have here.
const PARTITIONS_MAX: i32 = 100_000;

type Failure = (ResponseError, String);

pub async fn create(router: &Router, version: i16, req: CreateTopicsRequest) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.to_string();
        let mut result = CreatableTopicResult::default().with_name(t.name.clone());
        let checked = check_new_topic(
            router,
            &name,
            t.num_partitions,
            t.replication_factor,
            &t.assignments,
            &t.configs,
        );
        let outcome = match checked {
            Err(f) => Err(f),
            Ok((partitions, configs)) if req.validate_only => Ok((partitions, configs)),
            Ok((partitions, configs)) => router
                .create_topic(&name, partitions as usize, configs.clone())
                .await
                .map(|()| (partitions, configs))
                .map_err(|e| (ResponseError::UnknownServerError, e)),
        };
        match outcome {
            Ok((partitions, topic_configs)) => {
                result = result.with_num_partitions(partitions).with_replication_factor(1);
                if let Some(t) = router.metadata.borrow().topics.get(&name) {
                    result = result.with_topic_id(t.id);
                }
                if version >= 5 {
                    result = result.with_configs(Some(described_configs(router, &topic_configs)));
                }
            }
            Err((code, message)) => {
                result = result
                    .with_error_code(code.code())
                    .with_error_message(Some(StrBytes::from_string(message)))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1);
            }
        }
        results.push(result);
    }
    CreateTopicsResponse::default().with_topics(results)
}

fn check_new_topic(
    router: &Router,
    name: &str,
    num_partitions: i32,
    replication_factor: i16,
    assignments: &[kafka_protocol::messages::create_topics_request::CreatableReplicaAssignment],
    requested: &[kafka_protocol::messages::create_topics_request::CreatableTopicConfig],
) -> Result<(i32, BTreeMap<String, String>), Failure> {
    validate_topic_name(name).map_err(|e| (ResponseError::InvalidTopicException, e))?;
    if router.metadata.borrow().topics.contains_key(name) {
        return Err((ResponseError::TopicAlreadyExists, format!("Topic '{name}' already exists.")));
    }
    let partitions = match (num_partitions, assignments.len()) {
        (-1, 0) => router.config.broker.num_partitions(),
        (-1, n) => n as i32,
        (n, _) => n,
    };
    if !(1..=PARTITIONS_MAX).contains(&partitions) {
        return Err((
            ResponseError::InvalidPartitions,
            format!("Number of partitions must be between 1 and {PARTITIONS_MAX}, got {partitions}."),
        ));
    }
    let rf = if replication_factor == -1 {
        router.config.broker.default_replication_factor()
    } else {
        replication_factor
    };
    if rf != 1 || assignments.iter().any(|a| a.broker_ids.len() != 1) {
        return Err((
            ResponseError::InvalidReplicationFactor,
            format!("Replication factor: {rf} larger than available brokers: 1."),
        ));
    }
    let mut configs = BTreeMap::new();
    for c in requested {
        let key = c.name.to_string();
        let def = configs::topic_def(&key)
            .ok_or_else(|| (ResponseError::InvalidConfig, format!("Unknown topic config name: {key}")))?;
        match &c.value {
            Some(v) => {
                configs::validate(&def.0, v).map_err(|e| (ResponseError::InvalidConfig, e.to_string()))?;
                configs.insert(key, v.to_string());
            }
            None => {
                configs.remove(&key);
            }
        }
    }
    Ok((partitions, configs))
}

fn described_configs(router: &Router, topic: &BTreeMap<String, String>) -> Vec<CreatableTopicConfigs> {
    configs::TOPIC_CONFIGS
        .iter()
        .filter_map(|(def, _)| {
            let (value, source) = topic_value(topic, &router.config.broker, def.name)?;
            Some(
                CreatableTopicConfigs::default()
                    .with_name(StrBytes::from_static_str(def.name))
                    .with_value(Some(StrBytes::from_string(value.to_string())))
                    .with_config_source(source as i8),
            )
        })
        .collect()
}

pub async fn delete(router: &Router, version: i16, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
    // v6 names topics by name or id in `topics`; earlier versions list names in `topic_names`.
    let targets: Vec<(Option<String>, uuid::Uuid)> = if version >= 6 {
        req.topics.into_iter().map(|t| (t.name.map(|n| n.to_string()), t.topic_id)).collect()
    } else {
        req.topic_names.into_iter().map(|n| (Some(n.to_string()), uuid::Uuid::nil())).collect()
    };
    let mut responses = Vec::with_capacity(targets.len());
    for (name, id) in targets {
        let name = name.or_else(|| router.metadata.borrow().topic_by_id(id).map(|(n, _)| n.clone()));
        let mut result = DeletableTopicResult::default()
            .with_name(name.clone().map(|n| TopicName(StrBytes::from_string(n))))
            .with_topic_id(id);
        let outcome = match &name {
            None => Err((ResponseError::UnknownTopicId, format!("no topic has id {id}"))),
            Some(_) if !router.config.broker.delete_topic_enable() => {
                Err((ResponseError::TopicDeletionDisabled, "delete.topic.enable is false".to_string()))
            }
            Some(n) => match router.metadata.borrow().topics.get(n) {
                None => Err((ResponseError::UnknownTopicOrPartition, format!("unknown topic {n}"))),
                Some(t) => Ok(t.id),
            },
        };
        match outcome {
            Ok(topic_id) => {
                result = result.with_topic_id(topic_id);
                if let Some(n) = &name {
                    if let Err(e) = router.delete_topic(n).await {
                        result = result
                            .with_error_code(ResponseError::UnknownServerError.code())
                            .with_error_message(Some(StrBytes::from_string(e)));
                    }
                }
            }
            Err((code, message)) => {
                result = result
                    .with_error_code(code.code())
                    .with_error_message(Some(StrBytes::from_string(message)));
            }
        }
        responses.push(result);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

pub async fn create_partitions(router: &Router, req: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.to_string();
        let mut result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        let current: Option<Topic> = router.metadata.borrow().topics.get(&name).cloned();
        let outcome = match current {
            None => Err((ResponseError::UnknownTopicOrPartition, format!("unknown topic {name}"))),
            Some(topic) => {
                let have = topic.partition_shards.len() as i32;
                if t.count <= have {
                    Err((
                        ResponseError::InvalidPartitions,
                        format!("Topic currently has {have} partitions, which is higher than or equal to the requested {}.", t.count),
                    ))
                } else if t.count > PARTITIONS_MAX {
                    Err((ResponseError::InvalidPartitions, format!("at most {PARTITIONS_MAX} partitions")))
                } else if t.assignments.as_ref().is_some_and(|a| a.iter().any(|x| x.broker_ids.len() != 1)) {
                    Err((
                        ResponseError::InvalidReplicaAssignment,
                        "a one-node cluster has one replica per partition".into(),
                    ))
                } else if req.validate_only {
                    Ok(())
                } else {
                    let added = (t.count - have) as usize;
                    let loads = router.metadata.borrow().shard_loads(router.shard_count());
                    let mut grown = topic.clone();
                    grown.partition_shards.extend(meta::place(&loads, added).into_iter().map(|s| s.0));
                    router
                        .add_partitions(&name, grown, have as usize)
                        .await
                        .map_err(|e| (ResponseError::UnknownServerError, e))
                }
            }
        };
        if let Err((code, message)) = outcome {
            result =
                result.with_error_code(code.code()).with_error_message(Some(StrBytes::from_string(message)));
        }
        results.push(result);
    }
    CreatePartitionsResponse::default().with_results(results)
}
