//! What can go wrong talking to a broker, each with the facts that make a one-line message.

use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::protocol::StrBytes;

/// Kafka error codes the client acts on, by name.
pub mod codes {
    use kafka_protocol::error::ResponseError;

    pub const OFFSET_OUT_OF_RANGE: i16 = ResponseError::OffsetOutOfRange.code();
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = ResponseError::UnknownTopicOrPartition.code();
    pub const LEADER_NOT_AVAILABLE: i16 = ResponseError::LeaderNotAvailable.code();
    pub const NOT_LEADER_OR_FOLLOWER: i16 = ResponseError::NotLeaderOrFollower.code();
    pub const FENCED_LEADER_EPOCH: i16 = ResponseError::FencedLeaderEpoch.code();
    pub const UNKNOWN_LEADER_EPOCH: i16 = ResponseError::UnknownLeaderEpoch.code();
    pub const TOPIC_ALREADY_EXISTS: i16 = ResponseError::TopicAlreadyExists.code();
    pub const NON_EMPTY_GROUP: i16 = ResponseError::NonEmptyGroup.code();
    pub const GROUP_ID_NOT_FOUND: i16 = ResponseError::GroupIdNotFound.code();
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach broker {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("broker {addr} did not answer {what} within {}", format_duration(*after))]
    Timeout { addr: String, what: String, after: Duration },
    #[error("connection to broker {addr} failed during {what}: {reason}")]
    Connection { addr: String, what: String, reason: String },
    #[error("broker {addr} serves {api} versions {broker_min}-{broker_max}; this client speaks {client_min}-{client_max}")]
    Unsupported {
        addr: String,
        api: String,
        broker_min: i16,
        broker_max: i16,
        client_min: i16,
        client_max: i16,
    },
    #[error("broker {addr} sent a {what} this client cannot read: {reason}")]
    Protocol { addr: String, what: String, reason: String },
    #[error("topic {0:?} does not exist")]
    UnknownTopic(String),
    #[error("{context}: {}", describe_code(*code, message.as_deref()))]
    Kafka { context: String, code: i16, message: Option<String> },
}

impl ClientError {
    /// A Kafka error code from a response, `Ok` for 0.
    pub fn check(
        code: i16,
        message: Option<&StrBytes>,
        context: impl FnOnce() -> String,
    ) -> Result<(), ClientError> {
        if code == 0 {
            return Ok(());
        }
        Err(ClientError::Kafka { context: context(), code, message: message.map(|m| m.to_string()) })
    }

    /// The Kafka error code behind this error, if the broker sent one.
    pub fn code(&self) -> Option<i16> {
        match self {
            ClientError::Kafka { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Kafka's own name for an error code, e.g. `UNKNOWN_TOPIC_OR_PARTITION`.
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "NONE".to_string(),
        Some(ResponseError::Unknown(c)) => format!("UNKNOWN_ERROR_CODE_{c}"),
        Some(e) => {
            // The crate names variants in CamelCase; Kafka's documentation uses UPPER_SNAKE.
            let camel = format!("{e:?}");
            let mut out = String::with_capacity(camel.len() + 8);
            for (i, c) in camel.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    out.push('_');
                }
                out.push(c.to_ascii_uppercase());
            }
            out
        }
    }
}

fn describe_code(code: i16, message: Option<&str>) -> String {
    match message.filter(|m| !m.is_empty()) {
        Some(m) => format!("{} ({code}): {m}", error_name(code)),
        None => format!("{} ({code})", error_name(code)),
    }
}

/// `1.5s`, `250ms`, `2m`: how durations appear in messages and how `parse_duration` reads them.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) && ms > 0 {
        format!("{}s", ms / 1000)
    } else if ms >= 1000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_get_kafka_names() {
        assert_eq!(error_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(error_name(36), "TOPIC_ALREADY_EXISTS");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(error_name(9999), "UNKNOWN_ERROR_CODE_9999");
        let e = ClientError::Kafka { context: "creating topic \"a\"".into(), code: 36, message: None };
        assert_eq!(e.to_string(), "creating topic \"a\": TOPIC_ALREADY_EXISTS (36)");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(format_duration(Duration::from_secs(10)), "10s");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
    }
}
