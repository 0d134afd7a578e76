//! One blocking Kafka connection: framing, version negotiation through ApiVersions, and the
//! few admin calls the bench needs (Metadata, CreateTopics, ListOffsets). Requests and
//! responses are encoded by the kafka-protocol crate; only the produce hot path is hand-framed
//! (see `wire`).

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, CreateTopicsRequest, CreateTopicsResponse,
    ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use uuid::Uuid;

/// Largest response frame accepted; a bigger size prefix means the stream is out of step.
pub const RESPONSE_BYTES_MAX: usize = 1 << 30;
const SOCKET_BUFFER_BYTES: usize = 4 << 20;
/// Kafka error codes the bench treats specially.
pub const TOPIC_ALREADY_EXISTS: i16 = 36;
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// An API key with the version range the bench can speak.
pub struct Wanted {
    pub key: ApiKey,
    pub min: i16,
    pub max: i16,
}

pub struct Connection {
    /// Writes go straight to the socket (the produce path writes whole requests at once).
    pub stream: TcpStream,
    pub reader: BufReader<TcpStream>,
    pub client_id: String,
    next_correlation_id: i32,
    /// Version ranges the broker advertised, by API key.
    broker_versions: HashMap<i16, (i16, i16)>,
}

impl Connection {
    pub fn connect(addr: &str, client_id: &str) -> Result<Connection> {
        let socket_addr = addr
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve {addr}"))?
            .next()
            .ok_or_else(|| anyhow!("{addr} resolves to no address"))?;
        let stream = TcpStream::connect_timeout(&socket_addr, Duration::from_secs(10))
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        set_buffer_sizes(&stream);
        let reader = BufReader::with_capacity(256 << 10, stream.try_clone()?);
        let mut conn = Connection {
            stream,
            reader,
            client_id: client_id.to_string(),
            next_correlation_id: 1,
            broker_versions: HashMap::new(),
        };
        conn.negotiate().with_context(|| format!("ApiVersions with {addr}"))?;
        Ok(conn)
    }

    fn negotiate(&mut self) -> Result<()> {
        // v3 first; a broker that does not know it answers in v0 form, so retry with v0.
        let first: Result<ApiVersionsResponse> = self.call(ApiKey::ApiVersions, 3, &api_versions_request());
        let response = match first {
            Ok(r) if r.error_code == 0 => r,
            _ => self.call(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default())?,
        };
        if response.error_code != 0 {
            bail!("ApiVersions failed with error code {}", response.error_code);
        }
        self.broker_versions =
            response.api_keys.iter().map(|k| (k.api_key, (k.min_version, k.max_version))).collect();
        Ok(())
    }

    /// The highest version both sides speak.
    pub fn version(&self, wanted: &Wanted) -> Result<i16> {
        let (min, max) = *self
            .broker_versions
            .get(&(wanted.key as i16))
            .ok_or_else(|| anyhow!("the broker does not serve {:?}", wanted.key))?;
        let version = max.min(wanted.max);
        if version < min.max(wanted.min) {
            bail!(
                "no common {:?} version: the broker serves v{min}-{max}, the bench v{}-{}",
                wanted.key,
                wanted.min,
                wanted.max
            );
        }
        Ok(version)
    }

    pub fn next_correlation_id(&mut self) -> i32 {
        let id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        id
    }

    /// Encodes a request with its header and size prefix.
    pub fn encode_request<T: Encodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        body: &T,
    ) -> Result<(i32, Bytes)> {
        let correlation_id = self.next_correlation_id();
        let mut buf = BytesMut::with_capacity(256);
        buf.put_i32(0);
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_string(self.client_id.clone())))
            .encode(&mut buf, key.request_header_version(version))?;
        body.encode(&mut buf, version)?;
        let size = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        Ok((correlation_id, buf.freeze()))
    }

    /// Replaces the read buffer with one of `bytes` (nothing may be buffered yet). A large one
    /// lets many small responses arrive in one system call; a consumer's responses are large and
    /// come one at a time, and a large buffer would only add a copy of each response's first
    /// `bytes` (the read of its size prefix fills the buffer with them).
    pub fn set_read_buffer(&mut self, bytes: usize) -> Result<()> {
        if !self.reader.buffer().is_empty() {
            bail!("a response is being read");
        }
        self.reader = BufReader::with_capacity(bytes, self.stream.try_clone()?);
        Ok(())
    }

    /// Sends one request and waits for its response (nothing else may be in flight).
    pub fn call<T: Encodable, R: Decodable>(&mut self, key: ApiKey, version: i16, body: &T) -> Result<R> {
        let (correlation_id, frame) = self.encode_request(key, version, body)?;
        self.stream.write_all(&frame)?;
        let response = read_frame(&mut self.reader)?;
        decode_response(key, version, correlation_id, response)
    }
}

fn api_versions_request() -> ApiVersionsRequest {
    ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("pinion-bench"))
        .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")))
}

fn set_buffer_sizes(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let bytes = SOCKET_BUFFER_BYTES as libc::c_int;
    for option in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        // SAFETY: setsockopt reads an int of the given size; failure only leaves the default.
        unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&bytes as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

/// Reads one size-prefixed frame, without the prefix. The buffer is sized exactly, so a
/// multi-megabyte fetch response is read in place with no copy.
pub fn read_frame(reader: &mut impl Read) -> Result<Bytes> {
    let mut size = [0u8; 4];
    reader.read_exact(&mut size).context("reading a response size")?;
    let size = i32::from_be_bytes(size);
    if size < 4 || size as usize > RESPONSE_BYTES_MAX {
        bail!("response size prefix {size} is out of range: the connection is out of step");
    }
    let mut frame = Vec::with_capacity(size as usize);
    let read = reader.take(size as u64).read_to_end(&mut frame).context("reading a response")?;
    if read != size as usize {
        bail!("the broker closed the connection in the middle of a response");
    }
    Ok(Bytes::from(frame))
}

/// Decodes a response frame, checking it answers the request with `correlation_id`.
pub fn decode_response<R: Decodable>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    mut frame: Bytes,
) -> Result<R> {
    let header = ResponseHeader::decode(&mut frame, key.response_header_version(version))?;
    if header.correlation_id != correlation_id {
        bail!(
            "{key:?} response carries correlation id {} where {correlation_id} was expected",
            header.correlation_id
        );
    }
    R::decode(&mut frame, version).with_context(|| format!("decoding a {key:?} v{version} response"))
}

/// A topic as Metadata describes it, with the address of each partition's leader.
#[derive(Debug, Clone)]
pub struct TopicInfo {
    pub name: String,
    pub id: Uuid,
    /// Partition indexes in order.
    pub partitions: Vec<i32>,
    /// host:port of the leader of every partition (all equal on a single broker).
    pub leader: String,
}

const METADATA: Wanted = Wanted { key: ApiKey::Metadata, min: 1, max: 12 };
const CREATE_TOPICS: Wanted = Wanted { key: ApiKey::CreateTopics, min: 2, max: 7 };
const LIST_OFFSETS: Wanted = Wanted { key: ApiKey::ListOffsets, min: 1, max: 8 };

/// Looks the topic up; `None` if it does not exist.
pub fn describe_topic(conn: &mut Connection, topic: &str) -> Result<Option<TopicInfo>> {
    let version = conn.version(&METADATA)?;
    let request = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_string(topic.into()))))
        ]))
        .with_allow_auto_topic_creation(false);
    let response: MetadataResponse = conn.call(ApiKey::Metadata, version, &request)?;
    let Some(t) = response.topics.first() else { bail!("Metadata returned no topic for {topic}") };
    match t.error_code {
        0 => {}
        3 => return Ok(None), // UNKNOWN_TOPIC_OR_PARTITION
        5 => return Ok(None), // LEADER_NOT_AVAILABLE: still being created
        code => bail!("Metadata for {topic} failed with error code {code}"),
    }
    let brokers: HashMap<BrokerId, String> =
        response.brokers.iter().map(|b| (b.node_id, format!("{}:{}", b.host.as_str(), b.port))).collect();
    let mut partitions: Vec<(i32, BrokerId)> =
        t.partitions.iter().map(|p| (p.partition_index, p.leader_id)).collect();
    partitions.sort_unstable();
    let mut leaders: Vec<BrokerId> = partitions.iter().map(|p| p.1).collect();
    leaders.sort_unstable();
    leaders.dedup();
    if leaders.iter().any(|l| l.0 < 0) || partitions.is_empty() {
        return Ok(None);
    }
    if leaders.len() > 1 {
        bail!(
            "the partitions of {topic} are led by {} brokers; the bench drives one broker (run one bench per broker)",
            leaders.len()
        );
    }
    let leader = brokers
        .get(&leaders[0])
        .cloned()
        .ok_or_else(|| anyhow!("leader {:?} not among brokers", leaders[0]))?;
    Ok(Some(TopicInfo {
        name: topic.to_string(),
        id: t.topic_id,
        partitions: partitions.iter().map(|p| p.0).collect(),
        leader,
    }))
}

/// Creates the topic (RF 1) unless it exists, and waits until every partition has a leader.
pub fn ensure_topic(conn: &mut Connection, topic: &str, partitions: i32) -> Result<TopicInfo> {
    if let Some(info) = describe_topic(conn, topic)? {
        if info.partitions.len() != partitions as usize {
            eprintln!(
                "pinion-bench: topic {topic} exists with {} partitions (asked for {partitions}); using it as it is",
                info.partitions.len()
            );
        }
        return Ok(info);
    }
    let version = conn.version(&CREATE_TOPICS)?;
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.into())))
            .with_num_partitions(partitions)
            .with_replication_factor(1)])
        .with_timeout_ms(ADMIN_TIMEOUT.as_millis() as i32);
    let response: CreateTopicsResponse = conn.call(ApiKey::CreateTopics, version, &request)?;
    for t in &response.topics {
        if t.error_code != 0 && t.error_code != TOPIC_ALREADY_EXISTS {
            let message = t.error_message.as_ref().map(|m| m.to_string()).unwrap_or_default();
            bail!("CreateTopics {topic} failed with error code {}: {message}", t.error_code);
        }
    }
    let deadline = Instant::now() + ADMIN_TIMEOUT;
    loop {
        if let Some(info) = describe_topic(conn, topic)? {
            if info.partitions.len() == partitions as usize {
                return Ok(info);
            }
        }
        if Instant::now() > deadline {
            bail!("topic {topic} has no leader for all {partitions} partitions after {ADMIN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// ListOffsets for every partition of a topic: `timestamp` -2 is the log start, -1 the end.
pub fn list_offsets(conn: &mut Connection, topic: &TopicInfo, timestamp: i64) -> Result<HashMap<i32, i64>> {
    let version = conn.version(&LIST_OFFSETS)?;
    let request = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
        ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.name.clone())))
            .with_partitions(
                topic
                    .partitions
                    .iter()
                    .map(|&p| {
                        ListOffsetsPartition::default().with_partition_index(p).with_timestamp(timestamp)
                    })
                    .collect(),
            ),
    ]);
    let response: ListOffsetsResponse = conn.call(ApiKey::ListOffsets, version, &request)?;
    let mut offsets = HashMap::new();
    for t in &response.topics {
        for p in &t.partitions {
            if p.error_code != 0 {
                bail!(
                    "ListOffsets {}-{} failed with error code {}",
                    topic.name,
                    p.partition_index,
                    p.error_code
                );
            }
            offsets.insert(p.partition_index, p.offset);
        }
    }
    if offsets.len() != topic.partitions.len() {
        bail!("ListOffsets answered for {} of {} partitions", offsets.len(), topic.partitions.len());
    }
    Ok(offsets)
}
