//! The Kafka-named configs pinion understands: broker configs (set with `--override`) and topic
//! configs (set per topic, defaulting to a broker synonym), with types, defaults and validation.
//! DescribeConfigs lists every entry of these tables.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Int,
    Long,
    Double,
    String,
    List,
}

impl Kind {
    /// DescribeConfigs v3+ `config_type` codes (Kafka's ConfigType).
    pub fn code(self) -> i8 {
        match self {
            Kind::Bool => 1,
            Kind::String => 2,
            Kind::Int => 3,
            Kind::Long => 5,
            Kind::Double => 6,
            Kind::List => 7,
        }
    }
}

/// One config: its Kafka name, type, default and (for topic configs) the broker config that
/// supplies the default.
#[derive(Debug)]
pub struct ConfigDef {
    pub name: &'static str,
    pub kind: Kind,
    /// `None` is a null default.
    pub default: Option<&'static str>,
    /// Allowed values for string and list configs; empty means anything.
    pub allowed: &'static [&'static str],
    pub min: Option<i64>,
    pub doc: &'static str,
}

const fn def(name: &'static str, kind: Kind, default: &'static str, doc: &'static str) -> ConfigDef {
    ConfigDef { name, kind, default: Some(default), allowed: &[], min: None, doc }
}

const fn ranged(
    name: &'static str,
    kind: Kind,
    default: &'static str,
    min: i64,
    doc: &'static str,
) -> ConfigDef {
    ConfigDef { name, kind, default: Some(default), allowed: &[], min: Some(min), doc }
}

const fn choice(
    name: &'static str,
    kind: Kind,
    default: &'static str,
    allowed: &'static [&'static str],
    doc: &'static str,
) -> ConfigDef {
    ConfigDef { name, kind, default: Some(default), allowed, min: None, doc }
}

const LONG_MAX: &str = "9223372036854775807";
const COMPRESSION: &[&str] = &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"];
const CLEANUP: &[&str] = &["delete", "compact"];
const TIMESTAMP: &[&str] = &["CreateTime", "LogAppendTime"];

/// Broker configs. Topic defaults refer to these by name (see `TOPIC_CONFIGS`).
pub static BROKER_CONFIGS: &[ConfigDef] = &[
    def(
        "auto.create.topics.enable",
        Kind::Bool,
        "true",
        "Create a topic when metadata for an unknown one is requested",
    ),
    ranged("num.partitions", Kind::Int, "1", 1, "Partitions of an auto-created topic"),
    ranged("default.replication.factor", Kind::Int, "1", 1, "Replication factor of an auto-created topic"),
    def("delete.topic.enable", Kind::Bool, "true", "Allow DeleteTopics"),
    ranged("message.max.bytes", Kind::Int, "1048588", 0, "Largest record batch accepted"),
    ranged("socket.request.max.bytes", Kind::Int, "104857600", 1, "Largest request frame accepted"),
    ranged("queued.max.requests", Kind::Int, "500", 1, "Requests in flight per connection"),
    choice("compression.type", Kind::String, "producer", COMPRESSION, "Compression of stored batches"),
    choice("log.cleanup.policy", Kind::List, "delete", CLEANUP, "Default cleanup policy"),
    ranged(
        "log.cleaner.delete.retention.ms",
        Kind::Long,
        "86400000",
        0,
        "How long delete tombstones are kept",
    ),
    ranged(
        "log.segment.delete.delay.ms",
        Kind::Long,
        "60000",
        0,
        "Delay before a deleted segment is removed",
    ),
    ranged(
        "log.flush.interval.messages",
        Kind::Long,
        LONG_MAX,
        1,
        "Messages between forced flushes for acks<all",
    ),
    ranged(
        "log.flush.interval.ms",
        Kind::Long,
        LONG_MAX,
        0,
        "Milliseconds between forced flushes for acks<all",
    ),
    ranged("log.index.interval.bytes", Kind::Int, "4096", 0, "Bytes between offset index entries"),
    ranged("log.index.size.max.bytes", Kind::Int, "10485760", 4, "Largest offset index"),
    ranged(
        "log.cleaner.max.compaction.lag.ms",
        Kind::Long,
        LONG_MAX,
        1,
        "Longest a record stays uncompacted",
    ),
    ranged("log.cleaner.min.compaction.lag.ms", Kind::Long, "0", 0, "Shortest a record stays uncompacted"),
    def("log.cleaner.min.cleanable.ratio", Kind::Double, "0.5", "Dirty ratio that triggers compaction"),
    choice("log.message.timestamp.type", Kind::String, "CreateTime", TIMESTAMP, "Whose timestamp is stored"),
    ranged(
        "log.message.timestamp.before.max.ms",
        Kind::Long,
        LONG_MAX,
        0,
        "How far in the past a timestamp may be",
    ),
    ranged(
        "log.message.timestamp.after.max.ms",
        Kind::Long,
        LONG_MAX,
        0,
        "How far in the future a timestamp may be",
    ),
    ranged("min.insync.replicas", Kind::Int, "1", 1, "Replicas that must acknowledge acks=all"),
    def("log.preallocate", Kind::Bool, "false", "Preallocate segment files"),
    ranged(
        "log.retention.bytes",
        Kind::Long,
        "-1",
        -1,
        "Partition size beyond which old segments are deleted",
    ),
    ranged("log.retention.ms", Kind::Long, "604800000", -1, "Age beyond which old segments are deleted"),
    ranged("log.segment.bytes", Kind::Int, "1073741824", 14, "Segment size that triggers a roll"),
    ranged("log.roll.jitter.ms", Kind::Long, "0", 0, "Random jitter on segment.ms"),
    ranged("log.roll.ms", Kind::Long, "604800000", 1, "Segment age that triggers a roll"),
    def("unclean.leader.election.enable", Kind::Bool, "false", "Allow unclean leader election"),
    ranged(
        "offsets.retention.minutes",
        Kind::Int,
        "10080",
        1,
        "How long committed offsets of an empty group are kept",
    ),
    ranged(
        "group.initial.rebalance.delay.ms",
        Kind::Int,
        "3000",
        0,
        "Wait for more members before the first rebalance",
    ),
    ranged(
        "group.min.session.timeout.ms",
        Kind::Int,
        "6000",
        0,
        "Smallest session timeout a member may ask for",
    ),
    ranged(
        "group.max.session.timeout.ms",
        Kind::Int,
        "1800000",
        0,
        "Largest session timeout a member may ask for",
    ),
    ranged(
        "offsets.topic.segment.bytes",
        Kind::Int,
        "104857600",
        1024,
        "Segment size of __consumer_offsets; once one is sealed the live state is snapshotted and it is deleted",
    ),
    ranged(
        "offsets.topic.num.partitions",
        Kind::Int,
        "8",
        1,
        "Partitions of __consumer_offsets (fixed when first created)",
    ),
];

/// Topic configs and the broker config each takes its default from.
pub static TOPIC_CONFIGS: &[(ConfigDef, &str)] = &[
    (
        choice("cleanup.policy", Kind::List, "delete", CLEANUP, "Retention policy: delete and/or compact"),
        "log.cleanup.policy",
    ),
    (
        choice("compression.type", Kind::String, "producer", COMPRESSION, "Compression of stored batches"),
        "compression.type",
    ),
    (
        ranged("delete.retention.ms", Kind::Long, "86400000", 0, "How long delete tombstones are kept"),
        "log.cleaner.delete.retention.ms",
    ),
    (
        ranged("file.delete.delay.ms", Kind::Long, "60000", 0, "Delay before a deleted segment is removed"),
        "log.segment.delete.delay.ms",
    ),
    (
        ranged("flush.messages", Kind::Long, LONG_MAX, 1, "Messages between forced flushes for acks<all"),
        "log.flush.interval.messages",
    ),
    (
        ranged("flush.ms", Kind::Long, LONG_MAX, 0, "Milliseconds between forced flushes for acks<all"),
        "log.flush.interval.ms",
    ),
    (
        ranged("index.interval.bytes", Kind::Int, "4096", 0, "Bytes between offset index entries"),
        "log.index.interval.bytes",
    ),
    (
        ranged("max.compaction.lag.ms", Kind::Long, LONG_MAX, 1, "Longest a record stays uncompacted"),
        "log.cleaner.max.compaction.lag.ms",
    ),
    (
        ranged("max.message.bytes", Kind::Int, "1048588", 0, "Largest record batch accepted"),
        "message.max.bytes",
    ),
    (
        choice("message.timestamp.type", Kind::String, "CreateTime", TIMESTAMP, "Whose timestamp is stored"),
        "log.message.timestamp.type",
    ),
    (
        ranged(
            "message.timestamp.before.max.ms",
            Kind::Long,
            LONG_MAX,
            0,
            "How far in the past a timestamp may be",
        ),
        "log.message.timestamp.before.max.ms",
    ),
    (
        ranged(
            "message.timestamp.after.max.ms",
            Kind::Long,
            LONG_MAX,
            0,
            "How far in the future a timestamp may be",
        ),
        "log.message.timestamp.after.max.ms",
    ),
    (
        def("min.cleanable.dirty.ratio", Kind::Double, "0.5", "Dirty ratio that triggers compaction"),
        "log.cleaner.min.cleanable.ratio",
    ),
    (
        ranged("min.compaction.lag.ms", Kind::Long, "0", 0, "Shortest a record stays uncompacted"),
        "log.cleaner.min.compaction.lag.ms",
    ),
    (
        ranged("min.insync.replicas", Kind::Int, "1", 1, "Replicas that must acknowledge acks=all"),
        "min.insync.replicas",
    ),
    (def("preallocate", Kind::Bool, "false", "Preallocate segment files"), "log.preallocate"),
    (
        ranged(
            "retention.bytes",
            Kind::Long,
            "-1",
            -1,
            "Partition size beyond which old segments are deleted",
        ),
        "log.retention.bytes",
    ),
    (
        ranged("retention.ms", Kind::Long, "604800000", -1, "Age beyond which old segments are deleted"),
        "log.retention.ms",
    ),
    (
        ranged("segment.bytes", Kind::Int, "1073741824", 14, "Segment size that triggers a roll"),
        "log.segment.bytes",
    ),
    (
        ranged("segment.index.bytes", Kind::Int, "10485760", 4, "Largest offset index"),
        "log.index.size.max.bytes",
    ),
    (ranged("segment.jitter.ms", Kind::Long, "0", 0, "Random jitter on segment.ms"), "log.roll.jitter.ms"),
    (ranged("segment.ms", Kind::Long, "604800000", 1, "Segment age that triggers a roll"), "log.roll.ms"),
    (
        def("unclean.leader.election.enable", Kind::Bool, "false", "Allow unclean leader election"),
        "unclean.leader.election.enable",
    ),
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigValueError {
    #[error("unknown config {name:?}")]
    Unknown { name: String },
    #[error("invalid value {value:?} for {name}: {reason}")]
    Invalid { name: String, value: String, reason: String },
}

pub fn broker_def(name: &str) -> Option<&'static ConfigDef> {
    BROKER_CONFIGS.iter().find(|d| d.name == name)
}

pub fn topic_def(name: &str) -> Option<&'static (ConfigDef, &'static str)> {
    TOPIC_CONFIGS.iter().find(|(d, _)| d.name == name)
}

/// Checks `value` against a definition.
pub fn validate(def: &ConfigDef, value: &str) -> Result<(), ConfigValueError> {
    let invalid = |reason: String| ConfigValueError::Invalid {
        name: def.name.to_string(),
        value: value.to_string(),
        reason,
    };
    if let Some(why) = not_offered(def.name, value) {
        return Err(invalid(why.into()));
    }
    let number = match def.kind {
        Kind::Bool => {
            return match value.to_ascii_lowercase().as_str() {
                "true" | "false" => Ok(()),
                _ => Err(invalid("expected true or false".into())),
            }
        }
        Kind::Int => value.parse::<i32>().map(i64::from).map_err(|_| invalid("expected an int".into()))?,
        Kind::Long => value.parse::<i64>().map_err(|_| invalid("expected a long".into()))?,
        Kind::Double => {
            return value.parse::<f64>().map(|_| ()).map_err(|_| invalid("expected a number".into()))
        }
        Kind::String | Kind::List => {
            let items: Vec<&str> = match def.kind {
                Kind::List => value.split(',').map(str::trim).collect(),
                _ => vec![value],
            };
            if !def.allowed.is_empty() {
                if let Some(bad) = items.iter().find(|v| !def.allowed.contains(v)) {
                    return Err(invalid(format!("{bad:?} is not one of {:?}", def.allowed)));
                }
            }
            return Ok(());
        }
    };
    match def.min {
        Some(min) if number < min => Err(invalid(format!("must be at least {min}"))),
        _ => Ok(()),
    }
}

/// Values Kafka accepts that pinion does not implement: refused with a reason rather than
/// accepted and ignored. Batches are stored as produced (no broker-side recompression), and
/// log compaction is not offered.
fn not_offered(name: &str, value: &str) -> Option<&'static str> {
    match name {
        "compression.type" if value != "producer" => {
            Some("pinion stores batches as the producer compressed them; only \"producer\" is supported")
        }
        "cleanup.policy" | "log.cleanup.policy" if value.split(',').any(|v| v.trim() == "compact") => {
            Some("log compaction is not supported; use \"delete\"")
        }
        _ => None,
    }
}

/// Broker configs: the `--override`s over the defaults.
#[derive(Debug, Clone, Default)]
pub struct BrokerConfig {
    overrides: BTreeMap<String, String>,
}

impl BrokerConfig {
    pub fn new(overrides: BTreeMap<String, String>) -> Result<BrokerConfig, ConfigValueError> {
        for (name, value) in &overrides {
            let def = broker_def(name).ok_or_else(|| ConfigValueError::Unknown { name: name.clone() })?;
            validate(def, value)?;
        }
        Ok(BrokerConfig { overrides })
    }

    /// The effective value and whether it was set explicitly.
    pub fn get(&self, name: &str) -> Option<(&str, bool)> {
        if let Some(v) = self.overrides.get(name) {
            return Some((v.as_str(), true));
        }
        broker_def(name).and_then(|d| d.default).map(|v| (v, false))
    }

    fn parsed<T: std::str::FromStr>(&self, name: &str) -> T {
        let raw = self.get(name).map(|(v, _)| v);
        match raw.and_then(|v| v.to_ascii_lowercase().parse().ok()) {
            Some(v) => v,
            // The table's defaults are valid and overrides were validated in `new`.
            None => panic!("broker config {name} has no valid value"),
        }
    }

    pub fn auto_create_topics(&self) -> bool {
        self.parsed("auto.create.topics.enable")
    }
    pub fn num_partitions(&self) -> i32 {
        self.parsed("num.partitions")
    }
    pub fn default_replication_factor(&self) -> i16 {
        self.parsed::<i32>("default.replication.factor") as i16
    }
    pub fn delete_topic_enable(&self) -> bool {
        self.parsed("delete.topic.enable")
    }
    pub fn socket_request_max_bytes(&self) -> usize {
        self.parsed::<i32>("socket.request.max.bytes") as usize
    }
    pub fn group_limits(&self) -> crate::group::state::Limits {
        crate::group::state::Limits {
            session_timeout_ms_min: self.parsed("group.min.session.timeout.ms"),
            session_timeout_ms_max: self.parsed("group.max.session.timeout.ms"),
            initial_rebalance_delay_ms: self.parsed::<i32>("group.initial.rebalance.delay.ms").max(0) as u64,
        }
    }
    pub fn offsets_retention_ms(&self) -> u64 {
        self.parsed::<i32>("offsets.retention.minutes").max(1) as u64 * 60_000
    }
    pub fn offsets_segment_bytes(&self) -> u64 {
        self.parsed::<i32>("offsets.topic.segment.bytes").max(1024) as u64
    }
    pub fn offsets_topic_partitions(&self) -> usize {
        self.parsed::<i32>("offsets.topic.num.partitions").max(1) as usize
    }
    pub fn queued_max_requests(&self) -> usize {
        self.parsed::<i32>("queued.max.requests") as usize
    }
}

/// The value of a topic config: the topic's own setting, else its broker synonym.
/// Returns the value and its DescribeConfigs source.
pub fn topic_value<'a>(
    topic: &'a BTreeMap<String, String>,
    broker: &'a BrokerConfig,
    name: &str,
) -> Option<(&'a str, ConfigSource)> {
    if let Some(v) = topic.get(name) {
        return Some((v.as_str(), ConfigSource::DynamicTopic));
    }
    let (_, synonym) = topic_def(name)?;
    let (v, explicit) = broker.get(synonym)?;
    Some((v, if explicit { ConfigSource::StaticBroker } else { ConfigSource::Default }))
}

/// Kafka's DescribeConfigs `config_source` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    DynamicTopic = 1,
    StaticBroker = 4,
    Default = 5,
}

/// What a partition's log needs to know from its topic's configs.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub max_message_bytes: usize,
    pub index_interval_bytes: u64,
    pub flush_messages: i64,
    pub flush_ms: i64,
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub log_append_time: bool,
}

impl LogConfig {
    pub fn resolve(topic: &BTreeMap<String, String>, broker: &BrokerConfig) -> LogConfig {
        let get = |name: &str| topic_value(topic, broker, name).map(|(v, _)| v).unwrap_or("");
        let long = |name: &str| get(name).parse::<i64>().unwrap_or(i64::MAX);
        LogConfig {
            segment_bytes: long("segment.bytes").max(14) as u64,
            segment_ms: long("segment.ms"),
            max_message_bytes: long("max.message.bytes").max(0) as usize,
            index_interval_bytes: long("index.interval.bytes").max(0) as u64,
            flush_messages: long("flush.messages"),
            flush_ms: long("flush.ms"),
            retention_ms: long("retention.ms"),
            retention_bytes: long("retention.bytes"),
            log_append_time: get("message.timestamp.type") == "LogAppendTime",
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig::resolve(&BTreeMap::new(), &BrokerConfig::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_is_valid_and_every_synonym_exists() {
        for d in BROKER_CONFIGS {
            validate(d, d.default.unwrap()).unwrap();
        }
        for (d, synonym) in TOPIC_CONFIGS {
            validate(d, d.default.unwrap()).unwrap();
            assert!(broker_def(synonym).is_some(), "{synonym}");
        }
    }

    #[test]
    fn topic_value_prefers_topic_then_override_then_default() {
        let broker =
            BrokerConfig::new([("log.retention.ms".to_string(), "1000".to_string())].into()).unwrap();
        let mut topic = BTreeMap::new();
        assert_eq!(topic_value(&topic, &broker, "retention.ms"), Some(("1000", ConfigSource::StaticBroker)));
        assert_eq!(
            topic_value(&topic, &broker, "segment.bytes"),
            Some(("1073741824", ConfigSource::Default))
        );
        topic.insert("retention.ms".to_string(), "5".to_string());
        assert_eq!(topic_value(&topic, &broker, "retention.ms"), Some(("5", ConfigSource::DynamicTopic)));
    }

    #[test]
    fn bad_values_are_rejected() {
        let d = &topic_def("cleanup.policy").unwrap().0;
        assert!(validate(d, "delete").is_ok());
        assert!(validate(d, "shred").is_err());
        assert!(validate(d, "compact,delete").is_err(), "compaction is refused, not ignored");
        assert!(validate(&topic_def("compression.type").unwrap().0, "gzip").is_err());
        let d = &topic_def("segment.bytes").unwrap().0;
        assert!(validate(d, "10").is_err());
        assert!(validate(d, "abc").is_err());
        assert!(BrokerConfig::new([("no.such".to_string(), "1".to_string())].into()).is_err());
    }
}
