"""confluent-kafka (librdkafka) round trips: 100,000 keyed records with headers per
compression codec, read back byte for byte and in order per partition."""

import random
import time

import pytest
from confluent_kafka import (OFFSET_BEGINNING, Consumer, KafkaError, Producer,
                             TopicPartition)
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import unique_topic, wait_until
from segment_file import read_batches, segment_files

N_RECORDS = 100_000
PARTITIONS = 8


def make_record(i, rng):
    """Deterministic, varied record i: text and binary values, repeated keys, headers
    that are absent, empty, null-valued or binary."""
    key = b"key-%d" % (i % 5000)
    value = b"%08d|" % i + rng.randbytes(rng.randrange(0, 48)) + b"payload" * (i % 7)
    if i % 10 == 0:
        headers = None
    else:
        headers = [("seq", b"%d" % i), ("bin", bytes([i % 256, 0, 255]))]
        if i % 97 == 0:
            headers.append(("null-valued", None))
        if i % 13 == 0:
            headers.append(("empty", b""))
    return key, value, headers


def create_topic(bootstrap, topic, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions,
                                            replication_factor=1)])
    futures[topic].result(15)
    wait_until(lambda: len(admin.list_topics(topic, timeout=5).topics[topic].partitions)
               == partitions, what=f"{topic} metadata with {partitions} partitions")


def produce_all(bootstrap, topic, records, **config):
    """Produce records; returns {partition: {offset: index}} from delivery reports."""
    placed = {}
    errors = []

    def on_delivery(err, msg, i):
        if err is not None:
            errors.append((i, err))
        else:
            placed.setdefault(msg.partition(), {})[msg.offset()] = i

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, **config})
    for i, (key, value, headers) in enumerate(records):
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=headers,
                                 on_delivery=lambda err, msg, i=i: on_delivery(err, msg, i))
                break
            except BufferError:  # local queue full: let deliveries drain
                producer.poll(0.05)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0, "records still undelivered after 60 s"
    assert not errors, f"{len(errors)} delivery errors, first: {errors[:3]}"
    return placed


def consume_all(bootstrap, topic, partitions, expected_total, timeout=60):
    """All records of the topic via assign() at the beginning; no group membership,
    no offset commits. Returns {partition: [Message, ...]} in delivery order."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "pinion-tests-unused",  # required by the client; assign() never joins
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
    })
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    out = {p: [] for p in range(partitions)}
    got, deadline = 0, time.monotonic() + timeout
    try:
        while got < expected_total and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=10000, timeout=1.0):
                if msg.error():
                    assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                    continue
                out[msg.partition()].append(msg)
                got += 1
        # Nothing may follow the expected records.
        extra = [m for m in consumer.consume(num_messages=100, timeout=1.0) if not m.error()]
        assert not extra, f"{len(extra)} unexpected extra records, first at " \
                          f"p{extra[0].partition()} o{extra[0].offset()}"
    finally:
        consumer.close()
    return out


@pytest.mark.parametrize("compression", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_100k_keyed_records_with_headers_round_trip(broker, compression):
    topic = unique_topic(f"c-{compression}")
    create_topic(broker.bootstrap, topic, PARTITIONS)

    rng = random.Random(compression)
    records = [make_record(i, rng) for i in range(N_RECORDS)]
    placed = produce_all(broker.bootstrap, topic, records, **{"compression.type": compression})

    # Delivery reports: offsets dense from 0 in every partition, in production order.
    assert sum(len(v) for v in placed.values()) == N_RECORDS
    assert len(placed) > 1, "keys should spread over several partitions"
    for p, by_offset in placed.items():
        assert sorted(by_offset) == list(range(len(by_offset))), f"p{p} offsets not dense"
        order = [by_offset[o] for o in range(len(by_offset))]
        assert order == sorted(order), f"p{p}: offsets not in production order"

    consumed = consume_all(broker.bootstrap, topic, PARTITIONS, N_RECORDS)
    for p in range(PARTITIONS):
        msgs = consumed[p]
        expected = placed.get(p, {})
        assert [m.offset() for m in msgs] == list(range(len(expected))), \
            f"p{p}: consumed offsets are not 0..{len(expected) - 1} in order"
        for m in msgs:
            key, value, headers = records[expected[m.offset()]]
            assert (m.key(), m.value(), m.headers()) == (key, value, headers), \
                f"p{p} o{m.offset()} differs"

    # The log holds the producer's batches as sent: same codec, valid CRCs. librdkafka
    # sends a batch uncompressed when compressing it would make it larger, which can
    # happen to a batch of a few records of mostly random bytes; any other uncompressed
    # batch means the codec was dropped (as librdkafka does with lz4 unless the broker
    # lists FindCoordinator in ApiVersions).
    pdir = broker.partition_dirs(topic)[next(iter(placed))]
    batches = read_batches(segment_files(pdir)[0])
    assert batches and all(b.crc_ok and b.magic == 2 for b in batches)
    plain = [b for b in batches if b.compression != compression]
    assert all(b.compression == "none" and b.record_count <= 8 for b in plain), (
        f"batches stored as {sorted({(b.compression, b.record_count) for b in plain})}, "
        f"produced with {compression}")
    total = sum(b.record_count for b in batches)
    assert sum(b.record_count for b in plain) <= total // 100, (
        f"{len(plain)} of {len(batches)} batches stored uncompressed, produced with {compression}")
