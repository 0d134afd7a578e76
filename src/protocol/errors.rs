//! The one place where pinion's failures become Kafka error codes.

use kafka_protocol::error::ResponseError;

use crate::protocol::batch::BatchError;

/// Why a partition-level operation failed, with the facts that explain it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PartitionError {
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    #[error("offset {offset} is outside [{log_start}, {log_end}]")]
    OffsetOutOfRange { offset: i64, log_start: i64, log_end: i64 },
    #[error("batch of {size} bytes exceeds max.message.bytes {max}")]
    MessageTooLarge { size: usize, max: usize },
    #[error("invalid batch: {0}")]
    Batch(BatchError),
    #[error("storage error: {0}")]
    Storage(String),
    #[error("the partition is being deleted")]
    Deleting,
    #[error("out of order sequence number: expected {expected}, got {got}")]
    OutOfOrderSequence { expected: i32, got: i32 },
    #[error("producer epoch {got} is older than the current {current}")]
    StaleProducerEpoch { current: i16, got: i16 },
}

impl PartitionError {
    pub fn code(&self) -> i16 {
        let e = match self {
            PartitionError::UnknownTopicOrPartition | PartitionError::Deleting => {
                ResponseError::UnknownTopicOrPartition
            }
            PartitionError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
            PartitionError::MessageTooLarge { .. } => ResponseError::MessageTooLarge,
            PartitionError::Batch(BatchError::UnsupportedMagic { .. }) => {
                ResponseError::UnsupportedForMessageFormat
            }
            PartitionError::Batch(BatchError::BadRecordCount { .. }) => ResponseError::InvalidRecord,
            PartitionError::Batch(_) => ResponseError::CorruptMessage,
            PartitionError::Storage(_) => ResponseError::KafkaStorageError,
            PartitionError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
            PartitionError::StaleProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
        };
        e.code()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_errors_map_to_kafka_codes() {
        let crc = PartitionError::Batch(BatchError::CrcMismatch { stored: 1, computed: 2 });
        assert_eq!(crc.code(), 2); // CORRUPT_MESSAGE
        let magic = PartitionError::Batch(BatchError::UnsupportedMagic { magic: 1 });
        assert_eq!(magic.code(), 43); // UNSUPPORTED_FOR_MESSAGE_FORMAT
        assert_eq!(PartitionError::MessageTooLarge { size: 2, max: 1 }.code(), 10);
        assert_eq!(PartitionError::UnknownTopicOrPartition.code(), 3);
        let range = PartitionError::OffsetOutOfRange { offset: 9, log_start: 0, log_end: 1 };
        assert_eq!(range.code(), 1);
    }
}
