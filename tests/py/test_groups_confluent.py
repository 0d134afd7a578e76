"""A confluent-kafka (librdkafka) group of three on six partitions: one member is killed
without leaving; after its session timeout its partitions move to the other two. With a
synchronous commit per record, every record is processed and none twice across the run,
with the eager (range) and the cooperative-sticky assignors."""

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import unique_topic, wait_until

MEMBER = Path(__file__).with_name("group_member.py")
RECORDS = 1800


class Member:
    def __init__(self, bootstrap, topic, group, strategy):
        cmd = [sys.executable, str(MEMBER), "--bootstrap", bootstrap, "--topic", topic,
               "--group", group, "--strategy", strategy]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.processed = []
        self.assignments = []
        self.stopped = False
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            kind, _, rest = line.strip().partition(" ")
            if kind == "P":
                p, o = rest.split()
                self.processed.append((int(p), int(o)))
            elif kind == "A":
                self.assignments.append({int(x) for x in rest.split(",") if x})
            elif kind == "STOPPED":
                self.stopped = True

    def current(self):
        return self.assignments[-1] if self.assignments else set()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.mark.parametrize("strategy", ["range", "cooperative-sticky"])
def test_killed_member_partitions_move_and_every_record_is_processed_once(broker_factory, strategy):
    b = broker_factory()
    topic = unique_topic("grp")
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    for f in admin.create_topics([NewTopic(topic, 6, 1)]).values():
        f.result(timeout=30)
    producer = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 5})
    for i in range(RECORDS):
        producer.produce(topic, key=str(i).encode(), value=str(i).encode())
    assert producer.flush(30) == 0

    group = f"members-{strategy}"
    members = [Member(b.bootstrap, topic, group, strategy) for _ in range(3)]
    victim, survivors = members[0], members[1:]
    try:
        wait_until(lambda: all(m.current() for m in members)
                   and len(set().union(*(m.current() for m in members))) == 6,
                   timeout=60, what="three members sharing six partitions")
        wait_until(lambda: victim.processed, timeout=30, what="the victim to process records")
        victim.proc.send_signal(signal.SIGUSR1)
        wait_until(lambda: victim.stopped, timeout=30, what="the victim to stop processing")
        lost = victim.current()
        assert lost, "the victim owned partitions"
        victim.kill()  # no LeaveGroup: only the session timeout tells the broker
        killed_at = time.monotonic()
        wait_until(lambda: set().union(*(s.current() for s in survivors)) == set(range(6)),
                   timeout=45, what="the victim's partitions to move to the survivors")
        moved_after = time.monotonic() - killed_at
        wait_until(lambda: sum(len(m.processed) for m in members) >= RECORDS,
                   timeout=60, what="every record to be processed")
    finally:
        for m in members:
            m.kill()
    processed = [po for m in members for po in m.processed]
    assert len(processed) == len(set(processed)), "a record was processed twice"
    per_partition = {}
    for p, o in processed:
        per_partition.setdefault(p, set()).add(o)
    total = sum(len(v) for v in per_partition.values())
    assert total == RECORDS
    for p, offsets in per_partition.items():
        assert offsets == set(range(len(offsets))), f"partition {p} has gaps"
    # The session timeout is 6 s: the move happens after it, not long after.
    assert moved_after < 30, moved_after
    survivors_processed = {p for s in survivors for p, _ in s.processed}
    assert lost & survivors_processed, "survivors processed the victim's partitions"


def test_confluent_admin_lists_describes_and_deletes_groups(broker_factory):
    from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition

    b = broker_factory(overrides={"group.initial.rebalance.delay.ms": "0"})
    topic = unique_topic("cadmin")
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    for f in admin.create_topics([NewTopic(topic, 2, 1)]).values():
        f.result(timeout=30)
    consumer = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "cadmin-group",
                         "enable.auto.commit": False})
    consumer.subscribe([topic])
    wait_until(lambda: consumer.poll(0.2) is None and consumer.assignment(), timeout=30,
               what="an assignment")
    consumer.commit(offsets=[TopicPartition(topic, 0, 7, "meta-0"), TopicPartition(topic, 1, 9)],
                    asynchronous=False)

    listed = admin.list_consumer_groups().result(timeout=30)
    assert "cadmin-group" in {g.group_id for g in listed.valid}

    described = admin.describe_consumer_groups(["cadmin-group"])["cadmin-group"].result(timeout=30)
    assert described.state.name == "STABLE"
    assert len(described.members) == 1
    assert {tp.partition for tp in described.members[0].assignment.topic_partitions} == {0, 1}

    request = [ConsumerGroupTopicPartitions("cadmin-group")]
    offsets = admin.list_consumer_group_offsets(request)["cadmin-group"].result(timeout=30)
    by_partition = {tp.partition: tp for tp in offsets.topic_partitions}
    assert (by_partition[0].offset, by_partition[0].metadata) == (7, "meta-0")
    assert by_partition[1].offset == 9

    consumer.close()  # leaves the group, which then may be deleted
    admin.delete_consumer_groups(["cadmin-group"])["cadmin-group"].result(timeout=30)
    listed = admin.list_consumer_groups().result(timeout=30)
    assert "cadmin-group" not in {g.group_id for g in listed.valid}
