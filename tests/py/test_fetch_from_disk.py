"""Fetches of many partitions that read from disk: a shard lets one fetch read only as much as
may be read ahead (a quarter of its I/O memory), leaves the other partitions empty for the
fetches after it, and starts reading them ahead. Checked here: the partitions take turns even
when a client always asks in the same order, a fetch with data left over is answered at once
whatever its min_bytes, and real clients read every record exactly once, in order.

The broker runs with a 1 MiB cache (so the data is read from disk) and 4 MiB of I/O memory, so
a fetch may read 1 MiB: two partitions' worth at 512 KiB each."""

import struct
import time

from confluent_kafka import Consumer, Producer, TopicPartition as CTopicPartition

import kafka_wire as wire
from conftest import kp_consume_all, kp_create_topic, unique_topic

PARTITIONS = 16
PER_PARTITION = 1200  # about 1.2 MB each
VALUE_BYTES = 1000
BROKER_ARGS = ["--fetch-cache-mib", "1", "--io-memory-mib", "4"]
FETCH_ALLOWED = 1 << 20
PARTITION_MAX = 512 << 10


PATTERN = bytes(range(251)) * 5


def value(p, i):
    head = b"p%d-r%d-" % (p, i)
    start = (p * 31 + i) % 251
    return head + PATTERN[start:start + VALUE_BYTES - len(head)]


def produce(bootstrap, topic):
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all",
                         "batch.size": 64 << 10})
    errors = []
    for i in range(PER_PARTITION):
        for p in range(PARTITIONS):
            while True:
                try:
                    producer.produce(topic, value=value(p, i), partition=p,
                                     on_delivery=lambda err, _m: err and errors.append(err))
                    break
                except BufferError:
                    producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(60) == 0
    assert not errors, errors[:3]


def fetch_all(topic, offsets, max_wait_ms, min_bytes):
    """Fetch v4 body asking for every partition, in partition order, from `offsets`."""
    parts = b"".join(struct.pack(">iqi", p, offsets[p], PARTITION_MAX) for p in range(PARTITIONS))
    return (struct.pack(">iiiib", -1, max_wait_ms, min_bytes, 50 << 20, 0)
            + struct.pack(">i", 1) + wire.string(topic)
            + struct.pack(">i", PARTITIONS) + parts)


def batches(records):
    """(base offset, last offset) of each whole batch in a partition's records."""
    out, pos = [], 0
    while pos + 61 <= len(records):
        base, length = struct.unpack_from(">qi", records, pos)
        (last_delta,) = struct.unpack_from(">i", records, pos + 23)
        assert pos + 12 + length <= len(records), "a partial batch was returned"
        out.append((base, base + last_delta))
        pos += 12 + length
    assert pos == len(records)
    return out


def test_partitions_take_turns_when_a_fetch_may_read_only_some(broker_factory):
    broker = broker_factory(args=BROKER_ARGS)
    topic = kp_create_topic(broker.bootstrap, unique_topic("turns"), partitions=PARTITIONS)
    produce(broker.bootstrap, topic)

    offsets = [0] * PARTITIONS
    first_served = {}
    fetches = 0
    with wire.connect(broker.bootstrap, timeout=30) as sock:
        while any(o < PER_PARTITION for o in offsets):
            fetches += 1
            assert fetches <= 200, f"no end in sight: {offsets}"
            # While more is left than two fetches may read: min_bytes far above what one may
            # read, and a long max wait. With data left for later the broker answers at once
            # rather than wait for the min_bytes (at the very end it would wait, as Kafka does).
            left = sum(PER_PARTITION - o for o in offsets) * VALUE_BYTES
            min_bytes = 40 << 20 if left > 2 * FETCH_ALLOWED else 1
            sock.sendall(wire.request(1, 4, fetches, fetch_all(topic, offsets, 10_000, min_bytes)))
            start = time.monotonic()
            corr, body = wire.recv_response(sock)
            elapsed = time.monotonic() - start
            assert corr == fetches
            assert elapsed < 5, f"fetch {fetches} waited {elapsed:.1f} s"
            parts = wire.parse_fetch_v4(body)
            assert [p for _, p, _, _, _ in parts] == list(range(PARTITIONS)), "answers keep the order"
            total = 0
            for _, p, error, hwm, records in parts:
                assert error == 0
                assert hwm == PER_PARTITION
                got = batches(records)
                if got:
                    assert got[0][0] <= offsets[p] <= got[0][1], f"partition {p} starts at its offset"
                    for (_, last), (base, _) in zip(got, got[1:]):
                        assert base == last + 1, f"partition {p} has a gap"
                    offsets[p] = got[-1][1] + 1
                    first_served.setdefault(p, fetches)
                total += len(records)
            assert total > 0, f"fetch {fetches} returned nothing"
            assert total <= FETCH_ALLOWED + PARTITION_MAX, f"fetch {fetches} read {total} bytes"

    # Two partitions a fetch: asked in the same order every time, each partition still gets its
    # first data within the first round of turns, not after those before it are drained.
    assert sorted(first_served) == list(range(PARTITIONS))
    assert max(first_served.values()) <= PARTITIONS // 2 + 2, first_served
    data = PARTITIONS * PER_PARTITION * VALUE_BYTES
    assert fetches <= 2 * data // FETCH_ALLOWED, f"{fetches} fetches for {data} bytes"


def test_real_clients_read_every_record_once_in_order(broker_factory):
    broker = broker_factory(args=BROKER_ARGS)
    topic = kp_create_topic(broker.bootstrap, unique_topic("fromdisk"), partitions=PARTITIONS)
    produce(broker.bootstrap, topic)
    expected = {p: [(i, value(p, i)) for i in range(PER_PARTITION)] for p in range(PARTITIONS)}

    got = kp_consume_all(broker.bootstrap, topic, PARTITIONS, PARTITIONS * PER_PARTITION, timeout=60)
    for p in range(PARTITIONS):
        assert [(r.offset, r.value) for r in got[p]] == expected[p], f"kafka-python, partition {p}"

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "unused",
                         "enable.auto.commit": False})
    consumer.assign([CTopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    seen = {p: [] for p in range(PARTITIONS)}
    count, deadline = 0, time.monotonic() + 60
    try:
        while count < PARTITIONS * PER_PARTITION and time.monotonic() < deadline:
            for m in consumer.consume(1000, timeout=1):
                assert m.error() is None, m.error()
                seen[m.partition()].append((m.offset(), m.value()))
                count += 1
    finally:
        consumer.close()
    for p in range(PARTITIONS):
        assert seen[p] == expected[p], f"confluent-kafka, partition {p}"
