"""The `pinion` command line against the real broker, each effect cross-checked with a
third-party client (kcat, kafka-python, confluent-kafka).

The seed tutorials' walk-throughs and their pinion equivalents:
  kafka-topics.sh --create/--list/--describe/--alter/--delete  -> pinion topic create|list|describe|alter|delete
  kafka-console-producer.sh --topic test                       -> pinion produce test
  kafka-console-consumer.sh --topic test --from-beginning      -> pinion consume test --from-beginning
  kafka-consumer-groups.sh --list/--describe/--reset-offsets   -> pinion group list|describe|reset-offsets
  kafka-configs.sh --describe/--alter                          -> pinion config get|set
  kafka-broker-api-versions.sh                                 -> pinion cluster info
  kafka-dump-log.sh --files x.log --print-data-log             -> pinion dump-log x.log --records
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from conftest import BIN, QUICK_GROUPS, unique_topic, wait_until
from segment_file import flip_byte_in_last_batch, read_batches, segment_files

pytestmark = pytest.mark.skipif(shutil.which("kcat") is None,
                                reason="kcat not installed (scripts/test installs it)")


def pinion(*args, stdin=None, timeout=60):
    """Runs the CLI; returns the CompletedProcess (bytes)."""
    return subprocess.run([str(BIN), *args], input=stdin, capture_output=True, timeout=timeout)


def ok(broker, *args, stdin=None, timeout=60):
    """Runs a CLI command against `broker` that must succeed; returns its stdout as text."""
    proc = pinion(*args, "-b", broker.bootstrap, stdin=stdin, timeout=timeout)
    assert proc.returncode == 0, (
        f"pinion {' '.join(args)} exited {proc.returncode}: {proc.stderr.decode(errors='replace')}")
    return proc.stdout.decode()


def fails(*args, stdin=None, timeout=60):
    """Runs a CLI command that must fail with one clear line; returns that line."""
    proc = pinion(*args, stdin=stdin, timeout=timeout)
    assert proc.returncode != 0, f"pinion {' '.join(args)} succeeded: {proc.stdout[:2000]!r}"
    lines = proc.stderr.decode(errors="replace").strip().splitlines()
    assert len(lines) == 1, f"expected one error line, got: {lines}"
    assert lines[0].startswith("pinion: "), lines[0]
    return lines[0]


def kcat(broker, *args, stdin=None, timeout=60):
    proc = subprocess.run(["kcat", "-b", broker.bootstrap, *args], input=stdin,
                          capture_output=True, timeout=timeout)
    assert proc.returncode == 0, f"kcat {' '.join(args)}: {proc.stderr.decode(errors='replace')}"
    return proc.stdout


def kcat_topics(broker):
    return {t["topic"]: t for t in json.loads(kcat(broker, "-L", "-J"))["topics"]}


def group_offsets(bootstrap, group):
    """Committed offsets of `group` per (topic, partition), as kafka-python reads them."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        if hasattr(admin, "list_consumer_group_offsets"):
            offsets = admin.list_consumer_group_offsets(group)
        else:
            offsets = admin.list_group_offsets({group: None})[group]
    finally:
        admin.close()
    return {(tp.topic, tp.partition): o.offset for tp, o in offsets.items() if o.offset >= 0}


# ------------------------------------------------------------------------ topics

def test_topic_create_is_seen_by_kcat_and_described(broker):
    topic = unique_topic("cli-create")
    out = ok(broker, "topic", "create", topic, "-p", "3", "-r", "1", "-c", "retention.ms=86400000")
    assert topic in out and "created" in out

    meta = kcat_topics(broker)
    assert topic in meta
    assert sorted(p["partition"] for p in meta[topic]["partitions"]) == [0, 1, 2]

    assert topic in ok(broker, "topic", "list").split()
    listed = {t["topic"]: t for t in json.loads(ok(broker, "topic", "list", "--json"))}
    assert listed[topic]["partitions"] == 3 and listed[topic]["replication_factor"] == 1

    kcat(broker, "-P", "-t", topic, "-p", "1", stdin=b"a\nb\n")
    described = json.loads(ok(broker, "topic", "describe", topic, "--json"))[0]
    parts = {p["partition"]: p for p in described["partitions"]}
    assert parts[1]["start_offset"] == 0 and parts[1]["end_offset"] == 2
    assert parts[0]["end_offset"] == 0
    assert {c["name"]: c["value"] for c in described["configs"]} == {"retention.ms": "86400000"}
    text = ok(broker, "topic", "describe", topic)
    assert "retention.ms" in text and "END-OFFSET" in text

    # Creating it again fails, unless --if-not-exists.
    line = fails("topic", "create", topic, "-b", broker.bootstrap)
    assert "TOPIC_ALREADY_EXISTS" in line
    ok(broker, "topic", "create", topic, "--if-not-exists")


def test_topic_alter_and_delete(broker):
    from confluent_kafka.admin import AdminClient, ConfigResource

    topic = unique_topic("cli-alter")
    ok(broker, "topic", "create", topic, "-p", "2")
    ok(broker, "topic", "alter", topic, "-p", "4", "-c", "retention.ms=3600000")
    assert len(kcat_topics(broker)[topic]["partitions"]) == 4
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    assert admin.describe_configs([resource])[resource].result(10)["retention.ms"].value == "3600000"

    line = fails("topic", "alter", topic, "-p", "2", "-b", broker.bootstrap)
    assert "cannot" in line or "not be removed" in line or "not removed" in line

    ok(broker, "topic", "delete", topic)
    wait_until(lambda: topic not in kcat_topics(broker), what="the topic to disappear")
    assert "does not exist" in fails("topic", "delete", topic, "-b", broker.bootstrap)
    ok(broker, "topic", "delete", topic, "--if-exists")


# --------------------------------------------------------------- produce / consume

LINES = ["hello", "world", "", "ünïcode ✓ 日本語", "tab\there", "x" * 5000, "last line"]


def test_produced_lines_come_out_of_kcat_identical(broker):
    topic = unique_topic("cli-produce")
    ok(broker, "topic", "create", topic, "-p", "1")
    stdin = ("\n".join(LINES) + "\n").encode()
    ok(broker, "produce", topic, stdin=stdin)
    out = kcat(broker, "-C", "-t", topic, "-o", "beginning", "-e", "-q")
    assert out == stdin

    # Keys split at the separator, as kcat -K reads them back.
    keyed = unique_topic("cli-keyed")
    ok(broker, "topic", "create", keyed, "-p", "3")
    pairs = "".join(f"k{i % 5}:value {i}\n" for i in range(100)).encode()
    ok(broker, "produce", keyed, "-k", ":", stdin=pairs)
    out = kcat(broker, "-C", "-t", keyed, "-o", "beginning", "-e", "-q", "-K:", "-f", "%p %k:%s\n")
    got = out.decode().splitlines()
    assert sorted(line.split(" ", 1)[1] for line in got) == sorted(pairs.decode().splitlines())
    # One key, one partition: the same key is never split.
    partition_of = {}
    for line in got:
        partition, rest = line.split(" ", 1)
        assert partition_of.setdefault(rest.split(":")[0], partition) == partition


def test_every_acks_level_delivers(broker):
    topic = unique_topic("cli-acks")
    ok(broker, "topic", "create", topic, "-p", "1")
    for acks in ("0", "1", "all"):
        # --broker-list, as kafka-console-producer.sh spells it in the tutorials.
        proc = pinion("produce", topic, "--acks", acks, "--broker-list", broker.bootstrap,
                      stdin=f"acks={acks}\n".encode())
        assert proc.returncode == 0, proc.stderr
    out = wait_until(lambda: (o := kcat(broker, "-C", "-t", topic, "-o", "beginning", "-e", "-q"))
                     .count(b"\n") == 3 and o, what="three records")
    assert sorted(out.decode().splitlines()) == ["acks=0", "acks=1", "acks=all"]


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_compressed_batches_are_read_by_kcat(broker, codec):
    topic = unique_topic(f"cli-{codec}")
    ok(broker, "topic", "create", topic, "-p", "1")
    lines = [f"{codec} record {i} " + "abc" * (i % 40) for i in range(2000)]
    stdin = ("\n".join(lines) + "\n").encode()
    ok(broker, "produce", topic, "-z", codec, "-H", "origin=cli", "--batch-size", "500", stdin=stdin)
    out = kcat(broker, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%h|%s\n")
    assert out.decode().splitlines() == [f"origin=cli|{line}" for line in lines]
    # And pinion reads them back itself.
    out = ok(broker, "consume", topic, "--from-beginning", "--exit-at-end")
    assert out.splitlines() == lines


def test_produce_reports_offsets_and_errors_per_record(broker):
    topic = unique_topic("cli-json")
    ok(broker, "topic", "create", topic, "-p", "2")
    out = ok(broker, "produce", topic, "-p", "1", "--json", stdin=b"a\nb\nc\n")
    reports = [json.loads(line) for line in out.splitlines()]
    assert [(r["line"], r["partition"], r["offset"]) for r in reports] == [(1, 1, 0), (2, 1, 1), (3, 1, 2)]

    # A line without the key separator is refused alone; the others go through.
    proc = pinion("produce", topic, "-k", ":", "-b", broker.bootstrap, stdin=b"k:1\nnokey\nk:2\n")
    assert proc.returncode == 1
    err = proc.stderr.decode().strip().splitlines()
    assert err[0].startswith("pinion: line 2:") and "separator" in err[0]
    assert err[-1] == "pinion: 1 of 3 records were not produced"
    out = kcat(broker, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e", "-q", "-K:")
    out += kcat(broker, "-C", "-t", topic, "-p", "1", "-o", "3", "-e", "-q", "-K:")
    assert sorted(out.decode().splitlines()) == ["k:1", "k:2"]

    # A record larger than the topic allows: the broker's error, for that record.
    ok(broker, "config", "set", "--topic", topic, "max.message.bytes=2000")
    proc = pinion("produce", topic, "-p", "0", "-b", broker.bootstrap, stdin=b"y" * 5000 + b"\n")
    assert proc.returncode == 1
    assert "MESSAGE_TOO_LARGE" in proc.stderr.decode(), proc.stderr


def test_kcat_records_come_out_of_pinion_consume(broker):
    topic = unique_topic("cli-consume")
    ok(broker, "topic", "create", topic, "-p", "2")
    lines = [f"kcat line {i} ✓" for i in range(300)]
    kcat(broker, "-P", "-t", topic, "-p", "0", "-z", "gzip",
         stdin=("\n".join(lines[:200]) + "\n").encode())
    kcat(broker, "-P", "-t", topic, "-p", "1", "-K:", "-H", "h1=v1",
         stdin="".join(f"key{i}:{v}\n" for i, v in enumerate(lines[200:])).encode())

    out = ok(broker, "consume", topic, "--from-beginning", "-e")
    assert sorted(out.splitlines()) == sorted(lines)

    # One partition, from an offset, with a template; then JSON.
    out = ok(broker, "consume", topic, "-p", "1", "-o", "98", "-e", "-f", "%p/%o %k=%v [%h]\\n")
    assert out.splitlines() == [f"1/98 key98={lines[298]} [h1:v1]", f"1/99 key99={lines[299]} [h1:v1]"]
    out = ok(broker, "consume", topic, "-p", "1", "-o", "-1", "-e", "--json")
    record = json.loads(out)
    assert (record["offset"], record["key"], record["value"], record["headers"]) == \
        (99, "key99", lines[299], {"h1": "v1"})

    # Kafka's console layout with --print-* flags.
    out = ok(broker, "consume", topic, "-p", "1", "-o", "-1", "-e", "--print-key", "--print-offset",
             "--print-partition")
    assert out == f"Partition:1\tOffset:99\tkey99\t{lines[299]}\n"

    # Stops after --max-messages, and after --timeout without records.
    out = ok(broker, "consume", topic, "--from-beginning", "-n", "7")
    assert len(out.splitlines()) == 7
    started = time.monotonic()
    out = ok(broker, "consume", topic, "--timeout", "1s")  # from the end: nothing comes
    assert out == "" and time.monotonic() - started < 10


# ------------------------------------------------------------------------ groups

def test_group_lag_and_reset_offsets_with_kafka_python(broker_factory):
    broker = broker_factory(overrides=QUICK_GROUPS)
    topic = unique_topic("cli-lag")
    group = "cli-lag-group"
    ok(broker, "topic", "create", topic, "-p", "2")
    for p in (0, 1):
        ok(broker, "produce", topic, "-p", str(p), stdin=b"".join(b"p%d-%d\n" % (p, i) for i in range(10)))

    consumer = KafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id=group,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             session_timeout_ms=10000, heartbeat_interval_ms=500)
    got = 0
    deadline = time.monotonic() + 30
    while got < 20 and time.monotonic() < deadline:
        got += sum(len(r) for r in consumer.poll(timeout_ms=200).values())
    assert got == 20
    consumer.commit()

    # While it is a member: the member and its assignment are shown.
    described = json.loads(ok(broker, "group", "describe", group, "--json"))[0]
    assert described["state"] == "Stable"
    assert len(described["members"]) == 1
    assert sorted(described["members"][0]["assignment"][topic]) == [0, 1]
    assert all(r["member_id"] == described["members"][0]["member_id"] for r in described["offsets"])
    assert group in ok(broker, "group", "list")
    # A group with members refuses a reset.
    assert "active member" in fails("group", "reset-offsets", group, "-t", topic, "--to-earliest",
                                    "--execute", "-b", broker.bootstrap)
    consumer.close()

    ok(broker, "produce", topic, "-p", "0", stdin=b"more 1\nmore 2\nmore 3\n")
    described = json.loads(ok(broker, "group", "describe", group, "--json"))[0]
    lag = {r["partition"]: (r["current_offset"], r["log_end_offset"], r["lag"]) for r in described["offsets"]}
    assert lag == {0: (10, 13, 3), 1: (10, 10, 0)}
    assert described["total_lag"] == 3
    text = ok(broker, "group", "describe", group)
    assert "LAG" in text and "LOG-END-OFFSET" in text

    # Dry run by default: nothing changes.
    out = ok(broker, "group", "reset-offsets", group, "-t", topic, "--to-earliest")
    assert "NEW-OFFSET" in out
    assert group_offsets(broker.bootstrap, group) == {(topic, 0): 10, (topic, 1): 10}

    ok(broker, "group", "reset-offsets", group, "-t", topic, "--to-earliest", "--execute")
    assert group_offsets(broker.bootstrap, group) == {(topic, 0): 0, (topic, 1): 0}
    ok(broker, "group", "reset-offsets", group, "--all-topics", "--shift-by", "4", "--execute")
    assert group_offsets(broker.bootstrap, group) == {(topic, 0): 4, (topic, 1): 4}
    ok(broker, "group", "reset-offsets", group, "-t", f"{topic}:1", "--to-offset", "999", "--execute")
    assert group_offsets(broker.bootstrap, group) == {(topic, 0): 4, (topic, 1): 10}
    ok(broker, "group", "reset-offsets", group, "-t", topic, "--to-latest", "--execute")
    assert group_offsets(broker.bootstrap, group) == {(topic, 0): 13, (topic, 1): 10}
    # To a time: the first record at or after it (here: before everything, so the start).
    ok(broker, "group", "reset-offsets", group, "-t", topic, "--to-datetime", "2020-01-01T00:00:00Z",
       "--execute")
    assert group_offsets(broker.bootstrap, group) == {(topic, 0): 0, (topic, 1): 0}

    # kafka-python resumes where the reset put the group.
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group,
                             enable_auto_commit=False)
    assert consumer.committed(TopicPartition(topic, 0)) == 0
    consumer.close()

    ok(broker, "group", "delete", group)
    assert "does not exist" in fails("group", "describe", group, "-b", broker.bootstrap)


def test_consume_with_group_commits_at_exit(broker_factory):
    broker = broker_factory(overrides=QUICK_GROUPS)
    topic = unique_topic("cli-group")
    group = "cli-consume-group"
    ok(broker, "topic", "create", topic, "-p", "1")
    ok(broker, "produce", topic, stdin=b"".join(b"r%d\n" % i for i in range(20)))

    out = ok(broker, "consume", topic, "-g", group, "--from-beginning", "-n", "5")
    assert out.splitlines() == [f"r{i}" for i in range(5)]
    assert group_offsets(broker.bootstrap, group) == {(topic, 0): 5}
    # The next member of the group goes on from the commit.
    out = ok(broker, "consume", topic, "-g", group, "-n", "3")
    assert out.splitlines() == ["r5", "r6", "r7"]
    assert group_offsets(broker.bootstrap, group) == {(topic, 0): 8}

    # Ctrl-C: the records printed so far are committed, and the exit is clean.
    proc = subprocess.Popen([str(BIN), "consume", topic, "-g", group, "-b", broker.bootstrap],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        lines = [proc.stdout.readline() for _ in range(12)]
        assert [line.decode().strip() for line in lines] == [f"r{i}" for i in range(8, 20)]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert group_offsets(broker.bootstrap, group) == {(topic, 0): 20}
    # The member left on exit: the group is empty, so it can be deleted at once.
    ok(broker, "group", "delete", group)


# ------------------------------------------------------------- configs, cluster

def test_config_get_and_set_agree_with_confluent_admin(broker):
    from confluent_kafka.admin import AdminClient, ConfigResource

    topic = unique_topic("cli-config")
    ok(broker, "topic", "create", topic)
    ok(broker, "config", "set", "--topic", topic, "retention.ms=5000", "segment.bytes=1048576")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(10)
    assert configs["retention.ms"].value == "5000"
    assert configs["segment.bytes"].value == "1048576"

    got = {c["name"]: c for c in json.loads(ok(broker, "config", "get", "--topic", topic, "--json"))}
    assert got["retention.ms"]["value"] == "5000"
    assert got["retention.ms"]["source"] == "DYNAMIC_TOPIC_CONFIG"
    assert got["cleanup.policy"]["source"] == "DEFAULT_CONFIG"

    ok(broker, "config", "set", "--topic", topic, "--delete", "retention.ms")
    changed = ok(broker, "config", "get", "--topic", topic, "--changed")
    assert "segment.bytes" in changed and "retention.ms" not in changed

    broker_configs = json.loads(ok(broker, "config", "get", "--broker", "--json"))
    assert any(c["name"] == "num.partitions" for c in broker_configs)
    assert "INVALID_CONFIG" in fails("config", "set", "--topic", topic, "retention.ms=soon",
                                     "-b", broker.bootstrap)


def test_cluster_info_lists_the_broker_and_its_api_versions(broker):
    info = json.loads(ok(broker, "cluster", "info", "--json"))
    meta = json.loads(kcat(broker, "-L", "-J"))
    assert [b["id"] for b in info["brokers"]] == [b["id"] for b in meta["brokers"]]
    assert info["brokers"][0]["port"] == broker.port
    assert info["controller"] == info["brokers"][0]["id"]
    apis = {a["api"]: a for a in info["api_versions"]["apis"]}
    for api in ("Produce", "Fetch", "Metadata", "ApiVersions", "JoinGroup", "OffsetCommit"):
        assert api in apis
    assert apis["ApiVersions"]["min"] == 0
    assert "API VERSIONS" in ok(broker, "cluster", "info")


# ---------------------------------------------------------------------- dump-log

def test_dump_log_lists_the_batches_and_flags_a_corrupt_one(broker):
    topic = unique_topic("cli-dump")
    ok(broker, "topic", "create", topic, "-p", "1")
    # One produce run per batch: 2, 3 and 1 records, each with its own codec.
    ok(broker, "produce", topic, stdin=b"a\nb\n")
    ok(broker, "produce", topic, "-z", "gzip", "-k", ":", stdin=b"k1:c\nk2:d\nk3:e\n")
    ok(broker, "produce", topic, "-z", "lz4", stdin=b"the last one\n")
    partition_dir = broker.partition_dirs(topic)[0]
    broker.stop()  # seals the segment: exact length, index files written

    log = segment_files(partition_dir)[0]
    proc = pinion("dump-log", str(log), "--records", "--json")
    assert proc.returncode == 0, proc.stderr
    dumped = json.loads(proc.stdout)[0]
    batches = dumped["batches"]
    assert [(b["base_offset"], b["records_count"], b["compression"]) for b in batches] == \
        [(0, 2, "none"), (2, 3, "gzip"), (5, 1, "lz4")]
    assert all(b["valid"] for b in batches)
    assert [b["position"] for b in batches] == [b.start for b in read_batches(log)]
    assert [r["value"] for b in batches for r in b["records"]] == \
        ["a", "b", "c", "d", "e", "the last one"]
    assert [r["key"] for r in batches[1]["records"]] == ["k1", "k2", "k3"]
    assert dumped["problems"] == 0

    text = pinion("dump-log", str(log)).stdout.decode()
    assert "3 batches, 6 records, offsets 0-5" in text
    for index in (log.with_suffix(".index"), log.with_suffix(".timeindex")):
        proc = pinion("dump-log", str(index))
        assert proc.returncode == 0, proc.stderr
        assert b"passes pinion's load checks" in proc.stdout

    damaged = flip_byte_in_last_batch(log)
    proc = pinion("dump-log", str(log), "--json")
    assert proc.returncode == 1
    err = proc.stderr.decode().strip().splitlines()
    assert len(err) == 1 and "damage found" in err[0], err
    batches = json.loads(proc.stdout)[0]["batches"]
    assert [b["valid"] for b in batches] == [True, True, False]
    assert batches[2]["position"] == damaged.start
    assert "CRC" in batches[2]["problem"]
    text = pinion("dump-log", str(log)).stdout.decode()
    assert "INVALID" in text and "DAMAGED: batch at position" in text


# -------------------------------------------------------------------------- errors

def test_unknown_topics_fail_with_one_line(broker_factory):
    broker = broker_factory(overrides={"auto.create.topics.enable": "false"})
    b = broker.bootstrap
    assert fails("topic", "describe", "nope", "-b", b) == 'pinion: topic "nope" does not exist'
    assert fails("consume", "nope", "-b", b, "--timeout", "2s") == 'pinion: topic "nope" does not exist'
    assert fails("produce", "nope", "-b", b, stdin=b"x\n") == 'pinion: topic "nope" does not exist'
    assert "does not exist" in fails("config", "get", "--topic", "nope", "-b", b)
    assert "does not exist" in fails("group", "describe", "no-such-group", "-b", b)


def test_unreachable_broker_fails_within_the_timeout():
    # Nothing listens on this port.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for args in (["topic", "list"], ["consume", "t", "--timeout", "2s"], ["cluster", "info"],
                 ["group", "list"]):
        line = fails(*args, "-b", f"127.0.0.1:{port}", *([] if "consume" in args else ["--timeout", "2s"]))
        assert line.startswith(f"pinion: cannot reach broker 127.0.0.1:{port}"), line

    # A socket that accepts connections but never answers: the request times out.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        started = time.monotonic()
        line = fails("topic", "list", "-b", f"127.0.0.1:{port}", "--timeout", "1s")
        assert time.monotonic() - started < 10
        assert "did not answer" in line and "1s" in line, line


def test_bad_arguments_exit_2():
    for args in (["consume", "t", "--offset", "soon"], ["produce", "t", "--acks", "2"],
                 ["topic", "create"], ["group", "reset-offsets", "g", "-t", "t"],
                 ["topic", "list", "--timeout", "10 parsecs"]):
        proc = pinion(*args)
        assert proc.returncode == 2, (args, proc.stderr)
    assert pinion("--help").returncode == 0
    for command in ("topic", "produce", "consume", "group", "config", "cluster", "dump-log"):
        proc = pinion(command, "--help")
        assert proc.returncode == 0 and b"Usage: pinion " + command.encode() in proc.stdout


def test_dump_log_of_a_missing_file_fails_with_one_line(test_workdir):
    line = fails("dump-log", str(test_workdir / "00000000000000000000.log"))
    assert "cannot open" in line
    assert "not a .log" in fails("dump-log", os.devnull)
