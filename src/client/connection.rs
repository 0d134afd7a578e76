//! One blocking TCP connection to one broker: framing, correlation ids, the ApiVersions handshake
//! and, for every request, the version both sides speak.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

use super::error::{format_duration, ClientError};

/// Sent as the client id of every request.
const CLIENT_ID: &str = "pinion-cli";
/// The largest response frame accepted; fetches ask for far less.
const FRAME_BYTES_MAX: usize = 256 << 20;
/// ApiVersions version tried first. A broker that does not serve it answers in the v0 layout
/// with the versions it does serve, and the handshake is retried with those.
const API_VERSIONS_FIRST: i16 = 3;
/// `UNSUPPORTED_VERSION`.
const UNSUPPORTED_VERSION: i16 = 35;

/// The versions this client sends of each API. Normally whatever the codec knows, but Produce
/// and Fetch from v13 name topics only by id, which this client does not track, and OffsetFetch
/// before v2 cannot ask for every offset of a group.
fn client_range(key: i16, codec: (i16, i16)) -> (i16, i16) {
    match ApiKey::try_from(key) {
        Ok(ApiKey::Produce | ApiKey::Fetch) => (codec.0, codec.1.min(12)),
        Ok(ApiKey::OffsetFetch) => (codec.0.max(2), codec.1),
        _ => codec,
    }
}

pub struct Connection {
    addr: String,
    stream: TcpStream,
    timeout: Duration,
    next_correlation_id: i32,
    /// API key -> (min, max) version the broker serves.
    served: HashMap<i16, (i16, i16)>,
    /// Set once a request failed half-way: the stream may hold part of a frame.
    broken: bool,
}

impl Connection {
    /// Connects to `addr` (`host:port`) and learns which API versions the broker serves. Every
    /// step, and every later request, gives up after `timeout`.
    pub fn open(addr: &str, timeout: Duration) -> Result<Connection, ClientError> {
        let unreachable = |reason: String| ClientError::Unreachable { addr: addr.to_string(), reason };
        let resolved: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|e| unreachable(format!("cannot resolve the address ({e})")))?
            .collect();
        let deadline = Instant::now() + timeout;
        let mut last_error = String::from("the name resolves to no address");
        let mut stream = None;
        for socket_addr in resolved {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match TcpStream::connect_timeout(&socket_addr, left) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
                    last_error = format!("no answer within {}", format_duration(timeout));
                }
                Err(e) => last_error = e.to_string(),
            }
        }
        let stream = stream.ok_or_else(|| unreachable(last_error))?;
        let _ = stream.set_nodelay(true);
        let mut conn = Connection {
            addr: addr.to_string(),
            stream,
            timeout,
            next_correlation_id: 1,
            served: HashMap::new(),
            broken: false,
        };
        conn.handshake()?;
        Ok(conn)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// API key -> (min, max) served by the broker, as ApiVersions reported them.
    pub fn served(&self) -> &HashMap<i16, (i16, i16)> {
        &self.served
    }

    /// The version of `R` to send: the highest both sides speak.
    pub fn version_of<R: Request>(&self) -> Result<i16, ClientError> {
        let (client_min, client_max) = client_range(R::KEY, (R::VERSIONS.min, R::VERSIONS.max));
        let api = api_name(R::KEY);
        let Some(&(broker_min, broker_max)) = self.served.get(&R::KEY) else {
            return Err(ClientError::Unsupported {
                addr: self.addr.clone(),
                api,
                broker_min: -1,
                broker_max: -1,
                client_min,
                client_max,
            });
        };
        let version = client_max.min(broker_max);
        if version < client_min.max(broker_min) {
            return Err(ClientError::Unsupported {
                addr: self.addr.clone(),
                api,
                broker_min,
                broker_max,
                client_min,
                client_max,
            });
        }
        Ok(version)
    }

    /// Sends `request` at the negotiated version and waits for its response.
    pub fn send<R: Request>(&mut self, request: &R) -> Result<R::Response, ClientError> {
        let version = self.version_of::<R>()?;
        self.send_at(request, version, Duration::ZERO)
    }

    /// Sends `request` at `version` (from `version_of`) and waits up to the connection's timeout
    /// plus `extra_wait`, the time the broker may legitimately hold the request (a long-poll
    /// fetch, a join that waits for a rebalance).
    pub fn send_at<R: Request>(
        &mut self,
        request: &R,
        version: i16,
        extra_wait: Duration,
    ) -> Result<R::Response, ClientError> {
        let what = api_name(R::KEY);
        let mut body = self.exchange(R::KEY, version, request, true, self.timeout + extra_wait)?;
        ResponseHeader::decode(&mut body, R::Response::header_version(version))
            .and_then(|_| R::Response::decode(&mut body, version))
            .map_err(|e| self.protocol(&format!("{what} v{version} response"), e.to_string()))
    }

    /// Sends a request the broker does not answer (a Produce with acks=0).
    pub fn send_without_response<R: Request>(&mut self, request: &R) -> Result<(), ClientError> {
        let version = self.version_of::<R>()?;
        self.exchange(R::KEY, version, request, false, self.timeout).map(|_| ())
    }

    fn handshake(&mut self) -> Result<(), ClientError> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("pinion"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut version = API_VERSIONS_FIRST;
        for _ in 0..2 {
            let key = ApiKey::ApiVersions as i16;
            let mut frame = self.exchange(key, version, &request, true, self.timeout)?;
            // The ApiVersions response header is always v0: the correlation id alone.
            let _ = ResponseHeader::decode(&mut frame, 0)
                .map_err(|e| self.protocol("ApiVersions response", e.to_string()))?;
            let decoded = ApiVersionsResponse::decode(&mut frame.clone(), version)
                .ok()
                .filter(|r| r.error_code == 0)
                .map_or_else(|| ApiVersionsResponse::decode(&mut frame, 0), Ok)
                .map_err(|e| self.protocol("ApiVersions response", e.to_string()))?;
            if decoded.error_code == UNSUPPORTED_VERSION {
                let theirs = decoded.api_keys.iter().find(|k| k.api_key == key).map(|k| k.max_version);
                match theirs {
                    Some(max) if max < version => {
                        version = max;
                        continue;
                    }
                    _ => {}
                }
            }
            ClientError::check(decoded.error_code, None, || format!("ApiVersions from {}", self.addr))?;
            self.served =
                decoded.api_keys.iter().map(|k| (k.api_key, (k.min_version, k.max_version))).collect();
            return Ok(());
        }
        Err(self.protocol("ApiVersions response", "no ApiVersions version is served".into()))
    }

    /// Writes one request frame and, if `expect_response`, reads the matching response frame
    /// (header and body, without the size prefix).
    fn exchange<T: Encodable>(
        &mut self,
        key: i16,
        version: i16,
        body: &T,
        expect_response: bool,
        wait: Duration,
    ) -> Result<Bytes, ClientError> {
        let what = api_name(key);
        if self.broken {
            return Err(ClientError::Connection {
                addr: self.addr.clone(),
                what,
                reason: "the connection was lost by an earlier request".into(),
            });
        }
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(key)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let header_version = ApiKey::try_from(key)
            .map(|k| k.request_header_version(version))
            .map_err(|_| self.protocol("request", format!("unknown API key {key}")))?;
        let mut frame = BytesMut::with_capacity(256);
        frame.put_i32(0);
        header.encode(&mut frame, header_version).and_then(|_| body.encode(&mut frame, version)).map_err(
            |e| ClientError::Protocol {
                addr: self.addr.clone(),
                what: format!("{what} v{version} request"),
                reason: format!("cannot encode it: {e}"),
            },
        )?;
        let size = (frame.len() - 4) as i32;
        frame[..4].copy_from_slice(&size.to_be_bytes());

        self.broken = true; // until the whole exchange has completed
        let io = |e: std::io::Error, conn: &Connection| conn.io_error(&what, e, wait);
        self.stream.set_write_timeout(Some(self.timeout)).map_err(|e| io(e, self))?;
        self.stream.write_all(&frame).map_err(|e| io(e, self))?;
        if !expect_response {
            self.broken = false;
            return Ok(Bytes::new());
        }
        let deadline = Instant::now() + wait;
        let mut prefix = [0u8; 4];
        self.read_until(&mut prefix, deadline).map_err(|e| io(e, self))?;
        let size = i32::from_be_bytes(prefix);
        if size < 4 || size as usize > FRAME_BYTES_MAX {
            return Err(self.protocol(&format!("{what} response"), format!("frame size {size}")));
        }
        let mut response = vec![0u8; size as usize];
        self.read_until(&mut response, deadline).map_err(|e| io(e, self))?;
        let got = i32::from_be_bytes([response[0], response[1], response[2], response[3]]);
        if got != correlation_id {
            return Err(self.protocol(
                &format!("{what} response"),
                format!("correlation id {got}, expected {correlation_id}"),
            ));
        }
        self.broken = false;
        Ok(Bytes::from(response))
    }

    fn read_until(&mut self, buf: &mut [u8], deadline: Instant) -> std::io::Result<()> {
        let mut filled = 0;
        while filled < buf.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ErrorKind::TimedOut.into());
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut buf[filled..]) {
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn io_error(&self, what: &str, e: std::io::Error, wait: Duration) -> ClientError {
        match e.kind() {
            ErrorKind::TimedOut | ErrorKind::WouldBlock => {
                ClientError::Timeout { addr: self.addr.clone(), what: what.to_string(), after: wait }
            }
            ErrorKind::UnexpectedEof => ClientError::Connection {
                addr: self.addr.clone(),
                what: what.to_string(),
                reason: "the broker closed the connection".into(),
            },
            _ => ClientError::Connection {
                addr: self.addr.clone(),
                what: what.to_string(),
                reason: e.to_string(),
            },
        }
    }

    fn protocol(&mut self, what: &str, reason: String) -> ClientError {
        self.broken = true;
        ClientError::Protocol { addr: self.addr.clone(), what: what.to_string(), reason }
    }
}

/// `Produce`, `Metadata`, ...: the API's name for messages.
pub fn api_name(key: i16) -> String {
    ApiKey::try_from(key).map(|k| format!("{k:?}")).unwrap_or_else(|_| format!("API {key}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_id_versions_are_not_sent() {
        assert_eq!(client_range(ApiKey::Fetch as i16, (4, 18)), (4, 12));
        assert_eq!(client_range(ApiKey::Produce as i16, (3, 13)), (3, 12));
        assert_eq!(client_range(ApiKey::OffsetFetch as i16, (1, 9)), (2, 9));
        assert_eq!(client_range(ApiKey::Metadata as i16, (0, 13)), (0, 13));
    }
}
