"""Protocol behaviours clients depend on: ListOffsets (earliest, latest, by time),
fetching from inside a batch, long-poll fetches, auto-creation, broker configs."""

import struct
import threading
import time

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KpTopicPartition

import kafka_wire as wire
from conftest import kp_create_topic, unique_topic, wait_until
from segment_file import read_batches, segment_files


def produce_one_batch(bootstrap, topic, values, partition=0, timestamps=None):
    """Send `values` so they travel as a single batch; returns their offsets."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=500,
                             batch_size=1 << 20)
    futures = [producer.send(topic, v, partition=partition,
                             timestamp_ms=None if timestamps is None else timestamps[i])
               for i, v in enumerate(values)]
    producer.flush()
    offsets = [f.get(timeout=10).offset for f in futures]
    producer.close()
    return offsets


def fill_timestamped(bootstrap, topic, stamps):
    """Partition 0: one batch per record. Partition 1: all records in one batch, so a
    lookup by time must look inside the batch. Partition 2 stays empty."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i, ts in enumerate(stamps):
        producer.send(topic, b"v%d" % i, partition=0, timestamp_ms=ts).get(timeout=10)
    producer.close()
    produce_one_batch(bootstrap, topic, [b"v%d" % i for i in range(len(stamps))],
                      partition=1, timestamps=stamps)


def test_list_offsets_earliest_and_latest(broker):
    topic = kp_create_topic(broker.bootstrap, unique_topic("offsets"), partitions=3)
    fill_timestamped(broker.bootstrap, topic, [int(time.time() * 1000)] * 10)
    tps = [KpTopicPartition(topic, p) for p in range(3)]
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap)
    assert consumer.beginning_offsets(tps) == {tps[0]: 0, tps[1]: 0, tps[2]: 0}
    assert consumer.end_offsets(tps) == {tps[0]: 10, tps[1]: 10, tps[2]: 0}
    consumer.close()


def test_list_offsets_by_timestamp(broker):
    topic = kp_create_topic(broker.bootstrap, unique_topic("times"), partitions=3)
    base = int(time.time() * 1000) - 60_000
    stamps = [base + 1000 * i for i in range(10)]
    fill_timestamped(broker.bootstrap, topic, stamps)

    # librdkafka reports a broker error code at once (kafka-python retries until timeout).
    cc = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "pinion-tests-unused"})
    try:
        found = cc.offsets_for_times(
            [TopicPartition(topic, p, stamps[3] + 500) for p in range(3)], timeout=10)
    finally:
        cc.close()
    assert [(r.partition, r.offset) for r in found] == [(0, 4), (1, 4), (2, -1)]

    tps = [KpTopicPartition(topic, p) for p in range(3)]
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap)
    for tp in tps[:2]:
        def lookup(ts):
            r = consumer.offsets_for_times({tp: ts}, timeout_ms=10000)[tp]
            return None if r is None else (r.offset, r.timestamp)
        assert lookup(stamps[3]) == (3, stamps[3]), tp          # exact hit
        assert lookup(stamps[3] + 500) == (4, stamps[4]), tp    # first at or after
        assert lookup(0) == (0, stamps[0]), tp                  # before everything
        assert lookup(stamps[-1] + 1) is None, tp               # after everything
    assert consumer.offsets_for_times({tps[2]: base}, timeout_ms=10000)[tps[2]] is None
    consumer.close()


def test_fetch_from_the_middle_of_a_batch(broker):
    topic = kp_create_topic(broker.bootstrap, unique_topic("mid"), partitions=1)
    values = [b"rec-%d" % i for i in range(10)]
    assert produce_one_batch(broker.bootstrap, topic, values) == list(range(10))
    batches = read_batches(segment_files(broker.partition_dirs(topic)[0])[0])
    assert [b.record_count for b in batches] == [10], "set-up: expected a single batch"

    # The broker answers with the whole batch (Kafka does); the raw view shows it...
    _, resp = wire.timed_fetch(broker.bootstrap, topic, 0, offset=5, max_wait_ms=100)
    (_, _, error_code, hw, records), = resp
    assert (error_code, hw) == (0, 10)
    assert struct.unpack_from(">q", records)[0] == 0, "batch containing offset 5 starts at 0"

    # ...and clients start exactly at the requested offset.
    tp = KpTopicPartition(topic, 0)
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, consumer_timeout_ms=3000)
    consumer.assign([tp])
    consumer.seek(tp, 5)
    assert [(m.offset, m.value) for m in consumer] == list(enumerate(values))[5:]
    consumer.close()

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "pinion-tests-unused",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 7)])
    got = []
    deadline = time.monotonic() + 15
    try:
        while len(got) < 3 and time.monotonic() < deadline:
            got += [(m.offset(), m.value()) for m in consumer.consume(10, timeout=1)
                    if not m.error()]
    finally:
        consumer.close()
    assert got == list(enumerate(values))[7:]


def test_fetch_long_poll_waits_max_wait_ms(broker):
    topic = kp_create_topic(broker.bootstrap, unique_topic("wait"), partitions=1)
    produce_one_batch(broker.bootstrap, topic, [b"only"])

    # Nothing at offset 1: the broker holds the fetch for about max_wait_ms...
    elapsed, resp = wire.timed_fetch(broker.bootstrap, topic, 0, offset=1, max_wait_ms=1000)
    (_, _, error_code, hw, records), = resp
    assert (error_code, hw, records) == (0, 1, b"")
    assert 0.8 <= elapsed <= 2.5, f"empty fetch with max_wait 1000 ms took {elapsed:.3f} s"

    # ...but answers at once when data is already there.
    elapsed, resp = wire.timed_fetch(broker.bootstrap, topic, 0, offset=0, max_wait_ms=5000)
    assert b"only" in resp[0][4]
    assert elapsed < 0.5, f"fetch with data available took {elapsed:.3f} s"


def test_fetch_long_poll_wakes_on_produce(broker):
    topic = kp_create_topic(broker.bootstrap, unique_topic("wake"), partitions=1)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    producer.send(topic, b"first", partition=0).get(timeout=10)

    # Raw: a fetch parked with a 10 s max wait returns promptly once a record lands.
    result = {}

    def parked_fetch():
        result["elapsed"], result["resp"] = wire.timed_fetch(
            broker.bootstrap, topic, 0, offset=1, max_wait_ms=10_000)
        result["done"] = time.monotonic()

    t = threading.Thread(target=parked_fetch)
    t.start()
    time.sleep(1.0)
    producer.send(topic, b"wake-up", partition=0).get(timeout=10)
    acked = time.monotonic()
    t.join(15)
    assert "done" in result, "parked fetch never returned"
    assert b"wake-up" in result["resp"][0][4]
    assert result["done"] - acked < 1.0, \
        f"parked fetch answered {result['done'] - acked:.3f} s after the produce"

    # kafka-python consumer with a 5 s fetch_max_wait_ms, waiting at the end of the log.
    tp = KpTopicPartition(topic, 0)
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, fetch_max_wait_ms=5000,
                             request_timeout_ms=30000)
    consumer.assign([tp])
    consumer.seek_to_end(tp)
    assert consumer.poll(timeout_ms=1500) == {}  # its fetch is now parked at the broker
    sent = {}

    def late_produce():
        time.sleep(0.5)
        producer.send(topic, b"late", partition=0).get(timeout=10)
        sent["at"] = time.monotonic()

    t = threading.Thread(target=late_produce)
    t.start()
    got, deadline = [], time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=100).values():
            got += records
    received = time.monotonic()
    t.join(10)
    consumer.close()
    producer.close()
    assert [r.value for r in got] == [b"late"]
    assert received - sent["at"] < 1.0, \
        f"consumer got the record {received - sent['at']:.3f} s after it was acked"


def test_auto_create_uses_num_partitions(broker_factory):
    broker = broker_factory(overrides={"num.partitions": 3})
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    producer.send("auto-made", b"x").get(timeout=10)
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap)
    assert consumer.partitions_for_topic("auto-made") == {0, 1, 2}
    consumer.close()
    wait_until(lambda: len(broker.partition_dirs("auto-made")) == 3,
               what="three partition directories")


def test_broker_describe_configs_has_defaults_and_overrides(broker_factory):
    broker = broker_factory(overrides={"num.partitions": 3, "message.max.bytes": 500000})
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    broker_id = next(iter(admin.list_topics(timeout=10).brokers))
    resource = ConfigResource(ConfigResource.Type.BROKER, str(broker_id))
    configs = admin.describe_configs([resource])[resource].result(10)
    values = {name: entry.value for name, entry in configs.items()}
    for key in ("auto.create.topics.enable", "log.segment.bytes", "socket.request.max.bytes",
                "log.retention.bytes"):
        assert key in values, f"{key} missing from broker configs: {sorted(values)}"
    assert values["num.partitions"] == "3"
    assert values["message.max.bytes"] == "500000"
    assert values["auto.create.topics.enable"] == "true"


def test_large_and_small_batches_read_back_with_their_offsets_from_cache_and_disk(broker):
    """Batches of 64 KiB and more are cached as the request's own bytes, whose baseOffset field
    still holds the producer's 0, and the broker puts the log's offset in on the way out;
    smaller ones are copied. Both kinds, interleaved, must read back with the right offsets
    from the cache and, after a restart, from the segment files."""
    topic = kp_create_topic(broker.bootstrap, unique_topic("bigbatch"), partitions=1)
    values = []
    for i in range(6):
        size = 200_000 if i % 2 == 0 else 300
        values.append((b"%02d:" % i) * (size // 3))
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", batch_size=16384)
    offsets = [producer.send(topic, v, partition=0).get(timeout=10).offset for v in values]
    producer.close()
    assert offsets == list(range(6))

    def read_all():
        consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                                 fetch_max_bytes=50 << 20, max_partition_fetch_bytes=10 << 20,
                                 consumer_timeout_ms=3000)
        consumer.assign([KpTopicPartition(topic, 0)])
        got = [(r.offset, r.value) for r in consumer]
        consumer.close()
        return got

    assert read_all() == list(enumerate(values))
    broker.restart()
    assert read_all() == list(enumerate(values))
    batches = read_batches(segment_files(broker.partition_dirs(topic)[0])[0])
    assert [(b.base_offset, b.crc_ok) for b in batches] == [(i, True) for i in range(6)]
