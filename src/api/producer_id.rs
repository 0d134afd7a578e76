//! InitProducerId (0-5) for idempotent producers. Transactions are not offered: a transactional
//! id is refused with TRANSACTIONAL_ID_AUTHORIZATION_FAILED, a clear non-retriable error.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::router::Router;

pub async fn handle(router: &Router, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default().with_producer_id(ProducerId(-1)).with_producer_epoch(-1);
    if req.transactional_id.is_some() {
        return response.with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code());
    }
    // KIP-360: a producer that lost track of its sequences asks to bump its epoch.
    if req.producer_id.0 >= 0 && req.producer_epoch >= 0 && req.producer_epoch < i16::MAX - 1 {
        return response.with_producer_id(req.producer_id).with_producer_epoch(req.producer_epoch + 1);
    }
    loop {
        if let Some(id) = router.metadata.borrow_mut().take_producer_id() {
            return response.with_producer_id(ProducerId(id)).with_producer_epoch(0);
        }
        // The block reserved on disk is used up (or another request's save is reserving the
        // next one): reserve the next and wait for its save.
        router.metadata.borrow_mut().reserve_producer_ids();
        if let Err(e) = router.save_metadata().await {
            eprintln!("pinion: cannot reserve producer ids: {e}");
            return response.with_error_code(ResponseError::UnknownServerError.code());
        }
    }
}
