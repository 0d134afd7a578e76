"""kcat's balanced consumer (-G) reads a topic end to end through a consumer group, and a
second run of the same group resumes from the offsets the first one committed."""

import subprocess

from conftest import kp_create_topic, unique_topic


def kcat(*args, stdin=None, timeout=60):
    return subprocess.run(["kcat", *args], input=stdin, capture_output=True, text=True, timeout=timeout)


def group_read(bootstrap, group, topic):
    # -e: exit once every assigned partition is at its end.
    r = kcat("-b", bootstrap, "-G", group, "-X", "auto.offset.reset=earliest",
             "-X", "enable.auto.commit=true", "-X", "auto.commit.interval.ms=100",
             "-e", "-q", "-f", "%p %o %s\n", topic)
    assert r.returncode == 0, r.stderr
    return [line.split(" ", 2) for line in r.stdout.splitlines() if line]


def test_kcat_balanced_consumer_reads_and_resumes(broker):
    topic = kp_create_topic(broker.bootstrap, unique_topic("kcatg"), partitions=3)
    first = [f"a{i}" for i in range(30)]
    r = kcat("-b", broker.bootstrap, "-P", "-t", topic, stdin="\n".join(first) + "\n")
    assert r.returncode == 0, r.stderr

    got = group_read(broker.bootstrap, "kcat-group", topic)
    assert sorted(v for _, _, v in got) == sorted(first)
    for p in {p for p, _, _ in got}:
        offsets = [int(o) for q, o, _ in got if q == p]
        assert offsets == list(range(len(offsets))), f"partition {p} in order, no gaps"

    second = [f"b{i}" for i in range(10)]
    kcat("-b", broker.bootstrap, "-P", "-t", topic, stdin="\n".join(second) + "\n")
    again = group_read(broker.bootstrap, "kcat-group", topic)
    assert sorted(v for _, _, v in again) == sorted(second), "resumes after the committed offsets"
