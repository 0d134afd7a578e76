"""Several shards (one per core): partitions spread over shards must all work, whichever
shard a client's connection lands on. Placement itself is not externally visible, so
every partition's records are checked."""

import os
import threading

import pytest
from kafka import KafkaProducer

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
