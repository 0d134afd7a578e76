"""Several shards (one per core): partitions spread over shards must all work, whichever
shard a client's connection lands on. Placement itself is not externally visible, so
every partition's records are checked."""

import os
import threading

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from conftest import kp_consume_all, kp_create_topic, unique_topic

PARTITIONS = 8
PER_PARTITION = 250


def produce_to_every_partition(bootstrap, topic, start=0, count=PER_PARTITION):
    """`count` records into each partition; returns {partition: [(offset, key, value)]}."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    futures = {p: [] for p in range(PARTITIONS)}
    for i in range(start, start + count):
        for p in range(PARTITIONS):
            key, value = b"k%d" % p, b"p%d-r%d" % (p, i)
            futures[p].append((key, value, producer.send(topic, value, key=key, partition=p)))
    producer.flush(30)
    sent = {p: [(f.get(timeout=10).offset, k, v) for k, v, f in futs]
            for p, futs in futures.items()}
    producer.close()
    return sent


def check_round_trip(broker, topic, sent):
    total = sum(len(v) for v in sent.values())
    got = kp_consume_all(broker.bootstrap, topic, PARTITIONS, total)
    for p in range(PARTITIONS):
        assert [(r.offset, r.key, r.value) for r in got[p]] == sent[p], f"partition {p}"


def run_shard_round_trip(broker):
    topic = kp_create_topic(broker.bootstrap, unique_topic("shards"), partitions=PARTITIONS)
    sent = produce_to_every_partition(broker.bootstrap, topic)
    for p in range(PARTITIONS):
        assert [o for o, _, _ in sent[p]] == list(range(PER_PARTITION)), f"partition {p}"
    check_round_trip(broker, topic, sent)

    # Concurrent producers (separate connections, likely on different shards) writing
    # to the same partitions: every partition stays dense and holds every record.
    results, errors = [], []

    def worker(n):
        try:
            results.append(produce_to_every_partition(broker.bootstrap, topic,
                                                      start=10_000 * (n + 1), count=50))
        except Exception as e:  # surfaced by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not errors, errors
    for p in range(PARTITIONS):
        sent[p] = sorted(sent[p] + [rec for r in results for rec in r[p]])
        assert [o for o, _, _ in sent[p]] == list(range(PER_PARTITION + 150)), f"partition {p}"
    check_round_trip(broker, topic, sent)

    # Every shard recovers its partitions after a restart.
    broker.restart()
    check_round_trip(broker, topic, sent)


def test_two_shards_unpinned(broker_factory):
    run_shard_round_trip(broker_factory(shards=2, no_pin=True))


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="pinning 2 shards needs 2 CPUs")
def test_two_shards_pinned(broker_factory):
    run_shard_round_trip(broker_factory(shards=2))


def test_shard_on_the_router_cpu(broker_factory):
    """`--router-core 0 --shard-cores 0`: the shard runs inside the router's executor. Produce,
    fetch, restart, a kill -9 and a consumer group's committed offsets all work as with a shard
    on a CPU of its own."""
    broker = broker_factory(args=["--router-core", "0", "--shard-cores", "0"])
    run_shard_round_trip(broker)

    topic = kp_create_topic(broker.bootstrap, unique_topic("beside"), partitions=PARTITIONS)
    sent = produce_to_every_partition(broker.bootstrap, topic, count=40)
    broker.kill9()
    broker.start()
    check_round_trip(broker, topic, sent)

    consumer = KafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id="beside-group",
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=10_000)
    seen = 0
    for _ in consumer:
        seen += 1
        if seen == 8 * 40:
            break
    consumer.commit()
    consumer.close()
    assert seen == 8 * 40
    broker.restart()
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id="beside-group")
    committed = {p: consumer.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)}
    consumer.close()
    assert committed == {p: 40 for p in range(PARTITIONS)}
