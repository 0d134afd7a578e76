//! Sans-I/O Kafka protocol glue: frames, the record-batch view, error codes, and the hand-written
//! fetch response encoder that keeps stored batches as they are.

pub mod batch;
pub mod codec;
pub mod errors;
pub mod fetch_response;
pub mod records;
