//! Frames <-> typed requests and responses, with no I/O: the kafka-protocol crate does the field
//! encoding; this module adds the framing rules and the checks a broker needs.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

/// The 4-byte size in front of every request and response.
pub const SIZE_PREFIX_BYTES: usize = 4;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FrameError {
    #[error("frame of {size} bytes exceeds socket.request.max.bytes {max}")]
    TooLarge { size: i64, max: usize },
    #[error("frame of {size} bytes is too short for a request header")]
    TooShort { size: usize },
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    #[error("cannot decode {what}: {reason}")]
    Malformed { what: String, reason: String },
}

/// Reads the size prefix at the start of `buf`: the frame's length once it is all there.
pub fn frame_size(buf: &[u8], max: usize) -> Result<Option<usize>, FrameError> {
    if buf.len() < SIZE_PREFIX_BYTES {
        return Ok(None);
    }
    let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if size < 0 || size as usize > max {
        return Err(FrameError::TooLarge { size: i64::from(size), max });
    }
    Ok(Some(size as usize))
}

/// The header of a request and the body still to decode.
pub struct RequestFrame {
    pub api_key: ApiKey,
    pub header: RequestHeader,
    pub body: Bytes,
}

/// Splits a frame (without its size prefix) into header and body. The API version is not
/// checked here; the router does that against what it serves.
pub fn decode_header(mut frame: Bytes) -> Result<RequestFrame, FrameError> {
    if frame.len() < 8 {
        return Err(FrameError::TooShort { size: frame.len() });
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api_key = ApiKey::try_from(key).map_err(|_| FrameError::UnknownApiKey(key))?;
    let header_version = if version >= 0 && api_key.valid_versions().max >= version {
        api_key.request_header_version(version)
    } else {
        // A version the crate does not know (e.g. ApiVersions v5 from a newer client): read the
        // fixed part only, so the broker can still answer UNSUPPORTED_VERSION.
        1
    };
    let header = RequestHeader::decode(&mut frame, header_version)
        .map_err(|e| FrameError::Malformed { what: "request header".into(), reason: e.to_string() })?;
    Ok(RequestFrame { api_key, header, body: frame })
}

pub fn decode_body(api_key: ApiKey, version: i16, mut body: Bytes) -> Result<RequestKind, FrameError> {
    let malformed =
        |reason: String| FrameError::Malformed { what: format!("{api_key:?} v{version} request"), reason };
    // The decoder is not ours: should hostile input ever make it panic, that is one bad frame,
    // not a reason to stop serving every other client.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        RequestKind::decode(api_key, &mut body, version)
    }));
    match decoded {
        Ok(Ok(request)) => Ok(request),
        Ok(Err(e)) => Err(malformed(e.to_string())),
        Err(_) => Err(malformed("the decoder panicked".into())),
    }
}

/// Encodes a whole response frame: size prefix, header, body.
pub fn encode_response(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<Bytes, FrameError> {
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let malformed =
        |reason: String| FrameError::Malformed { what: format!("{api_key:?} v{version} response"), reason };
    header
        .encode(&mut buf, api_key.response_header_version(version))
        .map_err(|e| malformed(e.to_string()))?;
    body.encode(&mut buf, version).map_err(|e| malformed(e.to_string()))?;
    let size = (buf.len() - SIZE_PREFIX_BYTES) as i32;
    buf[..SIZE_PREFIX_BYTES].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest};
    use kafka_protocol::protocol::StrBytes;

    fn request_frame<T: Encodable>(key: ApiKey, version: i16, correlation: i32, body: &T) -> Bytes {
        let mut buf = BytesMut::new();
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .with_client_id(Some(StrBytes::from_static_str("test")));
        header.encode(&mut buf, key.request_header_version(version)).unwrap();
        body.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    #[test]
    fn frame_size_enforces_limit() {
        assert_eq!(frame_size(&[0, 0], 10), Ok(None));
        assert_eq!(frame_size(&[0, 0, 0, 5], 10), Ok(Some(5)));
        assert!(matches!(frame_size(&[0, 0, 0, 11], 10), Err(FrameError::TooLarge { .. })));
        assert!(matches!(frame_size(&[0xff, 0, 0, 0], 10), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn header_and_body_decode_for_flexible_and_old_versions() {
        for version in [0, 3, 4] {
            let frame = request_frame(ApiKey::ApiVersions, version, 7, &ApiVersionsRequest::default());
            let parsed = decode_header(frame).unwrap();
            assert_eq!(parsed.header.correlation_id, 7);
            assert_eq!(parsed.header.client_id.as_deref(), Some("test"));
            decode_body(ApiKey::ApiVersions, version, parsed.body).unwrap();
        }
        let frame = request_frame(ApiKey::Metadata, 12, 9, &MetadataRequest::default());
        let parsed = decode_header(frame).unwrap();
        assert!(matches!(decode_body(ApiKey::Metadata, 12, parsed.body).unwrap(), RequestKind::Metadata(_)));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(decode_header(Bytes::from_static(&[0, 1])), Err(FrameError::TooShort { .. })));
        let unknown = Bytes::from_static(&[0x03, 0xe7, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(decode_header(unknown).err(), Some(FrameError::UnknownApiKey(999)));
        // Metadata v1 whose topic array claims more entries than there are bytes.
        let bad = Bytes::from_static(&[0, 3, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0x10, 0, 0, 0]);
        let parsed = decode_header(bad).unwrap();
        assert!(decode_body(parsed.api_key, 1, parsed.body).is_err());
    }

    #[test]
    fn unknown_future_version_still_yields_correlation_id() {
        let mut buf = BytesMut::new();
        buf.put_i16(ApiKey::ApiVersions as i16);
        buf.put_i16(99);
        buf.put_i32(42);
        buf.put_i16(-1);
        buf.put_u8(0);
        let parsed = decode_header(buf.freeze()).unwrap();
        assert_eq!(parsed.header.correlation_id, 42);
        assert_eq!(parsed.header.request_api_version, 99);
    }
}
