//! ApiVersions (versions 0-4): the table in `api::SERVED`, and the v0-layout answer to a version
//! this broker does not serve.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::ApiVersionsResponse;
use kafka_protocol::protocol::Encodable;

use super::SERVED;
use crate::protocol::codec::FrameError;

fn api_keys() -> Vec<ApiVersion> {
    SERVED
        .iter()
        .map(|&(key, min, max)| {
            ApiVersion::default().with_api_key(key as i16).with_min_version(min).with_max_version(max)
        })
        .collect()
}

pub fn handle(_version: i16) -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_error_code(0).with_api_keys(api_keys())
}

/// UNSUPPORTED_VERSION with the served ranges, in the v0 layout every client can read.
pub fn unsupported_version_response(correlation_id: i32) -> Result<Bytes, FrameError> {
    let body = ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(api_keys());
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    buf.put_i32(correlation_id);
    body.encode(&mut buf, 0)
        .map_err(|e| FrameError::Malformed { what: "ApiVersions response".into(), reason: e.to_string() })?;
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiKey;
    use kafka_protocol::protocol::Decodable;

    #[test]
    fn served_ranges_are_within_what_the_codec_knows() {
        for &(key, min, max) in SERVED {
            let known = key.valid_versions();
            assert!(min <= max, "{key:?}");
            assert!(known.min <= min && max <= known.max, "{key:?} {min}-{max} vs {known}");
        }
        assert!(SERVED.iter().any(|(k, _, _)| *k == ApiKey::ApiVersions));
    }

    #[test]
    fn unsupported_version_answer_decodes_as_v0() {
        let frame = unsupported_version_response(5).unwrap();
        let mut body = frame.slice(8..);
        let resp = ApiVersionsResponse::decode(&mut body, 0).unwrap();
        assert_eq!(resp.error_code, 35);
        assert_eq!(resp.api_keys.len(), SERVED.len());
    }
}
