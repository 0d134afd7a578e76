"""Consumer groups with kafka-python, as the seed tutorials use them: group_id splits
partitions between consumers, different group_ids each see everything, auto_offset_reset,
manual commits that survive a consumer restart and a broker kill -9, and the admin calls."""

import threading
import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import NoOffsetForPartitionError
from kafka.structs import OffsetAndMetadata

from conftest import QUICK_GROUPS, kp_create_topic, unique_topic, wait_until


def produce(bootstrap, topic, values, partition=None):
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for v in values:
        producer.send(topic, v, partition=partition)
    producer.flush()
    producer.close()


def consumer(bootstrap, topic, group, **kw):
    kw.setdefault("auto_offset_reset", "earliest")
    kw.setdefault("enable_auto_commit", False)
    return KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                         session_timeout_ms=10000, heartbeat_interval_ms=500, **kw)


def drain(c, want, timeout=30.0):
    """Polls until `want` records arrived (or the timeout); returns their values."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        for records in c.poll(timeout_ms=200).values():
            got.extend(r.value for r in records)
    return got


def test_same_group_splits_partitions_and_never_duplicates(broker_factory):
    b = broker_factory(overrides=QUICK_GROUPS)
    topic = kp_create_topic(b.bootstrap, unique_topic("split"), partitions=6)
    values = [str(i).encode() for i in range(1200)]
    produce(b.bootstrap, topic, values)

    # Each consumer polls on its own thread, as two application instances would.
    received = {0: [], 1: []}
    assignments = {}
    stop = threading.Event()

    def run(i):
        c = consumer(b.bootstrap, topic, "split-group")
        try:
            while not stop.is_set():
                for records in c.poll(timeout_ms=200).values():
                    received[i].extend(r.value for r in records)
                if c.assignment():
                    assignments[i] = {tp.partition for tp in c.assignment()}
                c.commit()
        finally:
            c.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(received[0]) + len(received[1]) >= len(values)
                   and len(assignments) == 2 and not (assignments[0] & assignments[1]),
                   timeout=60, what="both consumers to share the topic")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert assignments[0] | assignments[1] == set(range(6))
    assert assignments[0] and assignments[1], "each consumer got partitions"
    assert not set(received[0]) & set(received[1]), "a record reached both consumers"
    assert sorted(received[0] + received[1]) == sorted(values)


def test_different_groups_each_get_every_record(broker_factory):
    b = broker_factory(overrides=QUICK_GROUPS)
    topic = kp_create_topic(b.bootstrap, unique_topic("fanout"), partitions=3)
    values = [f"m{i}".encode() for i in range(300)]
    produce(b.bootstrap, topic, values)
    for group in ("group-a", "group-b"):
        c = consumer(b.bootstrap, topic, group)
        got = drain(c, len(values))
        c.close()
        assert sorted(got) == sorted(values), group


def test_auto_offset_reset_earliest_latest_and_none(broker_factory):
    b = broker_factory(overrides=QUICK_GROUPS)
    topic = kp_create_topic(b.bootstrap, unique_topic("reset"), partitions=1)
    produce(b.bootstrap, topic, [b"old-1", b"old-2"])

    earliest = consumer(b.bootstrap, topic, "g-earliest", auto_offset_reset="earliest")
    assert drain(earliest, 2) == [b"old-1", b"old-2"]
    earliest.close()

    latest = consumer(b.bootstrap, topic, "g-latest", auto_offset_reset="latest")
    wait_until(lambda: latest.poll(timeout_ms=100) is not None and latest.assignment(),
               timeout=30, what="assignment")
    latest.position(TopicPartition(topic, 0))  # resolves the start position: the end
    produce(b.bootstrap, topic, [b"new-1"])
    assert drain(latest, 1) == [b"new-1"], "latest skips what was there before"
    latest.close()

    none = consumer(b.bootstrap, topic, "g-none", auto_offset_reset="none")
    with pytest.raises(NoOffsetForPartitionError):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            none.poll(timeout_ms=200)
    none.close()


def test_manual_commit_resumes_after_consumer_restart_and_broker_kill9(broker_factory):
    b = broker_factory(overrides=QUICK_GROUPS)
    topic = kp_create_topic(b.bootstrap, unique_topic("resume"), partitions=2)
    values = [str(i).encode() for i in range(100)]
    produce(b.bootstrap, topic, values[:60])

    c = consumer(b.bootstrap, topic, "resumers")
    first = drain(c, 60)
    assert sorted(first) == sorted(values[:60])
    c.commit()
    committed = {p: c.committed(TopicPartition(topic, p)) for p in (0, 1)}
    c.close()
    assert sum(committed.values()) == 60

    # The broker dies right after acknowledging the commit: the offsets survive.
    b.kill9()
    b.restart()
    produce(b.bootstrap, topic, values[60:])
    c = consumer(b.bootstrap, topic, "resumers")
    assert {p: c.committed(TopicPartition(topic, p)) for p in (0, 1)} == committed
    rest = drain(c, 40)
    c.close()
    assert sorted(rest) == sorted(values[60:]), "resumes right after the last commit"


def test_commit_metadata_round_trips(broker_factory):
    b = broker_factory(overrides=QUICK_GROUPS)
    topic = kp_create_topic(b.bootstrap, unique_topic("meta"), partitions=1)
    produce(b.bootstrap, topic, [b"x"] * 5)
    c = consumer(b.bootstrap, topic, "meta-group")
    drain(c, 5)
    tp = TopicPartition(topic, 0)
    metadata = "checkpoint:\u00e9\u00e8 {\"a\": 1}"
    try:
        c.commit({tp: OffsetAndMetadata(3, metadata, -1)})
    except TypeError:  # kafka-python 2.0.x: OffsetAndMetadata(offset, metadata)
        c.commit({tp: OffsetAndMetadata(3, metadata)})
    c.close()
    from kafka import KafkaAdminClient
    admin = KafkaAdminClient(bootstrap_servers=b.bootstrap)
    offsets = list_offsets(admin, "meta-group")
    admin.close()
    assert offsets[tp].offset == 3
    assert offsets[tp].metadata == metadata


def list_offsets(admin, group):
    """kafka-python 2.0 names it list_consumer_group_offsets, 3.0 list_group_offsets."""
    if hasattr(admin, "list_consumer_group_offsets"):
        return admin.list_consumer_group_offsets(group)
    return admin.list_group_offsets({group: None})[group]


def test_admin_list_describe_offsets_and_delete_groups(broker_factory):
    from kafka import KafkaAdminClient

    b = broker_factory(overrides=QUICK_GROUPS)
    topic = kp_create_topic(b.bootstrap, unique_topic("admin"), partitions=2)
    produce(b.bootstrap, topic, [b"v"] * 10, partition=0)
    c = consumer(b.bootstrap, topic, "admin-group")
    drain(c, 10)
    c.commit()

    admin = KafkaAdminClient(bootstrap_servers=b.bootstrap)
    try:
        if hasattr(admin, "list_consumer_groups"):
            groups = {g[0]: g for g in admin.list_consumer_groups()}
        else:
            groups = {g["group_id"]: g for g in admin.list_groups()}
        assert "admin-group" in groups

        offsets = list_offsets(admin, "admin-group")
        assert offsets[TopicPartition(topic, 0)].offset == 10

        if hasattr(admin, "describe_consumer_groups"):
            described = admin.describe_consumer_groups(["admin-group"])[0]
            state, members = described.state, described.members
        else:
            described = admin.describe_groups(["admin-group"])["admin-group"]
            state, members = described["group_state"], described["members"]
        assert state == "Stable"
        assert len(members) == 1

        delete = getattr(admin, "delete_consumer_groups", None) or admin.delete_groups
        refused = delete(["admin-group"])
        assert "NonEmpty" in str(refused), refused  # a group with members cannot be deleted
        c.close()
        wait_until(lambda: "Empty" in str(admin.describe_consumer_groups(["admin-group"])
                                           if hasattr(admin, "describe_consumer_groups")
                                           else admin.describe_groups(["admin-group"])),
                   timeout=30, what="the group to become empty after its member left")
        result = delete(["admin-group"])
        assert "NonEmpty" not in str(result) and "Error" not in str(result), result
        assert list_offsets(admin, "admin-group") == {} or all(
            o.offset == -1 for o in list_offsets(admin, "admin-group").values())
    finally:
        admin.close()


def test_offsets_log_is_compacted_and_keeps_the_latest_commits(broker_factory):
    """With small __consumer_offsets segments, thousands of commits seal segments; the broker
    snapshots the live offsets and drops the sealed segments, and after a kill -9 every group
    still has exactly its last commit."""
    import glob
    import os

    b = broker_factory(overrides={**QUICK_GROUPS, "offsets.topic.segment.bytes": "20000",
                                  "offsets.topic.num.partitions": "1"})
    topic = kp_create_topic(b.bootstrap, unique_topic("compact"), partitions=2)
    produce(b.bootstrap, topic, [b"x"] * 10)
    consumers = {g: consumer(b.bootstrap, topic, g) for g in ("cg-a", "cg-b")}
    for c in consumers.values():
        drain(c, 10)
    tps = [TopicPartition(topic, p) for p in (0, 1)]
    last = {}
    for i in range(1, 601):
        for g, c in consumers.items():
            offsets = {tp: OffsetAndMetadata(i, f"{g}-{i}", -1) for tp in tps}
            try:
                c.commit(offsets)
            except TypeError:  # kafka-python 2.0.x
                c.commit({tp: OffsetAndMetadata(i, f"{g}-{i}") for tp in tps})
            last[g] = i
    for c in consumers.values():
        c.close()

    logs = lambda: glob.glob(os.path.join(b.data_dir, "__consumer_offsets-0", "*.log"))
    # 1,200 commit batches of ~300 bytes seal many 20 kB segments; the compactor runs every 5 s.
    wait_until(lambda: len(logs()) <= 2, timeout=30, what="the offsets log to be compacted")
    assert any("compacted" in line for line in b.stderr_tail(200).splitlines())

    b.kill9()
    b.restart()
    from kafka import KafkaAdminClient
    admin = KafkaAdminClient(bootstrap_servers=b.bootstrap)
    try:
        for g, i in last.items():
            offsets = list_offsets(admin, g)
            assert {tp: (offsets[tp].offset, offsets[tp].metadata) for tp in tps} == \
                {tp: (i, f"{g}-{i}") for tp in tps}, g
    finally:
        admin.close()
