//! The classic consumer-group APIs: FindCoordinator (0-6), JoinGroup (0-9), SyncGroup (0-5),
//! Heartbeat (0-4), LeaveGroup (0-5), OffsetCommit (2-9), OffsetFetch (1-9), ListGroups (0-5),
//! DescribeGroups (0-6), DeleteGroups (0-2), OffsetDelete (0). Each group lives on the shard that
//! owns its `__consumer_offsets` partition; this module forwards to it and shapes the answers.

use std::collections::BTreeMap;

use futures::channel::oneshot;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::group::state::{JoinArgs, JoinResult, SyncResult};
use crate::group::{CommitItem, FetchedOffsets, GroupCall, GroupDescription};
use crate::router::Router;
use crate::shard::messages::{Reply, ShardRequest};
use crate::shard::ShardId;

/// Who sent a request: for JoinGroup's member records.
pub struct Client<'a> {
    pub client_id: &'a str,
    pub host: &'a str,
}

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

/// Sends a call to the group's shard; `None` if the coordinator could not answer.
async fn call<T: Send + 'static>(
    router: &Router,
    shard: ShardId,
    make: impl FnOnce(Reply<T>) -> GroupCall,
) -> Option<T> {
    let (tx, rx) = oneshot::channel();
    router.post(shard, ShardRequest::Group(make(Reply::new(tx)))).await.ok()?;
    rx.await.ok()
}

pub fn find_coordinator(
    router: &Router,
    version: i16,
    req: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let node = router.config.node_id;
    let (host, port) = router.advertised.clone();
    // Key type 0 is a consumer group; transactions (1) and share groups (2) are not offered.
    let error = (req.key_type != 0).then_some(ResponseError::CoordinatorNotAvailable);
    if version >= 4 {
        let coordinators = req
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let c = Coordinator::default().with_key(key);
                match error {
                    Some(e) => c.with_error_code(e.code()).with_node_id(BrokerId(-1)).with_port(-1),
                    None => c.with_node_id(BrokerId(node)).with_host(s(host.clone())).with_port(port),
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    match error {
        Some(e) => FindCoordinatorResponse::default()
            .with_error_code(e.code())
            .with_node_id(BrokerId(-1))
            .with_port(-1),
        None => {
            FindCoordinatorResponse::default().with_node_id(BrokerId(node)).with_host(s(host)).with_port(port)
        }
    }
}

pub async fn join(
    router: &Router,
    version: i16,
    client: Client<'_>,
    req: JoinGroupRequest,
) -> JoinGroupResponse {
    let group = req.group_id.to_string();
    let result = if group.is_empty() {
        JoinResult::error(ResponseError::InvalidGroupId, &req.member_id)
    } else {
        let args = JoinArgs {
            member_id: req.member_id.to_string(),
            group_instance_id: req.group_instance_id.map(|i| i.to_string()),
            client_id: client.client_id.to_string(),
            client_host: format!("/{}", client.host),
            session_timeout_ms: req.session_timeout_ms,
            rebalance_timeout_ms: if version >= 1 {
                req.rebalance_timeout_ms
            } else {
                req.session_timeout_ms
            },
            protocol_type: req.protocol_type.to_string(),
            // Copied: kept for the member's life, a slice would hold the whole receive chunk.
            protocols: req
                .protocols
                .into_iter()
                .map(|p| (p.name.to_string(), bytes::Bytes::copy_from_slice(&p.metadata)))
                .collect(),
            require_known_member_id: version >= 4,
        };
        let shard = router.group_shard(&group);
        call(router, shard, |reply| GroupCall::Join { group, args, reply })
            .await
            .unwrap_or_else(|| JoinResult::error(ResponseError::CoordinatorNotAvailable, &req.member_id))
    };
    let members = result
        .members
        .into_iter()
        .map(|(id, instance, metadata)| {
            JoinGroupResponseMember::default()
                .with_member_id(s(id))
                .with_group_instance_id(instance.filter(|_| version >= 5).map(s))
                .with_metadata(metadata)
        })
        .collect();
    let mut resp = JoinGroupResponse::default()
        .with_error_code(result.error)
        .with_generation_id(result.generation_id)
        .with_leader(s(result.leader))
        .with_member_id(s(result.member_id))
        .with_members(members);
    resp.protocol_name = match result.protocol_name {
        Some(n) => Some(s(n)),
        None if version < 7 => Some(s("")),
        None => None,
    };
    if version >= 7 {
        resp.protocol_type = result.protocol_type.map(s);
    }
    resp
}

pub async fn sync(router: &Router, version: i16, req: SyncGroupRequest) -> SyncGroupResponse {
    let group = req.group_id.to_string();
    let result = if group.is_empty() {
        SyncResult::error(ResponseError::InvalidGroupId)
    } else {
        let shard = router.group_shard(&group);
        let assignments = req
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), bytes::Bytes::copy_from_slice(&a.assignment)))
            .collect();
        call(router, shard, |reply| GroupCall::Sync {
            group,
            member_id: req.member_id.to_string(),
            instance: req.group_instance_id.map(|i| i.to_string()),
            generation_id: req.generation_id,
            protocol_type: req.protocol_type.map(|p| p.to_string()),
            protocol_name: req.protocol_name.map(|p| p.to_string()),
            assignments,
            reply,
        })
        .await
        .unwrap_or_else(|| SyncResult::error(ResponseError::CoordinatorNotAvailable))
    };
    let mut resp =
        SyncGroupResponse::default().with_error_code(result.error).with_assignment(result.assignment);
    if version >= 5 {
        resp.protocol_type = result.protocol_type.map(s);
        resp.protocol_name = result.protocol_name.map(s);
    }
    resp
}

pub async fn heartbeat(router: &Router, req: HeartbeatRequest) -> HeartbeatResponse {
    let group = req.group_id.to_string();
    let shard = router.group_shard(&group);
    let code = call(router, shard, |reply| GroupCall::Heartbeat {
        group,
        member_id: req.member_id.to_string(),
        instance: req.group_instance_id.map(|i| i.to_string()),
        generation_id: req.generation_id,
        reply,
    })
    .await
    .unwrap_or(ResponseError::CoordinatorNotAvailable.code());
    HeartbeatResponse::default().with_error_code(code)
}

pub async fn leave(router: &Router, version: i16, req: LeaveGroupRequest) -> LeaveGroupResponse {
    let group = req.group_id.to_string();
    let who: Vec<(String, Option<String>)> = if version >= 3 {
        req.members
            .iter()
            .map(|m| (m.member_id.to_string(), m.group_instance_id.as_ref().map(|i| i.to_string())))
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let shard = router.group_shard(&group);
    let members = who.clone();
    let outcome = call(router, shard, |reply| GroupCall::Leave { group, members, reply })
        .await
        .unwrap_or(Err(ResponseError::CoordinatorNotAvailable.code()));
    match outcome {
        Err(code) => LeaveGroupResponse::default().with_error_code(code),
        Ok(codes) if version >= 3 => LeaveGroupResponse::default().with_members(
            who.into_iter()
                .zip(codes)
                .map(|((id, instance), code)| {
                    MemberResponse::default()
                        .with_member_id(s(id))
                        .with_group_instance_id(instance.map(s))
                        .with_error_code(code)
                })
                .collect(),
        ),
        Ok(codes) => LeaveGroupResponse::default().with_error_code(codes.first().copied().unwrap_or(0)),
    }
}

pub async fn commit(router: &Router, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let group = req.group_id.to_string();
    // Partitions of unknown topics are answered here; the rest go to the coordinator.
    let mut layout: Vec<(TopicName, Vec<(i32, Result<usize, i16>)>)> = Vec::new();
    let mut items = Vec::new();
    for t in req.topics {
        let mut parts = Vec::new();
        for p in t.partitions {
            let slot = if group.is_empty() {
                Err(ResponseError::InvalidGroupId.code())
            } else if router.shard_of(&t.name, p.partition_index).is_none() {
                Err(ResponseError::UnknownTopicOrPartition.code())
            } else {
                items.push(CommitItem {
                    topic: t.name.to_string(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.map(|m| m.to_string()),
                });
                Ok(items.len() - 1)
            };
            parts.push((p.partition_index, slot));
        }
        layout.push((t.name, parts));
    }
    let codes = if items.is_empty() {
        Vec::new()
    } else {
        let shard = router.group_shard(&group);
        let n = items.len();
        call(router, shard, |reply| GroupCall::Commit {
            group,
            member_id: req.member_id.to_string(),
            instance: req.group_instance_id.map(|i| i.to_string()),
            generation_id: req.generation_id_or_member_epoch,
            items,
            reply,
        })
        .await
        .unwrap_or_else(|| vec![ResponseError::CoordinatorNotAvailable.code(); n])
    };
    let topics = layout
        .into_iter()
        .map(|(name, parts)| {
            let partitions = parts
                .into_iter()
                .map(|(index, slot)| {
                    let code = match slot {
                        Ok(i) => codes.get(i).copied().unwrap_or(ResponseError::UnknownServerError.code()),
                        Err(code) => code,
                    };
                    OffsetCommitResponsePartition::default().with_partition_index(index).with_error_code(code)
                })
                .collect();
            OffsetCommitResponseTopic::default().with_name(name).with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// Committed offsets of one group: (topic, partition, offset, leader epoch, metadata).
async fn fetch_group(
    router: &Router,
    group: &str,
    partitions: Option<Vec<(String, i32)>>,
) -> Result<FetchedOffsets, i16> {
    if group.is_empty() {
        return Err(ResponseError::InvalidGroupId.code());
    }
    let shard = router.group_shard(group);
    let group = group.to_string();
    call(router, shard, |reply| GroupCall::Fetch { group, partitions, reply })
        .await
        .ok_or(ResponseError::CoordinatorNotAvailable.code())
}

/// Groups the fetched offsets by topic, in the order they came.
fn by_topic(fetched: FetchedOffsets) -> Vec<(String, Vec<(i32, i64, i32, String)>)> {
    let mut out: Vec<(String, Vec<(i32, i64, i32, String)>)> = Vec::new();
    for (topic, partition, committed) in fetched {
        let (offset, epoch, metadata) = match committed {
            Some(c) => (c.offset, c.leader_epoch, c.metadata.unwrap_or_default()),
            None => (-1, -1, String::new()),
        };
        match out.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, parts)) => parts.push((partition, offset, epoch, metadata)),
            None => out.push((topic, vec![(partition, offset, epoch, metadata)])),
        }
    }
    out
}

pub async fn fetch_offsets(router: &Router, version: i16, req: OffsetFetchRequest) -> OffsetFetchResponse {
    if version >= 8 {
        let mut groups = Vec::with_capacity(req.groups.len());
        for g in req.groups {
            let wanted = g.topics.map(|ts| {
                ts.into_iter()
                    .flat_map(|t| t.partition_indexes.into_iter().map(move |p| (t.name.to_string(), p)))
                    .collect()
            });
            let group = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
            groups.push(match fetch_group(router, &g.group_id, wanted).await {
                Err(code) => group.with_error_code(code),
                Ok(fetched) => group.with_topics(
                    by_topic(fetched)
                        .into_iter()
                        .map(|(topic, parts)| {
                            OffsetFetchResponseTopics::default()
                                .with_name(TopicName(s(topic)))
                                .with_partitions(
                                    parts
                                        .into_iter()
                                        .map(|(p, offset, epoch, metadata)| {
                                            OffsetFetchResponsePartitions::default()
                                                .with_partition_index(p)
                                                .with_committed_offset(offset)
                                                .with_committed_leader_epoch(epoch)
                                                .with_metadata(Some(s(metadata)))
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                ),
            });
        }
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let wanted = req.topics.map(|ts| {
        ts.into_iter()
            .flat_map(|t| t.partition_indexes.into_iter().map(move |p| (t.name.to_string(), p)))
            .collect()
    });
    match fetch_group(router, &req.group_id, wanted).await {
        Err(code) => OffsetFetchResponse::default().with_error_code(code),
        Ok(fetched) => OffsetFetchResponse::default().with_topics(
            by_topic(fetched)
                .into_iter()
                .map(|(topic, parts)| {
                    OffsetFetchResponseTopic::default().with_name(TopicName(s(topic))).with_partitions(
                        parts
                            .into_iter()
                            .map(|(p, offset, epoch, metadata)| {
                                let mut r = OffsetFetchResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(offset)
                                    .with_metadata(Some(s(metadata)));
                                if version >= 5 {
                                    r = r.with_committed_leader_epoch(epoch);
                                }
                                r
                            })
                            .collect(),
                    )
                })
                .collect(),
        ),
    }
}

pub async fn list(router: &Router, version: i16, req: ListGroupsRequest) -> ListGroupsResponse {
    let states: Vec<String> = req.states_filter.iter().map(|s| s.to_lowercase()).collect();
    let types: Vec<String> = req.types_filter.iter().map(|s| s.to_lowercase()).collect();
    let mut groups = Vec::new();
    for shard in 0..router.shard_count() {
        let Some(found) = call(router, ShardId(shard), |reply| GroupCall::List { reply }).await else {
            return ListGroupsResponse::default()
                .with_error_code(ResponseError::CoordinatorNotAvailable.code());
        };
        for (id, protocol_type, state) in found {
            if !states.is_empty() && !states.contains(&state.to_lowercase()) {
                continue;
            }
            if !types.is_empty() && !types.contains(&"classic".to_string()) {
                continue;
            }
            let mut g =
                ListedGroup::default().with_group_id(GroupId(s(id))).with_protocol_type(s(protocol_type));
            if version >= 4 {
                g = g.with_group_state(s(state));
            }
            if version >= 5 {
                g = g.with_group_type(s("classic"));
            }
            groups.push(g);
        }
    }
    groups.sort_by(|a, b| a.group_id.0.cmp(&b.group_id.0));
    ListGroupsResponse::default().with_groups(groups)
}

pub async fn describe(router: &Router, version: i16, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let mut per_shard: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for g in &req.groups {
        per_shard.entry(router.group_shard(g).0).or_default().push(g.to_string());
    }
    let mut found: BTreeMap<String, GroupDescription> = BTreeMap::new();
    for (shard, groups) in per_shard {
        if let Some(list) = call(router, ShardId(shard), |reply| GroupCall::Describe { groups, reply }).await
        {
            found.extend(list.into_iter().map(|d| (d.group_id.clone(), d)));
        }
    }
    let groups = req
        .groups
        .into_iter()
        .map(|id| {
            let Some(d) = found.remove(id.as_str()) else {
                return DescribedGroup::default()
                    .with_group_id(id)
                    .with_error_code(ResponseError::CoordinatorNotAvailable.code());
            };
            let members = d
                .members
                .into_iter()
                .map(|m| {
                    DescribedGroupMember::default()
                        .with_member_id(s(m.member_id))
                        .with_group_instance_id(m.group_instance_id.filter(|_| version >= 4).map(s))
                        .with_client_id(s(m.client_id))
                        .with_client_host(s(m.client_host))
                        .with_member_metadata(m.metadata)
                        .with_member_assignment(m.assignment)
                })
                .collect();
            if version >= 6 && d.state == "Dead" {
                return DescribedGroup::default()
                    .with_group_id(id)
                    .with_group_state(s(d.state))
                    .with_error_code(ResponseError::GroupIdNotFound.code())
                    .with_error_message(Some(s(format!("group {} does not exist", d.group_id))));
            }
            let mut g = DescribedGroup::default()
                .with_group_id(id)
                .with_group_state(s(d.state))
                .with_protocol_type(s(d.protocol_type))
                .with_protocol_data(s(d.protocol))
                .with_members(members);
            if version >= 3 {
                g = g.with_authorized_operations(i32::MIN);
            }
            g
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

pub async fn delete(router: &Router, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for id in req.groups_names {
        let shard = router.group_shard(&id);
        let groups = vec![id.to_string()];
        let code = call(router, shard, |reply| GroupCall::Delete { groups, reply })
            .await
            .and_then(|c| c.first().copied())
            .unwrap_or(ResponseError::CoordinatorNotAvailable.code());
        results.push(
            delete_groups_response::DeletableGroupResult::default().with_group_id(id).with_error_code(code),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}

pub async fn delete_offsets(router: &Router, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group = req.group_id.to_string();
    let partitions: Vec<(String, i32)> = req
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.name.to_string(), p.partition_index)))
        .collect();
    let shard = router.group_shard(&group);
    let outcome = call(router, shard, |reply| GroupCall::OffsetDelete { group, partitions, reply })
        .await
        .unwrap_or(Err(ResponseError::CoordinatorNotAvailable.code()));
    let codes = match outcome {
        Err(code) => return OffsetDeleteResponse::default().with_error_code(code),
        Ok(codes) => codes,
    };
    let mut codes = codes.into_iter();
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let code = codes.next().unwrap_or(0);
                    let known = router.shard_of(&t.name, p.partition_index).is_some();
                    let code = if known { code } else { ResponseError::UnknownTopicOrPartition.code() };
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetDeleteResponseTopic::default().with_name(t.name).with_partitions(partitions)
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}
