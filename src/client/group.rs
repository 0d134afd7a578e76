//! Consumer groups: membership in the classic group protocol (join, sync with a range
//! assignment, heartbeat, commit, leave) and the administrative side (list, describe, committed
//! offsets, delete).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, DeleteGroupsRequest, DescribeGroupsRequest,
    GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest, OffsetCommitRequest,
    OffsetFetchRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, Message, StrBytes};

use super::admin::topic_name;
use super::error::codes;
use super::{Client, ClientError};

/// How long the coordinator keeps a member that stopped heartbeating.
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the coordinator waits for every member to rejoin during a rebalance.
const REBALANCE_TIMEOUT: Duration = Duration::from_secs(30);
/// A third of the session timeout, as Kafka's clients do.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3);
/// Join attempts (each answered with an error that calls for another) before giving up.
const JOIN_ATTEMPTS_MAX: usize = 10;
/// The assignor this client offers; Kafka's Java, Python and librdkafka clients all know it.
const RANGE: &str = "range";
const CONSUMER: &str = "consumer";

fn group_id(group: &str) -> GroupId {
    GroupId(StrBytes::from_string(group.to_string()))
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// Encodes an embedded consumer-protocol message: its version as an int16, then the message.
fn encode_versioned<T: Encodable>(message: &T, version: i16) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    message.encode(&mut buf, version).expect("consumer protocol messages always encode");
    buf.freeze()
}

/// Decodes an embedded consumer-protocol message. A version newer than the codec knows is read
/// as the newest known one: later versions only add fields at the end.
fn decode_versioned<T: Decodable + Message>(mut data: Bytes) -> Option<T> {
    if data.len() < 2 {
        return None;
    }
    let version = data.get_i16().clamp(T::VERSIONS.min, T::VERSIONS.max);
    T::decode(&mut data, version).ok()
}

/// Topic -> partitions, sorted.
pub type Assignment = BTreeMap<String, Vec<i32>>;

/// Kafka's range assignor: for each topic, its members sorted by id get consecutive ranges of
/// partitions, the first ones one partition more when the count does not divide evenly.
pub fn range_assign(
    subscriptions: &BTreeMap<String, Vec<String>>,
    partition_counts: &BTreeMap<String, i32>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> =
        subscriptions.keys().map(|m| (m.clone(), Assignment::new())).collect();
    for (topic, &count) in partition_counts {
        let members: Vec<&String> =
            subscriptions.iter().filter(|(_, topics)| topics.contains(topic)).map(|(m, _)| m).collect();
        if members.is_empty() || count <= 0 {
            continue;
        }
        let (per, extra) = (count as usize / members.len(), count as usize % members.len());
        for (i, member) in members.into_iter().enumerate() {
            let start = per * i + i.min(extra);
            let len = per + usize::from(i < extra);
            if len > 0 {
                let partitions = (start..start + len).map(|p| p as i32).collect();
                out.get_mut(member).expect("every member has an entry").insert(topic.clone(), partitions);
            }
        }
    }
    out
}

/// What a heartbeat found out.
#[derive(Debug, PartialEq, Eq)]
pub enum Heartbeat {
    /// Nothing to do (also when no heartbeat was due yet).
    Fine,
    /// The group is rebalancing: commit, then `rejoin`.
    Rebalance,
}

/// This process as a member of a consumer group.
pub struct Member {
    group: String,
    topics: Vec<String>,
    member_id: String,
    generation: i32,
    coordinator: i32,
    last_heartbeat: Instant,
    pub assignment: Assignment,
}

impl Member {
    /// Joins `group` subscribed to `topics` and waits for this member's assignment.
    pub fn join(client: &mut Client, group: &str, topics: &[String]) -> Result<Member, ClientError> {
        let mut member = Member {
            group: group.to_string(),
            topics: topics.to_vec(),
            member_id: String::new(),
            generation: -1,
            coordinator: -1,
            last_heartbeat: Instant::now(),
            assignment: Assignment::new(),
        };
        member.rejoin(client)?;
        Ok(member)
    }

    /// Joins again (after a rebalance was announced) and takes the new assignment.
    pub fn rejoin(&mut self, client: &mut Client) -> Result<(), ClientError> {
        let subscription = encode_versioned(
            &ConsumerProtocolSubscription::default().with_topics(self.topics.iter().map(|t| s(t)).collect()),
            0,
        );
        for _ in 0..JOIN_ATTEMPTS_MAX {
            self.coordinator = client.coordinator(&self.group)?;
            let conn = client.broker(self.coordinator)?;
            let version = conn.version_of::<JoinGroupRequest>()?;
            let request = JoinGroupRequest::default()
                .with_group_id(group_id(&self.group))
                .with_session_timeout_ms(SESSION_TIMEOUT.as_millis() as i32)
                .with_rebalance_timeout_ms(REBALANCE_TIMEOUT.as_millis() as i32)
                .with_member_id(s(&self.member_id))
                .with_protocol_type(s(CONSUMER))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(s(RANGE))
                    .with_metadata(subscription.clone())]);
            let joined = conn.send_at(&request, version, REBALANCE_TIMEOUT)?;
            match ResponseError::try_from_code(joined.error_code) {
                None => {}
                // v4+: the first join only hands out a member id to join with.
                Some(ResponseError::MemberIdRequired) => {
                    self.member_id = joined.member_id.to_string();
                    continue;
                }
                Some(ResponseError::UnknownMemberId) => {
                    self.member_id.clear();
                    continue;
                }
                Some(e) if e.is_retriable() || e == ResponseError::RebalanceInProgress => continue,
                Some(_) => {
                    return ClientError::check(joined.error_code, None, || {
                        format!("joining group {:?}", self.group)
                    })
                }
            }
            self.member_id = joined.member_id.to_string();
            self.generation = joined.generation_id;
            let protocol =
                joined.protocol_name.as_ref().map(|p| p.to_string()).unwrap_or_else(|| RANGE.into());
            let assignments = if joined.leader == joined.member_id {
                self.assign(client, &joined.members)?
            } else {
                Vec::new()
            };
            let conn = client.broker(self.coordinator)?;
            let request = SyncGroupRequest::default()
                .with_group_id(group_id(&self.group))
                .with_generation_id(self.generation)
                .with_member_id(s(&self.member_id))
                .with_protocol_type(Some(s(CONSUMER)))
                .with_protocol_name(Some(s(&protocol)))
                .with_assignments(assignments);
            let version = conn.version_of::<SyncGroupRequest>()?;
            let synced = conn.send_at(&request, version, REBALANCE_TIMEOUT)?;
            match ResponseError::try_from_code(synced.error_code) {
                None => {}
                Some(ResponseError::UnknownMemberId) => {
                    self.member_id.clear();
                    continue;
                }
                Some(e) if e.is_retriable() || e == ResponseError::RebalanceInProgress => continue,
                Some(ResponseError::IllegalGeneration) => continue,
                Some(_) => {
                    return ClientError::check(synced.error_code, None, || {
                        format!("syncing group {:?}", self.group)
                    })
                }
            }
            let assignment =
                decode_versioned::<ConsumerProtocolAssignment>(synced.assignment).unwrap_or_default();
            self.assignment = assignment
                .assigned_partitions
                .into_iter()
                .map(|t| {
                    let mut partitions = t.partitions;
                    partitions.sort_unstable();
                    (t.topic.to_string(), partitions)
                })
                .collect();
            self.last_heartbeat = Instant::now();
            return Ok(());
        }
        Err(ClientError::Kafka {
            context: format!("joining group {:?} ({JOIN_ATTEMPTS_MAX} attempts)", self.group),
            code: ResponseError::RebalanceInProgress.code(),
            message: None,
        })
    }

    /// As the group's leader: assigns every member's subscribed partitions with `range_assign`.
    fn assign(
        &self,
        client: &mut Client,
        members: &[kafka_protocol::messages::join_group_response::JoinGroupResponseMember],
    ) -> Result<Vec<SyncGroupRequestAssignment>, ClientError> {
        let subscriptions: BTreeMap<String, Vec<String>> = members
            .iter()
            .map(|m| {
                let topics = decode_versioned::<ConsumerProtocolSubscription>(m.metadata.clone())
                    .map(|sub| sub.topics.iter().map(|t| t.to_string()).collect())
                    .unwrap_or_default();
                (m.member_id.to_string(), topics)
            })
            .collect();
        let topics: BTreeSet<String> = subscriptions.values().flatten().cloned().collect();
        let topics: Vec<String> = topics.into_iter().collect();
        let response = client.metadata(Some(&topics), false)?;
        let counts: BTreeMap<String, i32> = response
            .topics
            .iter()
            .filter(|t| t.error_code == 0)
            .filter_map(|t| Some((t.name.as_ref()?.to_string(), t.partitions.len() as i32)))
            .collect();
        Ok(range_assign(&subscriptions, &counts)
            .into_iter()
            .map(|(member, topics)| {
                let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(
                    topics
                        .into_iter()
                        .map(|(t, p)| AssignedTopic::default().with_topic(topic_name(&t)).with_partitions(p))
                        .collect(),
                );
                SyncGroupRequestAssignment::default()
                    .with_member_id(s(&member))
                    .with_assignment(encode_versioned(&assignment, 0))
            })
            .collect())
    }

    /// Sends a heartbeat if one is due.
    pub fn heartbeat(&mut self, client: &mut Client) -> Result<Heartbeat, ClientError> {
        if self.last_heartbeat.elapsed() < HEARTBEAT_INTERVAL {
            return Ok(Heartbeat::Fine);
        }
        self.last_heartbeat = Instant::now();
        let request = HeartbeatRequest::default()
            .with_group_id(group_id(&self.group))
            .with_generation_id(self.generation)
            .with_member_id(s(&self.member_id));
        let response = client.broker(self.coordinator)?.send(&request)?;
        match ResponseError::try_from_code(response.error_code) {
            None => Ok(Heartbeat::Fine),
            Some(ResponseError::UnknownMemberId) => {
                self.member_id.clear();
                Ok(Heartbeat::Rebalance)
            }
            Some(
                ResponseError::RebalanceInProgress
                | ResponseError::IllegalGeneration
                | ResponseError::NotCoordinator
                | ResponseError::CoordinatorNotAvailable,
            ) => Ok(Heartbeat::Rebalance),
            Some(_) => ClientError::check(response.error_code, None, || {
                format!("heartbeat to group {:?}", self.group)
            })
            .map(|()| Heartbeat::Fine),
        }
    }

    /// Commits `offsets` (topic, partition, next offset to read) as this member.
    pub fn commit(&self, client: &mut Client, offsets: &[(String, i32, i64)]) -> Result<(), ClientError> {
        commit_offsets(client, &self.group, self.generation, &self.member_id, offsets)
    }

    /// Leaves the group so that the others get its partitions at once.
    pub fn leave(self, client: &mut Client) -> Result<(), ClientError> {
        let conn = client.broker(self.coordinator)?;
        let version = conn.version_of::<LeaveGroupRequest>()?;
        // v3 and later name the leaving members in a list.
        let request = if version >= 3 {
            LeaveGroupRequest::default()
                .with_group_id(group_id(&self.group))
                .with_members(vec![MemberIdentity::default().with_member_id(s(&self.member_id))])
        } else {
            LeaveGroupRequest::default()
                .with_group_id(group_id(&self.group))
                .with_member_id(s(&self.member_id))
        };
        let response = conn.send_at(&request, version, Duration::ZERO)?;
        ClientError::check(response.error_code, None, || format!("leaving group {:?}", self.group))
    }
}

/// Commits `offsets` for `group`. Generation -1 with an empty member id is the commit of a
/// client that is not a member, which brokers accept only while the group has no members.
pub fn commit_offsets(
    client: &mut Client,
    group: &str,
    generation: i32,
    member_id: &str,
    offsets: &[(String, i32, i64)],
) -> Result<(), ClientError> {
    let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for (topic, partition, offset) in offsets {
        topics.entry(topic).or_default().push(
            OffsetCommitRequestPartition::default()
                .with_partition_index(*partition)
                .with_committed_offset(*offset),
        );
    }
    let request = OffsetCommitRequest::default()
        .with_group_id(group_id(group))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member_id))
        .with_topics(
            topics
                .into_iter()
                .map(|(t, p)| OffsetCommitRequestTopic::default().with_name(topic_name(t)).with_partitions(p))
                .collect(),
        );
    let response = client.coordinator_connection(group)?.send(&request)?;
    for t in response.topics {
        for p in t.partitions {
            ClientError::check(p.error_code, None, || {
                format!("committing offsets of group {group:?} for {}/{}", t.name.as_str(), p.partition_index)
            })?;
        }
    }
    Ok(())
}

/// Every committed offset of `group`: (topic, partition) -> offset.
pub fn committed_offsets(
    client: &mut Client,
    group: &str,
) -> Result<BTreeMap<(String, i32), i64>, ClientError> {
    let conn = client.coordinator_connection(group)?;
    let version = conn.version_of::<OffsetFetchRequest>()?;
    let context = || format!("reading the offsets of group {group:?}");
    let mut out = BTreeMap::new();
    // v8 and later ask about a list of groups; earlier versions about one. Null topics: all.
    if version >= 8 {
        let request = OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
            .with_group_id(group_id(group))
            .with_topics(None)]);
        let response = conn.send_at(&request, version, Duration::ZERO)?;
        for g in response.groups {
            ClientError::check(g.error_code, None, context)?;
            for t in g.topics {
                for p in t.partitions {
                    if p.error_code == 0 && p.committed_offset >= 0 {
                        out.insert((t.name.to_string(), p.partition_index), p.committed_offset);
                    }
                }
            }
        }
    } else {
        let request = OffsetFetchRequest::default().with_group_id(group_id(group)).with_topics(None);
        let response = conn.send_at(&request, version, Duration::ZERO)?;
        ClientError::check(response.error_code, None, context)?;
        for t in response.topics {
            for p in t.partitions {
                if p.error_code == 0 && p.committed_offset >= 0 {
                    out.insert((t.name.to_string(), p.partition_index), p.committed_offset);
                }
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Clone)]
pub struct ListedGroup {
    pub group: String,
    pub protocol_type: String,
    /// Empty when the broker does not report states (ListGroups before v4).
    pub state: String,
}

/// Every group of every broker.
pub fn list_groups(client: &mut Client) -> Result<Vec<ListedGroup>, ClientError> {
    let mut groups = BTreeMap::new();
    for broker in client.broker_ids()? {
        let response = client.broker(broker)?.send(&ListGroupsRequest::default())?;
        ClientError::check(response.error_code, None, || format!("listing the groups of broker {broker}"))?;
        for g in response.groups {
            let group = g.group_id.to_string();
            groups.insert(
                group.clone(),
                ListedGroup {
                    group,
                    protocol_type: g.protocol_type.to_string(),
                    state: g.group_state.to_string(),
                },
            );
        }
    }
    Ok(groups.into_values().collect())
}

#[derive(Debug, Clone)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    pub assignment: Assignment,
}

#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub group: String,
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

pub fn describe_group(client: &mut Client, group: &str) -> Result<GroupDescription, ClientError> {
    let request = DescribeGroupsRequest::default().with_groups(vec![group_id(group)]);
    let response = client.coordinator_connection(group)?.send(&request)?;
    let g = response.groups.into_iter().next().ok_or_else(|| ClientError::Protocol {
        addr: "coordinator".into(),
        what: "DescribeGroups response".into(),
        reason: "it describes no group".into(),
    })?;
    // DescribeGroups v6 answers GROUP_ID_NOT_FOUND for an unknown group; earlier versions the
    // state Dead. Both read as Dead here.
    if g.error_code == codes::GROUP_ID_NOT_FOUND {
        return Ok(GroupDescription {
            group: group.to_string(),
            state: "Dead".into(),
            protocol_type: String::new(),
            protocol: String::new(),
            members: Vec::new(),
        });
    }
    ClientError::check(g.error_code, g.error_message.as_ref(), || format!("describing group {group:?}"))?;
    let consumer = g.protocol_type.as_str() == CONSUMER;
    let members = g
        .members
        .into_iter()
        .map(|m| MemberDescription {
            member_id: m.member_id.to_string(),
            instance_id: m.group_instance_id.map(|i| i.to_string()),
            client_id: m.client_id.to_string(),
            host: m.client_host.to_string(),
            assignment: if consumer {
                decode_versioned::<ConsumerProtocolAssignment>(m.member_assignment)
                    .map(|a| {
                        a.assigned_partitions
                            .into_iter()
                            .map(|t| (t.topic.to_string(), t.partitions))
                            .collect()
                    })
                    .unwrap_or_default()
            } else {
                Assignment::new()
            },
        })
        .collect();
    Ok(GroupDescription {
        group: g.group_id.to_string(),
        state: g.group_state.to_string(),
        protocol_type: g.protocol_type.to_string(),
        protocol: g.protocol_data.to_string(),
        members,
    })
}

/// Deletes each of `groups` at its coordinator.
pub fn delete_groups(
    client: &mut Client,
    groups: &[String],
) -> Result<Vec<(String, Result<(), ClientError>)>, ClientError> {
    let mut out = Vec::new();
    for group in groups {
        let request = DeleteGroupsRequest::default().with_groups_names(vec![group_id(group)]);
        let response = client.coordinator_connection(group)?.send(&request)?;
        for r in response.results {
            let result = ClientError::check(r.error_code, None, || format!("deleting group {group:?}"));
            out.push((r.group_id.to_string(), result));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs(list: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        list.iter().map(|(m, t)| (m.to_string(), t.iter().map(|x| x.to_string()).collect())).collect()
    }

    #[test]
    fn range_assignment_matches_kafka() {
        let counts: BTreeMap<String, i32> = [("a".to_string(), 5), ("b".to_string(), 2)].into();
        let out = range_assign(&subs(&[("m1", &["a", "b"]), ("m2", &["a", "b"])]), &counts);
        assert_eq!(out["m1"]["a"], vec![0, 1, 2]);
        assert_eq!(out["m2"]["a"], vec![3, 4]);
        assert_eq!(out["m1"]["b"], vec![0]);
        assert_eq!(out["m2"]["b"], vec![1]);
        // More members than partitions: the last ones get nothing; unsubscribed topics neither.
        let out =
            range_assign(&subs(&[("m1", &["b"]), ("m2", &["b"]), ("m3", &["b"]), ("m4", &["a"])]), &counts);
        assert_eq!(out["m1"]["b"], vec![0]);
        assert_eq!(out["m2"]["b"], vec![1]);
        assert!(out["m3"].is_empty());
        assert_eq!(out["m4"]["a"], vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn embedded_messages_round_trip_with_their_version() {
        let sub = ConsumerProtocolSubscription::default().with_topics(vec![s("t1"), s("t2")]);
        let bytes = encode_versioned(&sub, 0);
        assert_eq!(&bytes[..2], &[0, 0]);
        let back: ConsumerProtocolSubscription = decode_versioned(bytes).unwrap();
        assert_eq!(back.topics, vec![s("t1"), s("t2")]);
        assert!(decode_versioned::<ConsumerProtocolSubscription>(Bytes::from_static(&[0])).is_none());
    }
}
