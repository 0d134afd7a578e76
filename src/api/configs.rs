//! DescribeConfigs (1-4), AlterConfigs (0-2) and IncrementalAlterConfigs (0-1). Every topic and
//! broker config is described with its value, source, synonyms and type; topic configs can be
//! changed, broker configs are static (set with `--override`).

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::metadata::configs::{self, ConfigDef, ConfigSource, Kind};
use crate::router::Router;

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

type Failure = (ResponseError, String);

pub fn describe(router: &Router, version: i16, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let results = req
        .resources
        .into_iter()
        .map(|r| {
            let keys: Option<Vec<String>> =
                r.configuration_keys.map(|k| k.iter().map(|s| s.to_string()).collect());
            let wanted = |name: &str| keys.as_ref().is_none_or(|k| k.iter().any(|x| x == name));
            let name = r.resource_name.to_string();
            let described = match r.resource_type {
                RESOURCE_TOPIC => describe_topic(router, &name, &wanted, req.include_synonyms, version),
                RESOURCE_BROKER => describe_broker(router, &name, &wanted, req.include_synonyms, version),
                other => {
                    Err((ResponseError::InvalidRequest, format!("resource type {other} has no configs here")))
                }
            };
            let result = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name);
            let mut result = match described {
                Ok(configs) => result.with_configs(configs),
                Err((code, msg)) => {
                    result.with_error_code(code.code()).with_error_message(Some(StrBytes::from_string(msg)))
                }
            };
            if !req.include_documentation {
                result.configs.iter_mut().for_each(|c| c.documentation = None);
            }
            result
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn entry(
    def: &ConfigDef,
    value: &str,
    source: ConfigSource,
    read_only: bool,
    version: i16,
) -> DescribeConfigsResourceResult {
    let mut e = DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_static_str(def.name))
        .with_value(Some(StrBytes::from_string(value.to_string())))
        .with_read_only(read_only)
        .with_config_source(source as i8);
    if version >= 3 {
        e = e.with_config_type(def.kind.code()).with_documentation(Some(StrBytes::from_static_str(def.doc)));
    }
    e
}

fn synonym(name: &str, value: &str, source: ConfigSource) -> DescribeConfigsSynonym {
    DescribeConfigsSynonym::default()
        .with_name(StrBytes::from_string(name.to_string()))
        .with_value(Some(StrBytes::from_string(value.to_string())))
        .with_source(source as i8)
}

fn describe_topic(
    router: &Router,
    name: &str,
    wanted: &dyn Fn(&str) -> bool,
    synonyms: bool,
    version: i16,
) -> Result<Vec<DescribeConfigsResourceResult>, Failure> {
    let meta = router.metadata.borrow();
    let topic = meta
        .topics
        .get(name)
        .ok_or_else(|| (ResponseError::UnknownTopicOrPartition, format!("unknown topic {name}")))?;
    let broker = &router.config.broker;
    Ok(configs::TOPIC_CONFIGS
        .iter()
        .filter(|(def, _)| wanted(def.name))
        .filter_map(|(def, broker_name)| {
            let (value, source) = configs::topic_value(&topic.configs, broker, def.name)?;
            let mut e = entry(def, value, source, false, version);
            if synonyms {
                let mut list = Vec::new();
                if let Some(v) = topic.configs.get(def.name) {
                    list.push(synonym(def.name, v, ConfigSource::DynamicTopic));
                }
                if let Some((v, true)) = broker.get(broker_name) {
                    list.push(synonym(broker_name, v, ConfigSource::StaticBroker));
                }
                if let Some(d) = configs::broker_def(broker_name).and_then(|d| d.default) {
                    list.push(synonym(broker_name, d, ConfigSource::Default));
                }
                e = e.with_synonyms(list);
            }
            Some(e)
        })
        .collect())
}

fn describe_broker(
    router: &Router,
    name: &str,
    wanted: &dyn Fn(&str) -> bool,
    synonyms: bool,
    version: i16,
) -> Result<Vec<DescribeConfigsResourceResult>, Failure> {
    if !name.is_empty() && name != router.config.node_id.to_string() {
        return Err((ResponseError::InvalidRequest, format!("no broker with id {name}")));
    }
    let broker = &router.config.broker;
    Ok(configs::BROKER_CONFIGS
        .iter()
        .filter(|def| wanted(def.name))
        .filter_map(|def| {
            let (value, explicit) = broker.get(def.name)?;
            let source = if explicit { ConfigSource::StaticBroker } else { ConfigSource::Default };
            let mut e = entry(def, value, source, true, version);
            if synonyms {
                let mut list = vec![];
                if explicit {
                    list.push(synonym(def.name, value, ConfigSource::StaticBroker));
                }
                if let Some(d) = def.default {
                    list.push(synonym(def.name, d, ConfigSource::Default));
                }
                e = e.with_synonyms(list);
            }
            Some(e)
        })
        .collect())
}

/// Checks new topic configs; `Ok` holds the full set to store.
fn validated(
    changes: BTreeMap<String, Option<String>>,
    mut current: BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, Failure> {
    for (key, value) in changes {
        let (def, _) = configs::topic_def(&key)
            .ok_or_else(|| (ResponseError::InvalidConfig, format!("Unknown topic config name: {key}")))?;
        match value {
            Some(v) => {
                configs::validate(def, &v).map_err(|e| (ResponseError::InvalidConfig, e.to_string()))?;
                current.insert(key, v);
            }
            None => {
                current.remove(&key);
            }
        }
    }
    Ok(current)
}

async fn store(
    router: &Router,
    topic: &str,
    new_configs: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<(), Failure> {
    if validate_only {
        return Ok(());
    }
    let before = {
        let mut meta = router.metadata.borrow_mut();
        let t = meta
            .topics
            .get_mut(topic)
            .ok_or_else(|| (ResponseError::UnknownTopicOrPartition, format!("unknown topic {topic}")))?;
        let before = t.clone();
        t.configs = new_configs;
        before
    };
    if let Err(e) = router.save_metadata().await {
        router.restore_topic(topic, Some(before)).await;
        return Err((ResponseError::UnknownServerError, e));
    }
    router.push_config(topic).await.map_err(|e| (ResponseError::UnknownServerError, e.to_string()))
}

fn current_configs(
    router: &Router,
    resource_type: i8,
    name: &str,
) -> Result<BTreeMap<String, String>, Failure> {
    match resource_type {
        RESOURCE_TOPIC => router
            .metadata
            .borrow()
            .topics
            .get(name)
            .map(|t| t.configs.clone())
            .ok_or_else(|| (ResponseError::UnknownTopicOrPartition, format!("unknown topic {name}"))),
        RESOURCE_BROKER => Err((
            ResponseError::InvalidRequest,
            "broker configs are static here: set them with --override at start-up".into(),
        )),
        other => Err((ResponseError::InvalidRequest, format!("resource type {other} cannot be altered"))),
    }
}

fn response(resource_type: i8, name: StrBytes, outcome: Result<(), Failure>) -> AlterConfigsResourceResponse {
    let r =
        AlterConfigsResourceResponse::default().with_resource_type(resource_type).with_resource_name(name);
    match outcome {
        Ok(()) => r,
        Err((code, msg)) => {
            r.with_error_code(code.code()).with_error_message(Some(StrBytes::from_string(msg)))
        }
    }
}

/// AlterConfigs replaces a topic's whole set of configs with the ones given.
pub async fn alter(router: &Router, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let name = r.resource_name.to_string();
        let changes =
            r.configs.iter().map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string()))).collect();
        let outcome = match current_configs(router, r.resource_type, &name) {
            Ok(_) => match validated(changes, BTreeMap::new()) {
                Ok(new) => store(router, &name, new, req.validate_only).await,
                Err(f) => Err(f),
            },
            Err(f) => Err(f),
        };
        responses.push(response(r.resource_type, r.resource_name, outcome));
    }
    AlterConfigsResponse::default().with_responses(responses)
}

/// IncrementalAlterConfigs: SET (0), DELETE (1), APPEND (2) and SUBTRACT (3) on list configs.
pub async fn incremental_alter(
    router: &Router,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let name = r.resource_name.to_string();
        let outcome = match current_configs(router, r.resource_type, &name) {
            Err(f) => Err(f),
            Ok(current) => {
                let mut changes = BTreeMap::new();
                let mut failure = None;
                for c in &r.configs {
                    let key = c.name.to_string();
                    let value = c.value.as_ref().map(|v| v.to_string());
                    let existing = current.get(&key).cloned().or_else(|| {
                        configs::topic_value(&BTreeMap::new(), &router.config.broker, &key)
                            .map(|(v, _)| v.to_string())
                    });
                    let is_list = configs::topic_def(&key).is_some_and(|(d, _)| d.kind == Kind::List);
                    let change = match (c.config_operation, value) {
                        (0, v) => Ok(v),
                        (1, _) => Ok(None),
                        (op @ (2 | 3), Some(v)) if is_list => {
                            Ok(Some(edit_list(existing.as_deref().unwrap_or(""), &v, op == 2)))
                        }
                        (2 | 3, _) => {
                            Err((ResponseError::InvalidConfig, format!("{key} is not a list config")))
                        }
                        (op, _) => {
                            Err((ResponseError::InvalidRequest, format!("unknown config operation {op}")))
                        }
                    };
                    match change {
                        Ok(v) => {
                            changes.insert(key, v);
                        }
                        Err(f) => {
                            failure = Some(f);
                            break;
                        }
                    }
                }
                match failure {
                    Some(f) => Err(f),
                    None => match validated(changes, current) {
                        Ok(new) => store(router, &name, new, req.validate_only).await,
                        Err(f) => Err(f),
                    },
                }
            }
        };
        responses.push(response(r.resource_type, r.resource_name, outcome));
    }
    IncrementalAlterConfigsResponse::default().with_responses(
        responses
            .into_iter()
            .map(|r| {
                kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_error_code(r.error_code)
                    .with_error_message(r.error_message)
                    .with_resource_type(r.resource_type)
                    .with_resource_name(r.resource_name)
            })
            .collect(),
    )
}

fn edit_list(current: &str, items: &str, append: bool) -> String {
    let mut list: Vec<String> =
        current.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
    for item in items.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if append {
            if !list.iter().any(|x| x == item) {
                list.push(item.to_string());
            }
        } else {
            list.retain(|x| x != item);
        }
    }
    list.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_edits_append_and_subtract() {
        assert_eq!(edit_list("delete", "x", true), "delete,x");
        assert_eq!(edit_list("delete,compact", "delete", false), "compact");
        assert_eq!(edit_list("delete", "delete", true), "delete");
    }
}
