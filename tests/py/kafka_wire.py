"""Minimal hand-rolled Kafka wire protocol, for tests that real clients cannot express:
malformed frames, and timing a single Fetch request exactly.

Only non-flexible (pre-tagged-field) request versions are encoded here.
"""

import socket
import struct
import time


def connect(bootstrap, timeout=10.0):
    host, port = bootstrap.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=timeout)


def string(s):
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def request(api_key, api_version, correlation_id, body=b"", client_id="pinion-tests"):
    """A complete size-prefixed request with a v1 request header."""
    payload = struct.pack(">hhi", api_key, api_version, correlation_id) + string(client_id) + body
    return struct.pack(">i", len(payload)) + payload


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def recv_response(sock):
    """Returns (correlation_id, body) of one response (non-flexible response header)."""
    (size,) = struct.unpack(">i", recv_exact(sock, 4))
    data = recv_exact(sock, size)
    return struct.unpack_from(">i", data)[0], data[4:]


def wait_closed(sock, timeout=5.0):
    """True if the peer closes the connection (EOF or reset) within `timeout` seconds.
    Any bytes the broker sends before closing are read and ignored."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if sock.recv(65536) == b"":
                return True
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


# ---------------------------------------------------------------- ApiVersions

def api_versions_v0(sock, correlation_id=1):
    """{api_key: (min_version, max_version)} from an ApiVersions v0 exchange."""
    sock.sendall(request(18, 0, correlation_id))
    corr, body = recv_response(sock)
    assert corr == correlation_id
    error_code, count = struct.unpack_from(">hi", body)
    assert error_code == 0, f"ApiVersions error {error_code}"
    out = {}
    for i in range(count):
        key, lo, hi = struct.unpack_from(">hhh", body, 6 + 6 * i)
        out[key] = (lo, hi)
    return out


# ---------------------------------------------------------------------- Fetch

def fetch_v4(topic, partition, offset, max_wait_ms, min_bytes=1, max_bytes=1 << 20):
    """Body of a Fetch v4 request for one partition (read_uncommitted)."""
    return (struct.pack(">iiiib", -1, max_wait_ms, min_bytes, max_bytes, 0)
            + struct.pack(">i", 1) + string(topic)
            + struct.pack(">i", 1) + struct.pack(">iqi", partition, offset, max_bytes))


def parse_fetch_v4(body):
    """[(topic, partition, error_code, high_watermark, records_bytes)] of a Fetch v4 response."""
    pos = 4  # throttle_time_ms
    out = []
    (n_topics,) = struct.unpack_from(">i", body, pos); pos += 4
    for _ in range(n_topics):
        (tlen,) = struct.unpack_from(">h", body, pos); pos += 2
        topic = body[pos:pos + tlen].decode(); pos += tlen
        (n_parts,) = struct.unpack_from(">i", body, pos); pos += 4
        for _ in range(n_parts):
            partition, error_code, hw, _lso = struct.unpack_from(">ihqq", body, pos); pos += 22
            (n_aborted,) = struct.unpack_from(">i", body, pos); pos += 4
            pos += max(n_aborted, 0) * 16
            (rlen,) = struct.unpack_from(">i", body, pos); pos += 4
            records = b"" if rlen < 0 else body[pos:pos + rlen]
            pos += max(rlen, 0)
            out.append((topic, partition, error_code, hw, records))
    return out


def timed_fetch(bootstrap, topic, partition, offset, max_wait_ms):
    """Send one Fetch v4 and return (seconds until the response, parsed response)."""
    with connect(bootstrap, timeout=max_wait_ms / 1000 + 10) as sock:
        sock.sendall(request(1, 4, 7, fetch_v4(topic, partition, offset, max_wait_ms)))
        start = time.monotonic()
        corr, body = recv_response(sock)
        elapsed = time.monotonic() - start
    assert corr == 7
    return elapsed, parse_fetch_v4(body)


# ------------------------------------------------------------- InitProducerId

def init_producer_ids(bootstrap, count):
    """Asks for `count` producer ids (InitProducerId v0, no transactional id) on one
    connection, all requests sent before any response is read. Returns [(error_code, id)]
    in request order."""
    body = string(None) + struct.pack(">i", 60_000)
    with connect(bootstrap, timeout=30.0) as sock:
        sock.sendall(b"".join(request(22, 0, i, body) for i in range(count)))
        out = []
        for i in range(count):
            corr, data = recv_response(sock)
            assert corr == i, f"response {corr} where {i} was due"
            _throttle, error_code, producer_id, _epoch = struct.unpack_from(">ihqh", data)
            out.append((error_code, producer_id))
        return out
