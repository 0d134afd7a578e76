"""kcat (librdkafka 2.0.x command-line client) against pinion."""

import json
import shutil
import subprocess

import pytest

from conftest import kp_create_topic, unique_topic

pytestmark = pytest.mark.skipif(shutil.which("kcat") is None,
                                reason="kcat not installed (scripts/test installs it)")


def kcat(broker, *args, stdin=None, timeout=60):
    proc = subprocess.run(["kcat", "-b", broker.bootstrap, *args], input=stdin,
                          capture_output=True, timeout=timeout)
    assert proc.returncode == 0, \
        f"kcat {' '.join(args)} exited {proc.returncode}: {proc.stderr.decode(errors='replace')}"
    return proc.stdout


def test_list_metadata(broker):
    topic = kp_create_topic(broker.bootstrap, unique_topic("kcat-l"), partitions=3)
    out = kcat(broker, "-L").decode()
    assert f'topic "{topic}" with 3 partitions:' in out, out
    assert f"at {broker.bootstrap}" in out, out  # the broker advertises its bound address


def test_list_metadata_json(broker):
    topic = kp_create_topic(broker.bootstrap, unique_topic("kcat-j"), partitions=3)
    md = json.loads(kcat(broker, "-L", "-J"))
    assert [b["name"] for b in md["brokers"]] == [broker.bootstrap]
    topics = {t["topic"]: t for t in md["topics"]}
    assert topic in topics
    parts = topics[topic]["partitions"]
    assert sorted(p["partition"] for p in parts) == [0, 1, 2]
    broker_id = md["brokers"][0]["id"]
    for p in parts:
        assert p["leader"] == broker_id
        assert p["replicas"] == [{"id": broker_id}]
        assert p["isrs"] == [{"id": broker_id}]


def test_produce_and_consume_lines(broker):
    # Unkeyed lines to a topic the producer's metadata request auto-creates.
    topic = unique_topic("kcat-p")
    lines = [f"line {i} — ünïcode ✓ {'x' * (i % 50)}" for i in range(500)]
    kcat(broker, "-P", "-t", topic, stdin=("\n".join(lines) + "\n").encode())
    out = kcat(broker, "-C", "-t", topic, "-o", "beginning", "-e", "-q",
               "-f", "%p %o %s\n").decode()
    got = out.splitlines()
    assert got == [f"0 {i} {line}" for i, line in enumerate(lines)]


def test_produce_and_consume_keyed(broker):
    topic = kp_create_topic(broker.bootstrap, unique_topic("kcat-k"), partitions=1)
    pairs = [(f"k{i % 7}", f"value {i}") for i in range(300)]
    stdin = "".join(f"{k}:{v}\n" for k, v in pairs).encode()
    kcat(broker, "-P", "-t", topic, "-K:", stdin=stdin)
    out = kcat(broker, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-K:")
    assert out == stdin
