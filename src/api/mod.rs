//! One module per Kafka API family. This file holds the table of served APIs and versions
//! (ApiVersions is generated from it) and the one `match` that routes a request to its handler.

pub mod configs;
pub mod fetch;
pub mod groups;
pub mod metadata;
pub mod offsets;
pub mod produce;
pub mod producer_id;
pub mod topics;
pub mod versions;

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};

use crate::protocol::codec::{self, FrameError};
use crate::router::Router;

/// A response as buffers to write in order (size prefix included).
pub type Response = Vec<Bytes>;

/// What the connection does once a request is handled.
pub enum Outcome {
    Send(Response),
    /// acks=0 produce: Kafka sends nothing back.
    Silent,
    /// The response could not be encoded: the client cannot be answered, so the connection
    /// closes rather than leave it waiting.
    Close,
}

/// A dispatched request: answered already, or being answered by a task.
pub enum Dispatched {
    Now(Outcome),
    Later(glommio::Task<Outcome>),
}

/// Every API pinion serves, with the versions it serves. Nothing else is advertised.
pub const SERVED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 13),
    (
        ApiKey::Fetch,
        crate::protocol::fetch_response::VERSION_MIN,
        crate::protocol::fetch_response::VERSION_MAX,
    ),
    (ApiKey::ListOffsets, 1, 10),
    (ApiKey::Metadata, 0, 13),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 6),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
];

pub fn served_versions(key: ApiKey) -> Option<(i16, i16)> {
    SERVED.iter().find(|(k, _, _)| *k == key).map(|&(_, min, max)| (min, max))
}

/// Decodes a request frame and starts answering it. Produce requests reach their shards before
/// this returns, so a connection's produce requests keep their order. An error here means the
/// frame is malformed and the connection must close. `connection` is the number the router
/// gave the connection.
pub async fn dispatch(
    router: &Rc<Router>,
    frame: Bytes,
    peer: &Rc<str>,
    connection: u64,
) -> Result<Dispatched, FrameError> {
    let parsed = codec::decode_header(frame)?;
    let (key, header) = (parsed.api_key, parsed.header);
    let version = header.request_api_version;
    let correlation_id = header.correlation_id;
    let supported = served_versions(key).is_some_and(|(min, max)| (min..=max).contains(&version));
    if key == ApiKey::ApiVersions && !supported {
        // Answered in the v0 layout, so a newer client can read the ranges and step down.
        return Ok(Dispatched::Now(Outcome::Send(vec![versions::unsupported_version_response(
            correlation_id,
        )?])));
    }
    if !supported {
        return Err(FrameError::Malformed {
            what: format!("{key:?} request"),
            reason: format!("version {version} is not served (served: {:?})", served_versions(key)),
        });
    }
    let request = codec::decode_body(key, version, parsed.body)?;
    let encode = move |body: ResponseKind| -> Outcome {
        match codec::encode_response(key, version, correlation_id, &body) {
            Ok(bytes) => Outcome::Send(vec![bytes]),
            Err(e) => {
                eprintln!("pinion: {e}");
                Outcome::Close
            }
        }
    };
    let router = router.clone();
    let later = |f: std::pin::Pin<Box<dyn std::future::Future<Output = Outcome>>>| {
        Ok(Dispatched::Later(glommio::spawn_local(f)))
    };
    match request {
        RequestKind::ApiVersions(_) => {
            Ok(Dispatched::Now(encode(ResponseKind::ApiVersions(versions::handle(version)))))
        }
        RequestKind::Produce(req) => {
            let silent = req.acks == 0;
            let pending = produce::send(&router, version, req).await;
            later(Box::pin(async move {
                let response = pending.finish().await;
                // acks=0 gets no response, but its request slot is held until the write is
                // done: without that, a fast producer could queue unbounded data in memory.
                if silent {
                    Outcome::Silent
                } else {
                    encode(ResponseKind::Produce(response))
                }
            }))
        }
        RequestKind::Fetch(req) => later(Box::pin(async move {
            Outcome::Send(fetch::handle(&router, connection, correlation_id, version, req).await)
        })),
        RequestKind::ListOffsets(req) => later(Box::pin(async move {
            encode(ResponseKind::ListOffsets(offsets::handle(&router, version, req).await))
        })),
        RequestKind::Metadata(req) => later(Box::pin(async move {
            encode(ResponseKind::Metadata(metadata::handle(&router, version, req).await))
        })),
        RequestKind::DescribeCluster(req) => Ok(Dispatched::Now(encode(ResponseKind::DescribeCluster(
            metadata::describe_cluster(&router, req),
        )))),
        RequestKind::CreateTopics(req) => later(Box::pin(async move {
            encode(ResponseKind::CreateTopics(topics::create(&router, version, req).await))
        })),
        RequestKind::DeleteTopics(req) => later(Box::pin(async move {
            encode(ResponseKind::DeleteTopics(topics::delete(&router, version, req).await))
        })),
        RequestKind::CreatePartitions(req) => later(Box::pin(async move {
            encode(ResponseKind::CreatePartitions(topics::create_partitions(&router, req).await))
        })),
        RequestKind::FindCoordinator(req) => Ok(Dispatched::Now(encode(ResponseKind::FindCoordinator(
            groups::find_coordinator(&router, version, req),
        )))),
        RequestKind::JoinGroup(req) => {
            let client_id = header.client_id.as_ref().map(|c| c.to_string()).unwrap_or_default();
            let host = peer.clone();
            later(Box::pin(async move {
                let client = groups::Client { client_id: &client_id, host: &host };
                encode(ResponseKind::JoinGroup(groups::join(&router, version, client, req).await))
            }))
        }
        RequestKind::SyncGroup(req) => later(Box::pin(async move {
            encode(ResponseKind::SyncGroup(groups::sync(&router, version, req).await))
        })),
        RequestKind::Heartbeat(req) => {
            later(Box::pin(
                async move { encode(ResponseKind::Heartbeat(groups::heartbeat(&router, req).await)) },
            ))
        }
        RequestKind::LeaveGroup(req) => later(Box::pin(async move {
            encode(ResponseKind::LeaveGroup(groups::leave(&router, version, req).await))
        })),
        RequestKind::OffsetCommit(req) => {
            later(Box::pin(
                async move { encode(ResponseKind::OffsetCommit(groups::commit(&router, req).await)) },
            ))
        }
        RequestKind::OffsetFetch(req) => later(Box::pin(async move {
            encode(ResponseKind::OffsetFetch(groups::fetch_offsets(&router, version, req).await))
        })),
        RequestKind::ListGroups(req) => later(Box::pin(async move {
            encode(ResponseKind::ListGroups(groups::list(&router, version, req).await))
        })),
        RequestKind::DescribeGroups(req) => later(Box::pin(async move {
            encode(ResponseKind::DescribeGroups(groups::describe(&router, version, req).await))
        })),
        RequestKind::DeleteGroups(req) => {
            later(Box::pin(
                async move { encode(ResponseKind::DeleteGroups(groups::delete(&router, req).await)) },
            ))
        }
        RequestKind::OffsetDelete(req) => later(Box::pin(async move {
            encode(ResponseKind::OffsetDelete(groups::delete_offsets(&router, req).await))
        })),
        RequestKind::InitProducerId(req) => later(Box::pin(async move {
            encode(ResponseKind::InitProducerId(producer_id::handle(&router, req).await))
        })),
        RequestKind::DescribeConfigs(req) => Ok(Dispatched::Now(encode(ResponseKind::DescribeConfigs(
            configs::describe(&router, version, req),
        )))),
        RequestKind::AlterConfigs(req) => {
            later(Box::pin(
                async move { encode(ResponseKind::AlterConfigs(configs::alter(&router, req).await)) },
            ))
        }
        RequestKind::IncrementalAlterConfigs(req) => later(Box::pin(async move {
            encode(ResponseKind::IncrementalAlterConfigs(configs::incremental_alter(&router, req).await))
        })),
        other => Err(FrameError::Malformed {
            what: format!("{key:?} request"),
            reason: format!("no handler for {:?}", std::mem::discriminant(&other)),
        }),
    }
}
