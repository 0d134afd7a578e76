"""Hostile or mistaken input: oversized and malformed frames, oversized batches, unknown
topics, an unusable data directory, a SCHED_FIFO policy. The broker must reject these
without disturbing other clients."""

import os
import random
import shutil
import struct
import subprocess
import uuid
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import (KafkaTimeoutError, MessageSizeTooLargeError,
                          UnknownTopicOrPartitionError)

import kafka_wire as wire
from conftest import BIN, kp_create_topic, unique_topic

MiB = 1024 * 1024


class LiveProducer:
    """A kafka-python producer on its own connection that must keep working."""

    def __init__(self, broker):
        self.topic = kp_create_topic(broker.bootstrap, unique_topic("live"))
        self.producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        self.next_offset = 0

    def check(self):
        md = self.producer.send(self.topic, b"still alive", partition=0).get(timeout=10)
        assert md.offset == self.next_offset
        self.next_offset += 1

    def close(self):
        self.producer.close()


def assert_closed(broker, frame, what):
    sock = wire.connect(broker.bootstrap)
    try:
        try:
            sock.sendall(frame)
        except (BrokenPipeError, ConnectionResetError):
            return  # closed while we were still sending: fine
        assert wire.wait_closed(sock, timeout=5), f"connection not closed after {what}"
    finally:
        sock.close()
    assert broker.running(), f"broker died after {what}: {broker.stderr_tail()}"


def test_oversized_frame_closes_only_that_connection(broker):
    live = LiveProducer(broker)
    live.check()
    # 200 MiB announced, above socket.request.max.bytes (100 MiB by default). The
    # broker must not wait for (or allocate) the body.
    assert_closed(broker, struct.pack(">i", 200 * MiB) + b"\0" * 64, "a 200 MiB length prefix")
    live.check()
    assert_closed(broker, struct.pack(">i", -5), "a negative length prefix")
    live.check()
    live.close()


def test_socket_request_max_bytes_override(broker_factory):
    broker = broker_factory(overrides={"socket.request.max.bytes": MiB})
    live = LiveProducer(broker)
    assert_closed(broker, struct.pack(">i", 2 * MiB) + b"\0" * 64, "a 2 MiB length prefix")
    live.check()
    live.close()


def test_garbage_frames_close_the_connection(broker):
    live = LiveProducer(broker)
    rng = random.Random(1234)
    body = bytes([0x7F, 0xF0]) + rng.randbytes(200)  # api key 32752 + noise
    cases = {
        "random body": struct.pack(">i", len(body)) + body,
        "unknown api key 999": wire.request(999, 0, 1, b"\x00" * 16),
        "Metadata version 999": wire.request(3, 999, 1, b"\x00" * 16),
        "frame shorter than a request header": struct.pack(">i", 3) + b"\x00\x03\x00",
        "truncated client id": struct.pack(">i", 10) + struct.pack(">hhih", 3, 1, 1, 500),
    }
    for what, frame in cases.items():
        assert_closed(broker, frame, what)
        live.check()
    # A well-formed request on a fresh connection is still answered.
    with wire.connect(broker.bootstrap) as sock:
        versions = wire.api_versions_v0(sock)
    assert 0 in versions and 1 in versions and 3 in versions  # Produce, Fetch, Metadata
    live.close()


def test_more_partitions_than_open_files_allow_are_refused_whole(broker_factory):
    """Each partition holds its segment file open. Asking for more partitions than the
    process may open files fails with a clear error, and leaves nothing half made: the
    partitions opened before the limit was hit are closed and removed again, and the broker
    goes on serving, growing and creating within the limit."""
    broker = broker_factory(open_files=600)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    topic = kp_create_topic(broker.bootstrap, unique_topic("wide"))
    fds = broker.open_fds()

    with pytest.raises(KafkaException) as grown:
        admin.create_partitions([NewPartitions(topic, 2000)])[topic].result(timeout=60)
    assert "Too many open files" in str(grown.value)
    assert broker.open_fds() <= fds + 4, "the partitions opened before the failure are still open"
    assert len(admin.list_topics(timeout=10).topics[topic].partitions) == 1
    assert sorted(p.name for p in broker.data_dir.glob(f"{topic}-*")) == [f"{topic}-0"]

    wider = unique_topic("wider")
    with pytest.raises(KafkaException) as created:
        admin.create_topics([NewTopic(wider, 2000, 1)])[wider].result(timeout=60)
    assert "Too many open files" in str(created.value)
    assert wider not in admin.list_topics(timeout=10).topics
    assert not list(broker.data_dir.glob(f"{wider}-*"))

    # What the metadata says on disk agrees: a crash and restart find the topic as it was.
    broker.kill9()
    broker.start()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    topics = admin.list_topics(timeout=10).topics
    assert len(topics[topic].partitions) == 1 and wider not in topics

    admin.create_partitions([NewPartitions(topic, 4)])[topic].result(timeout=30)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    for partition in range(4):
        assert producer.send(topic, b"fits", partition=partition).get(timeout=10).offset == 0
    producer.close()


def test_open_files_soft_limit_is_raised_to_the_hard_one(broker_factory):
    """Many shells start with a soft limit of 1,024 open files and a far higher hard one; the
    broker raises its soft limit to the hard one, so a thousand partitions fit."""
    broker = broker_factory(open_files=(600, 4096))
    limits = Path(f"/proc/{broker.proc.pid}/limits").read_text()
    soft, hard = next(line.split()[3:5] for line in limits.splitlines() if line.startswith("Max open files"))
    assert (soft, hard) == ("4096", "4096")
    topic = kp_create_topic(broker.bootstrap, unique_topic("thousand"), partitions=1000)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    assert producer.send(topic, b"last", partition=999).get(timeout=10).offset == 0
    producer.close()


def test_batch_above_message_max_bytes_is_rejected(broker_factory):
    broker = broker_factory(overrides={"message.max.bytes": 10000})
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all",
                             max_request_size=1_000_000)
    ok = producer.send("limits", b"s" * 5000).get(timeout=10)
    assert ok.offset == 0
    with pytest.raises(MessageSizeTooLargeError):
        producer.send("limits", os.urandom(20_000)).get(timeout=10)
    producer.close()
    # The rejected batch took no offset. (A new producer: kafka-python 3.0 treats the
    # error as fatal for the producer that got it.)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    assert producer.send("limits", b"after").get(timeout=10).offset == 1
    producer.close()


def test_unknown_topic_without_auto_create(broker_factory):
    broker = broker_factory(overrides={"auto.create.topics.enable": "false"})
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, max_block_ms=3000)
    with pytest.raises((KafkaTimeoutError, UnknownTopicOrPartitionError)):
        producer.send("no-such-topic", b"x").get(timeout=10)

    # The metadata answer names the error for the topic...
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    md = admin.list_topics("no-such-topic", timeout=10)
    assert md.topics["no-such-topic"].error is not None
    assert md.topics["no-such-topic"].error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    # ...and nothing was created by asking.
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap)
    assert "no-such-topic" not in consumer.topics()
    consumer.close()
    assert not broker.partition_dirs("no-such-topic")

    # Explicitly created topics still work.
    topic = kp_create_topic(broker.bootstrap, "made-by-admin")
    assert producer.send(topic, b"x").get(timeout=10).offset == 0
    producer.close()


def _is_tmpfs(path):
    with open("/proc/mounts") as f:
        return any(line.split()[1] == path and line.split()[2] == "tmpfs" for line in f)


@pytest.mark.skipif(not _is_tmpfs("/dev/shm"), reason="/dev/shm is not tmpfs here")
def test_tmpfs_data_dir_is_refused():
    # The one deliberate exception to "data on a real disk": tmpfs has no O_DIRECT, and
    # the broker must say so instead of starting.
    data_dir = Path("/dev/shm") / f"pinion-test-{uuid.uuid4().hex[:8]}"
    data_dir.mkdir()
    try:
        proc = subprocess.run([str(BIN), "serve", "--listen", "127.0.0.1:0",
                               "--data-dir", str(data_dir)],
                              capture_output=True, text=True, timeout=20)
        output = proc.stdout + proc.stderr
        assert proc.returncode != 0, f"broker accepted a tmpfs data dir: {output}"
        assert "O_DIRECT" in output, f"exit message does not mention O_DIRECT: {output!r}"
        assert "listening on" not in proc.stdout
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.mark.skipif(shutil.which("chrt") is None, reason="no chrt (util-linux) here")
def test_sched_fifo_is_refused(test_workdir):
    # Under SCHED_FIFO the kernel's io_uring workers, which inherit the executors' policy and
    # CPU, never get to run while an executor polls for their results: the broker would hang
    # at start. It must say so and exit instead.
    proc = subprocess.run(["chrt", "-f", "1", str(BIN), "serve", "--listen", "127.0.0.1:0",
                           "--data-dir", str(test_workdir / "data")],
                          capture_output=True, text=True, timeout=20)
    output = proc.stdout + proc.stderr
    if "chrt:" in output:
        pytest.skip(f"cannot set SCHED_FIFO here: {output.strip()}")
    assert proc.returncode != 0, f"broker started under SCHED_FIFO: {output}"
    assert "SCHED_FIFO" in output, f"exit message does not say why: {output!r}"
    assert "listening on" not in output
