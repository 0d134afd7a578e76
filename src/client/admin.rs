//! Administrative requests: topics (create, delete, add partitions), partition offsets by time,
//! and topic or broker configs. Each request goes to the broker that must answer it.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    BrokerId, CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest, ListOffsetsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::error::codes;
use super::{Client, ClientError, Connection};

/// Which offset of a partition to look up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// The log end offset (the high watermark).
    Latest,
    /// The first offset whose timestamp is at or after this many ms since the epoch.
    Timestamp(i64),
}

impl OffsetSpec {
    fn wire(self) -> i64 {
        match self {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::Timestamp(t) => t,
        }
    }
}

/// An offset found by ListOffsets; `offset` is -1 when no record is at or after the timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffset {
    pub offset: i64,
    pub timestamp: i64,
}

pub type PartitionResults<T> = BTreeMap<(String, i32), Result<T, ClientError>>;

/// Looks up `spec` for every partition in `partitions`, asking each partition's leader.
pub fn list_offsets(
    client: &mut Client,
    partitions: &[(String, i32)],
    spec: OffsetSpec,
) -> Result<PartitionResults<ListedOffset>, ClientError> {
    let mut topics: Vec<String> = partitions.iter().map(|(t, _)| t.clone()).collect();
    topics.sort();
    topics.dedup();
    let infos = client.topics(&topics, false)?;
    let mut by_leader: BTreeMap<i32, BTreeMap<String, Vec<i32>>> = BTreeMap::new();
    let mut out = PartitionResults::new();
    for (topic, partition) in partitions {
        let info = infos
            .iter()
            .find(|t| &t.name == topic)
            .and_then(|t| t.partitions.iter().find(|p| p.index == *partition));
        match info {
            Some(p) if p.leader >= 0 => {
                by_leader.entry(p.leader).or_default().entry(topic.clone()).or_default().push(*partition)
            }
            Some(p) => {
                let code = if p.error != 0 { p.error } else { codes::LEADER_NOT_AVAILABLE };
                out.insert((topic.clone(), *partition), Err(partition_error(topic, *partition, code, None)));
            }
            None => {
                out.insert(
                    (topic.clone(), *partition),
                    Err(partition_error(topic, *partition, codes::UNKNOWN_TOPIC_OR_PARTITION, None)),
                );
            }
        }
    }
    for (leader, topics) in by_leader {
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_timeout_ms(client.timeout().as_millis() as i32)
            .with_topics(
                topics
                    .iter()
                    .map(|(t, parts)| {
                        ListOffsetsTopic::default().with_name(topic_name(t)).with_partitions(
                            parts
                                .iter()
                                .map(|&p| {
                                    ListOffsetsPartition::default()
                                        .with_partition_index(p)
                                        .with_timestamp(spec.wire())
                                })
                                .collect(),
                        )
                    })
                    .collect(),
            );
        let response = client.broker(leader)?.send(&request)?;
        for t in response.topics {
            for p in t.partitions {
                let key = (t.name.to_string(), p.partition_index);
                let result = if p.error_code == 0 {
                    Ok(ListedOffset { offset: p.offset, timestamp: p.timestamp })
                } else {
                    Err(partition_error(&key.0, key.1, p.error_code, None))
                };
                out.insert(key, result);
            }
        }
    }
    Ok(out)
}

fn partition_error(topic: &str, partition: i32, code: i16, message: Option<String>) -> ClientError {
    ClientError::Kafka { context: format!("{topic}/{partition}"), code, message }
}

pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// A topic to create. -1 partitions or replicas means the broker's default.
#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: Vec<(String, String)>,
}

/// What the broker reports for a created topic.
#[derive(Debug, Clone)]
pub struct CreatedTopic {
    pub partitions: i32,
    pub replication_factor: i16,
    pub id: uuid::Uuid,
}

/// Creating and deleting topics goes to the controller, as Kafka requires of older brokers.
fn controller(client: &mut Client) -> Result<&mut Connection, ClientError> {
    let controller = client.cluster()?.controller;
    if controller >= 0 {
        client.broker(controller)
    } else {
        client.any()
    }
}

pub fn create_topics(
    client: &mut Client,
    topics: &[NewTopic],
    validate_only: bool,
) -> Result<Vec<(String, Result<CreatedTopic, ClientError>)>, ClientError> {
    let timeout_ms = client.timeout().as_millis() as i32;
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(timeout_ms)
        .with_validate_only(validate_only)
        .with_topics(
            topics
                .iter()
                .map(|t| {
                    CreatableTopic::default()
                        .with_name(topic_name(&t.name))
                        .with_num_partitions(t.partitions)
                        .with_replication_factor(t.replication_factor)
                        .with_configs(
                            t.configs
                                .iter()
                                .map(|(k, v)| {
                                    CreatableTopicConfig::default()
                                        .with_name(StrBytes::from_string(k.clone()))
                                        .with_value(Some(StrBytes::from_string(v.clone())))
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
    let response = controller(client)?.send(&request)?;
    Ok(response
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.to_string();
            let result =
                ClientError::check(t.error_code, t.error_message.as_ref(), || format!("topic {name:?}")).map(
                    |()| CreatedTopic {
                        partitions: t.num_partitions,
                        replication_factor: t.replication_factor,
                        id: t.topic_id,
                    },
                );
            (name, result)
        })
        .collect())
}

pub fn delete_topics(
    client: &mut Client,
    names: &[String],
) -> Result<Vec<(String, Result<(), ClientError>)>, ClientError> {
    let timeout_ms = client.timeout().as_millis() as i32;
    let conn = controller(client)?;
    let version = conn.version_of::<DeleteTopicsRequest>()?;
    // v6 names topics in `topics` (by name or id); earlier versions in `topic_names`.
    let request = if version >= 6 {
        DeleteTopicsRequest::default().with_topics(
            names.iter().map(|n| DeleteTopicState::default().with_name(Some(topic_name(n)))).collect(),
        )
    } else {
        DeleteTopicsRequest::default().with_topic_names(names.iter().map(|n| topic_name(n)).collect())
    }
    .with_timeout_ms(timeout_ms);
    let response = conn.send_at(&request, version, std::time::Duration::ZERO)?;
    Ok(response
        .responses
        .into_iter()
        .map(|r| {
            let name = r.name.map(|n| n.to_string()).unwrap_or_default();
            let result =
                ClientError::check(r.error_code, r.error_message.as_ref(), || format!("topic {name:?}"));
            (name, result)
        })
        .collect())
}

/// Raises the partition count of `topic` to `count`.
pub fn create_partitions(client: &mut Client, topic: &str, count: i32) -> Result<(), ClientError> {
    let timeout_ms = client.timeout().as_millis() as i32;
    let request = CreatePartitionsRequest::default()
        .with_timeout_ms(timeout_ms)
        .with_topics(vec![CreatePartitionsTopic::default().with_name(topic_name(topic)).with_count(count)]);
    let response = controller(client)?.send(&request)?;
    for r in response.results {
        ClientError::check(r.error_code, r.error_message.as_ref(), || {
            format!("adding partitions to {topic:?}")
        })?;
    }
    Ok(())
}

/// Something that has configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    Topic(String),
    Broker(i32),
}

impl Resource {
    fn wire(&self) -> (i8, StrBytes) {
        match self {
            Resource::Topic(t) => (2, StrBytes::from_string(t.clone())),
            Resource::Broker(id) => (4, StrBytes::from_string(id.to_string())),
        }
    }

    fn describe(&self) -> String {
        match self {
            Resource::Topic(t) => format!("topic {t:?}"),
            Resource::Broker(id) => format!("broker {id}"),
        }
    }

    /// Broker configs are answered by that broker; topic configs by any.
    fn connection<'a>(&self, client: &'a mut Client) -> Result<&'a mut Connection, ClientError> {
        match self {
            Resource::Topic(_) => client.any(),
            Resource::Broker(id) => client.broker(*id),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    pub source: i8,
    pub read_only: bool,
    pub sensitive: bool,
}

/// Kafka's name for a config source code.
pub fn config_source_name(source: i8) -> &'static str {
    match source {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        6 => "DYNAMIC_BROKER_LOGGER_CONFIG",
        7 => "CLIENT_METRICS_CONFIG",
        8 => "GROUP_CONFIG",
        _ => "UNKNOWN",
    }
}

/// The configs of `resource`, all of them or only `keys`, sorted by name.
pub fn describe_configs(
    client: &mut Client,
    resource: &Resource,
    keys: Option<&[String]>,
) -> Result<Vec<ConfigEntry>, ClientError> {
    let (kind, name) = resource.wire();
    let request = DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
        .with_resource_type(kind)
        .with_resource_name(name)
        .with_configuration_keys(
            keys.map(|k| k.iter().map(|s| StrBytes::from_string(s.clone())).collect()),
        )]);
    let response = resource.connection(client)?.send(&request)?;
    let mut entries = Vec::new();
    for r in response.results {
        if r.error_code == codes::UNKNOWN_TOPIC_OR_PARTITION {
            if let Resource::Topic(t) = resource {
                return Err(ClientError::UnknownTopic(t.clone()));
            }
        }
        ClientError::check(r.error_code, r.error_message.as_ref(), || resource.describe())?;
        entries.extend(r.configs.into_iter().map(|c| ConfigEntry {
            name: c.name.to_string(),
            value: c.value.map(|v| v.to_string()),
            source: c.config_source,
            read_only: c.read_only,
            sensitive: c.is_sensitive,
        }));
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// Sets `set` and removes `delete` (back to the default) in one IncrementalAlterConfigs.
pub fn alter_configs(
    client: &mut Client,
    resource: &Resource,
    set: &[(String, String)],
    delete: &[String],
    validate_only: bool,
) -> Result<(), ClientError> {
    const SET: i8 = 0;
    const DELETE: i8 = 1;
    let (kind, name) = resource.wire();
    let mut configs: Vec<AlterableConfig> = set
        .iter()
        .map(|(k, v)| {
            AlterableConfig::default()
                .with_name(StrBytes::from_string(k.clone()))
                .with_config_operation(SET)
                .with_value(Some(StrBytes::from_string(v.clone())))
        })
        .collect();
    configs.extend(delete.iter().map(|k| {
        AlterableConfig::default().with_name(StrBytes::from_string(k.clone())).with_config_operation(DELETE)
    }));
    let request =
        IncrementalAlterConfigsRequest::default().with_validate_only(validate_only).with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(kind)
                .with_resource_name(name)
                .with_configs(configs),
        ]);
    let response = resource.connection(client)?.send(&request)?;
    for r in response.responses {
        if r.error_code == codes::UNKNOWN_TOPIC_OR_PARTITION {
            if let Resource::Topic(t) = resource {
                return Err(ClientError::UnknownTopic(t.clone()));
            }
        }
        ClientError::check(r.error_code, r.error_message.as_ref(), || {
            format!("changing configs of {}", resource.describe())
        })?;
    }
    Ok(())
}
