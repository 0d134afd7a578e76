"""The kafka-python snippets from the tutorials in /work/shared/seeds, run against pinion.

The code is kept as close to the tutorials as it can run unattended. Deliberate changes:
  * bootstrap_servers is the test broker's address instead of 127.0.0.1:9092;
  * consumers that iterate get consumer_timeout_ms so the loop ends (the tutorials run
    forever), and the per-message time.sleep(2) / print calls are left out;
  * consumer groups are not used here yet: where a tutorial passes group_id (e.g.
    'test_consumer_group', 'kafka-group-id') it is None here, and the tutorial's
    consumer.commit() / list_consumer_groups() calls are not made.
Topic names are the tutorials' own: every test gets a fresh broker and data dir.

Runs under kafka-python 3.0.x (.venv) and 2.0.2 (.venv-kp2); the few API differences
between the two are isolated in small helpers below.
"""

import json
import time

import kafka.version
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import InvalidReplicationFactorError, TopicAlreadyExistsError

from conftest import wait_until

KP_VERSION = tuple(int(x) for x in kafka.version.__version__.split(".")[:2])
KP3 = KP_VERSION >= (3, 0)

CONTENTS = [{"title": "生命不息,运动不止!", "index": _id} for _id in range(1, 5)]


def record_metadata_fields(result):
    return result.topic, result.partition, result.offset


def topic_config_values(admin, topic):
    """{config name: value} for a topic, with every config (not only overridden ones)."""
    resource_config = ConfigResource(ConfigResourceType.TOPIC, topic)
    if KP3:
        # 3.0 returns {'topic': {name: {config: {...}}}} and by default filters out
        # configs still at their default value; ask for all of them.
        out = admin.describe_configs([resource_config], config_filter="all")
        entries = out["topic"][topic]
        return {name: e["value"] for name, e in entries.items()}
    # 2.0.2 returns one DescribeConfigsResponse per request sent; the tutorial prints
    # `.resources`, whose items are (error_code, error_message, type, name, entries).
    values = {}
    for response in admin.describe_configs([resource_config]):
        for error_code, error_message, _type, name, entries in response.resources:
            assert error_code == 0, f"describe_configs error {error_code}: {error_message}"
            assert name == topic
            values.update({entry[0]: entry[1] for entry in entries})
    return values


# ------------------------------------------------------------------ producers

def test_producer_json_serializer_future_get(broker):
    servers = [broker.bootstrap]
    # -- tutorial, first form: value_serializer does the JSON encoding
    producer = KafkaProducer(
        bootstrap_servers=servers,
        value_serializer=lambda m: json.dumps(m, ensure_ascii=False).encode(),
    )
    results = []
    for _id in range(1, 5):
        content = {"title": "生命不息,运动不止!", "index": _id}
        future = producer.send(topic='test_topic', value=content)
        result = future.get(timeout=10)
        results.append(result)
    producer.close()

    # -- tutorial, second form: encode by hand
    producer = KafkaProducer(bootstrap_servers=servers)
    for _id in range(1, 5):
        content = {"title": "生命不息,运动不止!", "index": _id}
        future = producer.send(
            topic="test_topic",
            value=json.dumps(content, ensure_ascii=False).encode("utf-8"),
        )
        result = future.get(timeout=10)
        results.append(result)
    producer.close()

    # Auto-created topic with the default single partition: offsets are dense from 0.
    assert [record_metadata_fields(r) for r in results] == [
        ("test_topic", 0, offset) for offset in range(8)]

    consumer = KafkaConsumer("test_topic", bootstrap_servers=servers,
                             auto_offset_reset="earliest", consumer_timeout_ms=3000)
    got = [msg for msg in consumer]
    consumer.close()
    assert [json.loads(m.value.decode()) for m in got] == CONTENTS + CONTENTS
    assert [(m.topic, m.partition, m.offset) for m in got] == [
        ("test_topic", 0, o) for o in range(8)]
    # The tutorial prints msg.timestamp as local time: it must be a real "now" in ms.
    for m in got:
        assert abs(m.timestamp / 1000 - time.time()) < 600, m.timestamp


def test_simple_producer_and_consumer(broker):
    # seed 000: send without flush, close() must deliver it
    producer = KafkaProducer(bootstrap_servers=[broker.bootstrap])
    producer.send('my_topic', b'Hello, Kafka!')
    producer.close()

    # seed 001 "简单写法" (enable_auto_commit has no effect without a group)
    consumer = KafkaConsumer(
        'my_topic',
        bootstrap_servers=broker.bootstrap,
        auto_offset_reset='earliest',
        enable_auto_commit=True,
        consumer_timeout_ms=3000,
    )
    received = [message.value.decode('utf-8') for message in consumer]
    consumer.close()
    assert received == ["Hello, Kafka!"]


def test_consumer_default_latest_sees_only_new_records(broker):
    # seed 000's consumer has no auto_offset_reset, so it starts at the end of the log.
    producer = KafkaProducer(bootstrap_servers=[broker.bootstrap])
    producer.send('my_topic', b'old').get(timeout=10)

    consumer = KafkaConsumer('my_topic', bootstrap_servers=[broker.bootstrap])
    tp = TopicPartition('my_topic', 0)
    # Without a group the consumer assigns itself the partitions once metadata arrives.
    wait_until(lambda: consumer.poll(timeout_ms=100) is not None and consumer.assignment(),
               what="consumer self-assignment")
    assert consumer.position(tp) == 1

    producer.send('my_topic', b'Hello, Kafka!').get(timeout=10)
    producer.close()
    received, deadline = [], time.monotonic() + 3
    while time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=200).values():
            received.extend(r.value for r in records)
    consumer.close()
    assert received == [b'Hello, Kafka!']


# ------------------------------------------------------------------ consumers

def test_subscribe_and_poll(broker):
    # seed 001 "生产者"
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    for _ in range(3):
        producer.send(topic='test', value=b'Hello, Kafka!')
    producer.flush()
    producer.close()

    # seed 001 "正常流程"
    consumer = KafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        auto_offset_reset='earliest',
        enable_auto_commit=True,
    )
    consumer.subscribe(topics=['test'])
    # The tutorial polls once with 100 ms; the first polls only fetch metadata and
    # positions, so poll until the three records are in (bounded).
    records, deadline = [], time.monotonic() + 15
    while len(records) < 3 and time.monotonic() < deadline:
        datas = consumer.poll(timeout_ms=100)
        for key, record in datas.items():
            assert key == TopicPartition('test', 0)
            records.extend(record)
    consumer.close()
    assert [r.value.decode('utf-8') for r in records] == ['Hello, Kafka!'] * 3
    assert [r.offset for r in records] == [0, 1, 2]


def test_assign_and_seek_to_beginning(broker):
    producer = KafkaProducer(bootstrap_servers=[broker.bootstrap])
    for i in range(5):
        producer.send("test_topic", f"msg-{i}".encode()).get(timeout=10)
    producer.close()

    # seed 002 "消费方式2, 指定消费分区" (group_id 'test_consumer_group' -> None;
    # consumer_timeout_ms 1000 -> 3000 to leave room for connection set-up)
    bootstrap_servers = [broker.bootstrap]
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        consumer_timeout_ms=3000,
        group_id=None,
        enable_auto_commit=False,
    )
    consumer.assign([TopicPartition("test_topic", 0)])
    consumer.seek_to_beginning()
    first = [(msg.offset, msg.value) for msg in consumer]
    expected = [(i, f"msg-{i}".encode()) for i in range(5)]
    assert first == expected

    # Rewinding again re-reads everything; seeking into the middle starts there.
    consumer.seek_to_beginning()
    assert [(msg.offset, msg.value) for msg in consumer] == expected
    consumer.seek(TopicPartition("test_topic", 0), 3)
    assert [(msg.offset, msg.value) for msg in consumer] == expected[3:]
    consumer.close()


def test_topics_partitions_and_position(broker):
    servers = [broker.bootstrap]
    producer = KafkaProducer(bootstrap_servers=servers)
    for i in range(3):
        producer.send('kafka-topic', b'x%d' % i).get(timeout=10)
    producer.close()

    # seed 002 retrieve_topics / retrieve_partitions
    consumer = KafkaConsumer(bootstrap_servers=servers)
    assert 'kafka-topic' in consumer.topics()
    assert consumer.partitions_for_topic('kafka-topic') == {0}
    consumer.close()

    # seed 002 retrieve_partition_offset (group_id 'kafka-group-id' -> None): with no
    # committed offset the position comes from the reset policy, 'latest' by default.
    consumer = KafkaConsumer(bootstrap_servers=servers, group_id=None)
    tp = TopicPartition('kafka-topic', 0)
    consumer.assign([tp])
    assert consumer.position(tp) == 3
    consumer.close()

    consumer = KafkaConsumer(bootstrap_servers=servers, group_id=None,
                             auto_offset_reset='earliest')
    consumer.assign([tp])
    assert consumer.position(tp) == 0
    consumer.close()


# ------------------------------------------------------------------ admin

def test_admin_create_topics(broker):
    servers = [broker.bootstrap]
    admin = KafkaAdminClient(bootstrap_servers=servers)

    # seed 002 create_topic, verbatim: replication factor 3 on a one-node cluster
    with pytest.raises(InvalidReplicationFactorError):
        new_topic = NewTopic("create-topic", 8, 3)
        admin.create_topics([new_topic])

    consumer = KafkaConsumer(bootstrap_servers=servers)
    assert "create-topic" not in consumer.topics()

    admin.create_topics([NewTopic("create-topic", 8, 1)])
    assert consumer.partitions_for_topic("create-topic") == set(range(8))
    assert len(broker.partition_dirs("create-topic")) == 8

    # The tutorial's except branch: a second create is TopicAlreadyExistsError.
    with pytest.raises(TopicAlreadyExistsError):
        admin.create_topics([NewTopic("create-topic", 8, 1)])

    # Every partition takes writes and hands back its own dense offsets.
    producer = KafkaProducer(bootstrap_servers=servers)
    for p in range(8):
        for i in range(2):
            md = producer.send("create-topic", b"v", partition=p).get(timeout=10)
            assert (md.partition, md.offset) == (p, i)
    producer.close()
    consumer.close()
    admin.close()


def test_admin_delete_topics(broker):
    servers = [broker.bootstrap]
    admin = KafkaAdminClient(bootstrap_servers=servers)
    admin.create_topics([NewTopic("create-topic", 8, 1)])
    admin.create_topics([NewTopic("keep-topic", 1, 1)])
    producer = KafkaProducer(bootstrap_servers=servers)
    producer.send("create-topic", b"doomed").get(timeout=10)
    producer.close()
    assert len(broker.partition_dirs("create-topic")) == 8

    # seed 002 delete_topic
    admin.delete_topics(["create-topic"])

    wait_until(lambda: "create-topic" not in admin.list_topics(), timeout=15,
               what="create-topic to leave the topic list")
    assert "keep-topic" in admin.list_topics()
    # Kafka renames deleted partitions (<topic>-<n>.<id>-delete) before removing them;
    # both forms must be gone in the end.
    wait_until(lambda: not [p for p in broker.data_dir.iterdir()
                            if p.name.startswith("create-topic-")],
               timeout=15, what="create-topic's partition directories to be removed")
    assert len(broker.partition_dirs("keep-topic")) == 1
    admin.close()


def test_admin_describe_configs(broker):
    servers = [broker.bootstrap]
    admin = KafkaAdminClient(bootstrap_servers=servers)
    admin.create_topics([NewTopic("create-topic", 8, 1)])

    # seed 002 get_topic_config
    values = topic_config_values(admin, "create-topic")
    for key in ("retention.ms", "segment.bytes", "cleanup.policy"):
        assert key in values, f"{key} missing from describe_configs: {sorted(values)}"
    assert values["cleanup.policy"] == "delete"
    assert values["retention.ms"] == "604800000"  # Kafka's default: 7 days
    assert int(values["segment.bytes"]) > 0

    # A config given at creation time is what describe_configs reports back.
    admin.create_topics([NewTopic("short-topic", 1, 1,
                                  topic_configs={"retention.ms": "3600000"})])
    assert topic_config_values(admin, "short-topic")["retention.ms"] == "3600000"
    admin.close()
