"""Durability and recovery: kill -9 must not lose acknowledged (acks=all) records, and a
damaged tail of a segment (torn write, flipped bit) must be cut off on restart without
losing anything before it."""

import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KpTopicPartition

from conftest import kp_consume_all, kp_create_topic, unique_topic
from segment_file import (flip_byte_in_last_batch, read_batches, segment_files,
                          truncate_inside_last_batch)

CRASH_PARTITIONS = 4
ACKED_BEFORE_KILL = 20_000


def value_for(i):
    return b"record-%09d-" % i + bytes(range(i % 64))


def read_partitions(bootstrap, topic, partitions):
    """Every record of every partition up to its high watermark, via confluent assign().
    Returns ({partition: [(offset, key, value)]}, {partition: high_watermark})."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "pinion-tests-unused",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        highs = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                 for p in range(partitions)}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        out = {p: [] for p in range(partitions)}
        pending = {p for p in range(partitions) if highs[p] > 0}
        deadline = time.monotonic() + 60
        while pending and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=10000, timeout=1.0):
                if msg.error():
                    assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                    continue
                out[msg.partition()].append((msg.offset(), msg.key(), msg.value()))
                if msg.offset() + 1 >= highs[msg.partition()]:
                    pending.discard(msg.partition())
        return out, highs
    finally:
        consumer.close()


def test_kill9_loses_no_acknowledged_record(broker):
    topic = kp_create_topic(broker.bootstrap, unique_topic("crash"), partitions=CRASH_PARTITIONS)
    acked = {}     # i -> (partition, offset)
    failed = []

    def on_delivery(err, msg):
        i = int(msg.key())
        if err is None:
            acked[i] = (msg.partition(), msg.offset())
        else:
            failed.append(i)

    producer = Producer({
        "bootstrap.servers": broker.bootstrap,
        "acks": "all",
        "linger.ms": 1,
        "retries": 0,                 # each record is sent at most once: no duplicates
        "message.timeout.ms": 5000,   # after the kill, pending records fail quickly
    })
    i = 0
    killed_at = None
    give_up = time.monotonic() + 60
    # Keep records in flight continuously so the kill lands mid-stream, and keep
    # producing for a moment after it.
    while killed_at is None or time.monotonic() < killed_at + 0.5:
        assert time.monotonic() < give_up, f"only {len(acked)} records acked in 60 s"
        try:
            producer.produce(topic, key=b"%d" % i, value=value_for(i),
                             partition=i % CRASH_PARTITIONS, on_delivery=on_delivery)
            i += 1
            producer.poll(0)
        except BufferError:
            producer.poll(0.01)
        if killed_at is None and len(acked) >= ACKED_BEFORE_KILL:
            broker.kill9()
            killed_at = time.monotonic()
    producer.flush(20)
    assert len(acked) + len(failed) == i, "every record must end acked or failed"
    assert len(acked) >= ACKED_BEFORE_KILL

    broker.restart()
    records, highs = read_partitions(broker.bootstrap, topic, CRASH_PARTITIONS)
    stored = {}
    for p in range(CRASH_PARTITIONS):
        offsets = [o for o, _, _ in records[p]]
        assert offsets == list(range(highs[p])), \
            f"p{p}: offsets not dense 0..{highs[p] - 1} (got {len(offsets)} records)"
        for o, key, value in records[p]:
            n = int(key)
            assert value == value_for(n), f"p{p} o{o}: corrupt value for record {n}"
            assert n not in stored, f"record {n} stored twice"
            stored[n] = (p, o)
    lost = [n for n, pos in acked.items() if stored.get(n) != pos]
    assert not lost, (f"{len(lost)} acknowledged records missing or moved, e.g. record "
                      f"{lost[0]} acked at {acked[lost[0]]}, found at {stored.get(lost[0])}")

    # The restarted broker continues each partition right after what survived.
    kp = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    for p in range(CRASH_PARTITIONS):
        assert kp.send(topic, b"after", partition=p).get(timeout=10).offset == highs[p]
    kp.close()


# -------------------------------------------------------------- damaged segment tail

def fill_partition(bootstrap, topic, batches=6, per_batch=5):
    """Produce several separate batches into partition 0; returns {offset: value}."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    written = {}
    for b in range(batches):
        values = [b"batch%d-rec%d-" % (b, r) + b"z" * 200 for r in range(per_batch)]
        futures = [producer.send(topic, v, partition=0) for v in values]
        producer.flush()  # one flush per group: the groups land in separate batches
        for v, f in zip(values, futures):
            written[f.get(timeout=10).offset] = v
    producer.close()
    return written


def check_recovered(broker, topic, written, cut_from):
    """After damage at the batch starting at `cut_from`: exactly the earlier records are
    served, and new writes continue at `cut_from`."""
    expected = [(o, written[o]) for o in sorted(written) if o < cut_from]
    got = kp_consume_all(broker.bootstrap, topic, 1, len(expected))
    assert [(r.offset, r.value) for r in got[0]] == expected

    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap)
    tp = KpTopicPartition(topic, 0)
    assert consumer.end_offsets([tp]) == {tp: cut_from}
    consumer.close()

    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    assert producer.send(topic, b"new-1", partition=0).get(timeout=10).offset == cut_from
    assert producer.send(topic, b"new-2", partition=0).get(timeout=10).offset == cut_from + 1
    producer.close()
    got = kp_consume_all(broker.bootstrap, topic, 1, len(expected) + 2)
    assert [(r.offset, r.value) for r in got[0]] == \
        expected + [(cut_from, b"new-1"), (cut_from + 1, b"new-2")]


def damaged_restart(broker, damage):
    topic = kp_create_topic(broker.bootstrap, unique_topic("torn"), partitions=1)
    written = fill_partition(broker.bootstrap, topic)
    broker.stop()

    log = segment_files(broker.partition_dirs(topic)[0])[-1]
    batches = read_batches(log)
    assert len(batches) >= 2 and all(b.crc_ok for b in batches), batches
    assert batches[-1].last_offset == max(written)
    damaged = damage(log)

    broker.restart()
    check_recovered(broker, topic, written, damaged.base_offset)


def test_truncated_last_batch_is_dropped(broker):
    damaged_restart(broker, lambda log: truncate_inside_last_batch(log, cut=7))


def test_corrupt_last_batch_is_dropped(broker):
    damaged_restart(broker, flip_byte_in_last_batch)


def test_small_segments_roll_and_survive_restart(broker_factory):
    # Many segments: names are the base offsets, and all of them are served after restart.
    broker = broker_factory(overrides={"log.segment.bytes": 64 * 1024})
    topic = kp_create_topic(broker.bootstrap, unique_topic("roll"), partitions=1)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5)
    values = [b"%06d" % i + b"r" * 1000 for i in range(1000)]
    for v in values:
        producer.send(topic, v, partition=0)
    producer.flush()
    producer.close()

    logs = segment_files(broker.partition_dirs(topic)[0])
    assert len(logs) >= 5, f"expected several ~64 KiB segments, found {len(logs)}"
    for log in logs:
        first = read_batches(log)[0]
        assert log.name == "%020d.log" % first.base_offset

    broker.restart()
    got = kp_consume_all(broker.bootstrap, topic, 1, len(values))
    assert [(r.offset, r.value) for r in got[0]] == list(enumerate(values))


def test_producer_ids_and_topics_stay_unique_and_durable_across_kill9(broker_factory):
    # Producer ids are reserved on disk a block at a time, and the metadata is saved off the
    # router's thread, one save at a time. Ask for ids on several connections at once, across
    # block boundaries, while topics are created: no id may be handed out twice, none may come
    # back after a crash, and every created topic must survive it.
    import threading

    from kafka_wire import init_producer_ids

    broker = broker_factory()
    per_connection, connections = 900, 3
    results = [None] * connections
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(
        i, init_producer_ids(broker.bootstrap, per_connection))) for i in range(connections)]
    for t in threads:
        t.start()
    topics = [kp_create_topic(broker.bootstrap, unique_topic("meta"), partitions=2) for _ in range(5)]
    for t in threads:
        t.join(60)
        assert not t.is_alive(), "InitProducerId requests went unanswered"
    # More ids once no topic is being created: the last save before the crash is then the one
    # that reserved the block they come from (2,700 handed out so far; these cross 3,000).
    results.append(init_producer_ids(broker.bootstrap, 500))
    before = [pid for result in results for (error_code, pid) in result if error_code == 0]
    assert len(before) == per_connection * connections + 500, \
        f"{per_connection * connections + 500 - len(before)} requests failed"
    assert len(set(before)) == len(before), "a producer id was handed out twice"

    broker.kill9()
    broker.start()
    after = init_producer_ids(broker.bootstrap, 10)
    assert all(error_code == 0 for error_code, _ in after)
    assert min(pid for _, pid in after) > max(before), "a producer id came back after the crash"
    from kafka import KafkaAdminClient
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        assert set(topics) <= set(admin.list_topics())
    finally:
        admin.close()
