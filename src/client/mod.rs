//! A small, synchronous Kafka client for the command line: one blocking TCP connection per
//! broker, requests and responses from the kafka-protocol crate, versions negotiated with
//! ApiVersions. It speaks to any Kafka broker, not only pinion.
//!
//! `Client` knows the cluster (brokers, partition leaders, group coordinators); the modules below
//! build on it: `admin` for offsets and configs, `producer` and `consumer` for records, `group`
//! for consumer-group membership.

pub mod admin;
pub mod connection;
pub mod consumer;
pub mod error;
pub mod group;
pub mod producer;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{FindCoordinatorRequest, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

pub use connection::Connection;
pub use error::ClientError;

/// How long to wait between metadata requests while a new topic's leaders are being elected.
const METADATA_RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// One partition as metadata describes it.
#[derive(Debug, Clone)]
pub struct PartitionInfo {
    pub index: i32,
    /// -1 when the partition has no leader.
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub error: i16,
}

#[derive(Debug, Clone)]
pub struct TopicInfo {
    pub name: String,
    pub id: Uuid,
    pub internal: bool,
    pub partitions: Vec<PartitionInfo>,
}

#[derive(Debug, Clone)]
pub struct BrokerInfo {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

/// What a Metadata request tells about the cluster as a whole.
#[derive(Debug, Clone)]
pub struct ClusterInfo {
    pub cluster_id: Option<String>,
    pub controller: i32,
    pub brokers: Vec<BrokerInfo>,
}

pub struct Client {
    bootstrap: Vec<String>,
    timeout: Duration,
    /// The connection made to a bootstrap address, until metadata tells which broker it is.
    seed: Option<Connection>,
    nodes: HashMap<i32, Connection>,
    /// Broker id -> `host:port`, from the latest metadata.
    brokers: BTreeMap<i32, String>,
}

impl Client {
    /// Connects to the first reachable address of `bootstrap` (comma-separated `host:port`s).
    pub fn connect(bootstrap: &str, timeout: Duration) -> Result<Client, ClientError> {
        let bootstrap: Vec<String> =
            bootstrap.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
        let mut client =
            Client { bootstrap, timeout, seed: None, nodes: HashMap::new(), brokers: BTreeMap::new() };
        client.seed = Some(client.open_bootstrap()?);
        Ok(client)
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn open_bootstrap(&self) -> Result<Connection, ClientError> {
        let mut last = None;
        for addr in &self.bootstrap {
            match Connection::open(addr, self.timeout) {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Unreachable {
            addr: "(none)".into(),
            reason: "no bootstrap address was given".into(),
        }))
    }

    /// A connection to any broker, for requests every broker can answer.
    pub fn any(&mut self) -> Result<&mut Connection, ClientError> {
        if self.seed.as_ref().is_some_and(|c| !c.is_broken()) {
            return Ok(self.seed.as_mut().expect("checked above"));
        }
        self.nodes.retain(|_, c| !c.is_broken());
        if let Some(&id) = self.nodes.keys().next() {
            return Ok(self.nodes.get_mut(&id).expect("key just listed"));
        }
        self.seed = Some(self.open_bootstrap()?);
        Ok(self.seed.as_mut().expect("just set"))
    }

    /// The connection to broker `id`, opened on first use (or again after a failure).
    pub fn broker(&mut self, id: i32) -> Result<&mut Connection, ClientError> {
        if self.nodes.get(&id).is_some_and(|c| c.is_broken()) {
            self.nodes.remove(&id);
        }
        if !self.nodes.contains_key(&id) {
            let addr = match self.brokers.get(&id) {
                Some(a) => a.clone(),
                None => {
                    self.cluster()?;
                    self.brokers.get(&id).cloned().ok_or_else(|| ClientError::Unreachable {
                        addr: format!("broker {id}"),
                        reason: "the cluster metadata does not list it".into(),
                    })?
                }
            };
            // The bootstrap connection is reused once it is known to lead to this broker.
            let conn = match self.seed.take() {
                Some(seed) if seed.addr() == addr && !seed.is_broken() => seed,
                other => {
                    self.seed = other;
                    Connection::open(&addr, self.timeout)?
                }
            };
            self.nodes.insert(id, conn);
        }
        Ok(self.nodes.get_mut(&id).expect("inserted above"))
    }

    /// Sends a Metadata request for `topics` (`None`: every topic) and remembers the brokers.
    pub fn metadata(
        &mut self,
        topics: Option<&[String]>,
        auto_create: bool,
    ) -> Result<MetadataResponse, ClientError> {
        let conn = self.any()?;
        let version = conn.version_of::<MetadataRequest>()?;
        let topics = topics.map(|names| {
            names
                .iter()
                .map(|n| {
                    MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(n.clone()))))
                        .with_topic_id(Uuid::nil())
                })
                .collect()
        });
        // Metadata v0 asks for every topic with an empty list rather than a null one.
        let topics = match topics {
            None if version == 0 => Some(Vec::new()),
            t => t,
        };
        let request =
            MetadataRequest::default().with_topics(topics).with_allow_auto_topic_creation(auto_create);
        let response = conn.send_at(&request, version, Duration::ZERO)?;
        self.brokers = response.brokers.iter().map(|b| (b.node_id.0, format_addr(&b.host, b.port))).collect();
        Ok(response)
    }

    /// Brokers, controller and cluster id.
    pub fn cluster(&mut self) -> Result<ClusterInfo, ClientError> {
        let response = self.metadata(Some(&[]), false)?;
        Ok(ClusterInfo {
            cluster_id: response.cluster_id.map(|c| c.to_string()),
            controller: response.controller_id.0,
            brokers: response
                .brokers
                .iter()
                .map(|b| BrokerInfo {
                    id: b.node_id.0,
                    host: b.host.to_string(),
                    port: b.port,
                    rack: b.rack.as_ref().map(|r| r.to_string()),
                })
                .collect(),
        })
    }

    /// Every topic the cluster has.
    pub fn all_topics(&mut self) -> Result<Vec<TopicInfo>, ClientError> {
        let response = self.metadata(None, false)?;
        let mut topics: Vec<TopicInfo> =
            response.topics.into_iter().filter(|t| t.error_code == 0).map(topic_info).collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    /// The named topics, in the order asked. A topic that does not exist is an error; with
    /// `auto_create` the broker may create it first. Leaders still being elected for a new
    /// topic are waited for, up to the client's timeout.
    pub fn topics(&mut self, names: &[String], auto_create: bool) -> Result<Vec<TopicInfo>, ClientError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let response = self.metadata(Some(names), auto_create)?;
            let mut found = Vec::with_capacity(names.len());
            let mut retry = None;
            for name in names {
                let topic =
                    response.topics.iter().find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == name));
                let Some(topic) = topic else {
                    return Err(ClientError::UnknownTopic(name.clone()));
                };
                let code = topic.error_code;
                // Final even when auto-creation was asked for: a broker creating the topic
                // answers LEADER_NOT_AVAILABLE until it is ready, one that will not create it
                // UNKNOWN_TOPIC_OR_PARTITION.
                if code == ResponseError::UnknownTopicOrPartition.code() {
                    return Err(ClientError::UnknownTopic(name.clone()));
                }
                let leaderless = topic.partitions.iter().any(|p| p.leader_id.0 < 0);
                let retriable = ResponseError::try_from_code(code).is_some_and(|e| e.is_retriable());
                if retriable || (code == 0 && (leaderless || topic.partitions.is_empty())) {
                    retry = Some((name.clone(), code));
                    continue;
                }
                ClientError::check(code, None, || format!("topic {name:?}"))?;
                found.push(topic_info(topic.clone()));
            }
            match retry {
                None => return Ok(found),
                Some((name, code)) if Instant::now() >= deadline => {
                    // A topic without an error whose leaders are missing is LEADER_NOT_AVAILABLE.
                    let code = if code == 0 { ResponseError::LeaderNotAvailable.code() } else { code };
                    return Err(ClientError::Kafka {
                        context: format!("topic {name:?}"),
                        code,
                        message: None,
                    });
                }
                Some(_) => std::thread::sleep(METADATA_RETRY_BACKOFF),
            }
        }
    }

    /// The broker coordinating consumer group `group`.
    pub fn coordinator(&mut self, group: &str) -> Result<i32, ClientError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let conn = self.any()?;
            let version = conn.version_of::<FindCoordinatorRequest>()?;
            let key = StrBytes::from_string(group.to_string());
            // v4 and later look up a list of keys; earlier versions one key.
            let request = if version >= 4 {
                FindCoordinatorRequest::default().with_coordinator_keys(vec![key])
            } else {
                FindCoordinatorRequest::default().with_key(key)
            };
            let response = conn.send_at(&request, version, Duration::ZERO)?;
            let (code, message, node, host, port) = match response.coordinators.into_iter().next() {
                Some(c) if version >= 4 => (c.error_code, c.error_message, c.node_id.0, c.host, c.port),
                _ => (
                    response.error_code,
                    response.error_message,
                    response.node_id.0,
                    response.host,
                    response.port,
                ),
            };
            let retriable = ResponseError::try_from_code(code).is_some_and(|e| e.is_retriable());
            if retriable && Instant::now() < deadline {
                std::thread::sleep(METADATA_RETRY_BACKOFF);
                continue;
            }
            ClientError::check(code, message.as_ref(), || {
                format!("finding the coordinator of group {group:?}")
            })?;
            self.brokers.insert(node, format_addr(&host, port));
            return Ok(node);
        }
    }

    /// A connection to the coordinator of `group`.
    pub fn coordinator_connection(&mut self, group: &str) -> Result<&mut Connection, ClientError> {
        let node = self.coordinator(group)?;
        self.broker(node)
    }

    /// Ids of every broker in the latest metadata.
    pub fn broker_ids(&mut self) -> Result<Vec<i32>, ClientError> {
        if self.brokers.is_empty() {
            self.cluster()?;
        }
        Ok(self.brokers.keys().copied().collect())
    }
}

fn topic_info(t: kafka_protocol::messages::metadata_response::MetadataResponseTopic) -> TopicInfo {
    let mut partitions: Vec<PartitionInfo> = t
        .partitions
        .into_iter()
        .map(|p| PartitionInfo {
            index: p.partition_index,
            leader: p.leader_id.0,
            leader_epoch: p.leader_epoch,
            replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
            isr: p.isr_nodes.iter().map(|b| b.0).collect(),
            error: p.error_code,
        })
        .collect();
    partitions.sort_by_key(|p| p.index);
    TopicInfo {
        name: t.name.map(|n| n.0.to_string()).unwrap_or_default(),
        id: t.topic_id,
        internal: t.is_internal,
        partitions,
    }
}

/// `host:port`, with brackets around an IPv6 host.
pub fn format_addr(host: &str, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Wall-clock time in milliseconds since the epoch, Kafka's timestamp unit.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
