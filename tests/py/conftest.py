"""Shared fixtures: run the real pinion binary for each test.

The broker contract these fixtures rely on:
  pinion serve --listen 127.0.0.1:0 --data-dir DIR [--shards N] [--no-pin] [--override k=v ...]
prints exactly one line "pinion: listening on 127.0.0.1:PORT" once it accepts connections,
and exits 0 on SIGTERM.

Broker data lives under <repo>/target/test-data/ (a real disk: the broker uses O_DIRECT,
which tmpfs does not support). A passing test's directory is removed; a failing test's
directory (data + broker log) is kept for inspection.
"""

import os
import re
import resource
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections import deque
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("PINION_BIN", REPO / "target" / "release" / "pinion"))
DATA_ROOT = REPO / "target" / "test-data"

READY_RE = re.compile(r"^pinion: listening on (127\.0\.0\.1:(\d+))\s*$")
START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
KEEP_MARKER = "teardown-failed.txt"  # keeps a test's data dir although its call passed


def _now():
    """Wall-clock time for broker log lines, to line them up with client logs."""
    t = time.time()
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"


class BrokerError(AssertionError):
    """The broker did not behave per its command-line contract."""


class Broker:
    """One pinion process (and, across restarts, its successors) on one data dir."""

    def __init__(self, workdir, args=(), overrides=None, shards=None, no_pin=False, open_files=None):
        self.workdir = Path(workdir)
        self.open_files = open_files  # RLIMIT_NOFILE for the broker: n, or (soft, hard)
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.extra_args = list(args)
        if shards is not None:
            self.extra_args += ["--shards", str(shards)]
        if no_pin:
            self.extra_args.append("--no-pin")
        for key, value in (overrides or {}).items():
            self.extra_args += ["--override", f"{key}={value}"]
        self.proc = None
        self.bootstrap = None
        self.port = None
        self.starts = 0
        self.failed_start = False
        self.exit_expected = False
        self._stderr_tail = deque(maxlen=200)
        self._log = None
        self._threads = []

    # -- lifecycle -----------------------------------------------------------

    def command(self):
        # By default the broker touches a receive pool as large as its fetch caches at start-up
        # (about a second on a VM whose memory went back to its host). The suite starts a broker
        # per test, so it keeps the pool to two chunks: pooled chunks, and the fallback once they
        # are taken, are both exercised all the same.
        pool = [] if "--recv-pool-mib" in self.extra_args else ["--recv-pool-mib", "8"]
        return [str(BIN), "serve", "--listen", "127.0.0.1:0",
                "--data-dir", str(self.data_dir), *pool, *self.extra_args]

    def _limit_open_files(self):
        limits = self.open_files if isinstance(self.open_files, tuple) else (self.open_files,) * 2
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)

    def open_fds(self):
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def start(self):
        if not BIN.exists():
            raise BrokerError(f"broker binary not found at {BIN} (cargo build --release)")
        self.starts += 1
        self.failed_start = True  # until the ready line is seen
        self.exit_expected = False  # set by stop() / kill9()
        log_path = self.workdir / f"broker-{self.starts}.log"
        self._log = open(log_path, "a", buffering=1)
        self._log.write(f"# {' '.join(self.command())}\n")
        self._stderr_tail.clear()
        ready = threading.Event()
        found = {}
        self.proc = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, errors="replace", bufsize=1,
            # Own process group: only this harness signals the broker (a Ctrl-C reaches
            # pytest, whose teardown then stops the broker and checks its exit code).
            start_new_session=True,
            preexec_fn=self._limit_open_files if self.open_files else None)

        # Both pipes are drained for the whole life of the process so the broker can
        # never block on a full pipe, whatever it logs.
        def drain_stdout(stream):
            for line in stream:
                self._log.write(f"{_now()} [out] {line}")
                m = READY_RE.match(line)
                if m and not ready.is_set():
                    found["addr"], found["port"] = m.group(1), int(m.group(2))
                    ready.set()

        def drain_stderr(stream):
            for line in stream:
                self._log.write(f"{_now()} [err] {line}")
                self._stderr_tail.append(line)

        self._threads = [
            threading.Thread(target=drain_stdout, args=(self.proc.stdout,), daemon=True),
            threading.Thread(target=drain_stderr, args=(self.proc.stderr,), daemon=True),
        ]
        for t in self._threads:
            t.start()

        deadline = time.monotonic() + START_TIMEOUT
        while not ready.wait(0.05):
            if self.proc.poll() is not None:
                self._join_drains()
                raise BrokerError(
                    f"broker exited with code {self.proc.returncode} before listening; "
                    f"stderr:\n{self.stderr_tail()}")
            if time.monotonic() > deadline:
                self._hard_kill()
                raise BrokerError(
                    f"broker printed no 'pinion: listening on' line within {START_TIMEOUT}s; "
                    f"stderr:\n{self.stderr_tail()}")
        self.bootstrap, self.port = found["addr"], found["port"]
        self.failed_start = False
        return self

    def stop(self, timeout=STOP_TIMEOUT):
        """Graceful stop: SIGTERM must end the process with exit code 0."""
        if self.proc is None:
            return
        if self.proc.poll() is not None:
            rc = self.proc.returncode
            self._finish()
            raise BrokerError(f"broker had already exited (code {rc}) before stop(); "
                              f"stderr:\n{self.stderr_tail()}")
        self.exit_expected = True
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._hard_kill()
            raise BrokerError(f"broker did not exit within {timeout}s of SIGTERM; "
                              f"stderr:\n{self.stderr_tail()}")
        self._finish()
        if rc != 0:
            raise BrokerError(f"broker exited with code {rc} after SIGTERM; "
                              f"stderr:\n{self.stderr_tail()}")

    def kill9(self):
        """Crash the broker: no chance to flush or clean up."""
        self.exit_expected = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._finish()

    def restart(self):
        """Stop (gracefully if still running) and start again on the same data dir.
        The port changes: use .bootstrap afterwards."""
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
        self.proc = None
        return self.start()

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    # -- helpers ---------------------------------------------------------------

    def stderr_tail(self, lines=40):
        return "".join(list(self._stderr_tail)[-lines:]) or "<empty>"

    def partition_dirs(self, topic):
        """Data directories of a topic's partitions (<topic>-<n>), sorted by partition."""
        pat = re.compile(re.escape(topic) + r"-(\d+)$")
        found = [(int(m.group(1)), p) for p in self.data_dir.iterdir()
                 if p.is_dir() and (m := pat.match(p.name))]
        return [p for _, p in sorted(found)]

    def _hard_kill(self):
        self.exit_expected = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._finish()

    def _join_drains(self):
        for t in self._threads:
            t.join(5)

    def _finish(self):
        self._join_drains()
        if self._log is not None:
            self._log.close()
            self._log = None


# --------------------------------------------------------------------- fixtures

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # Expose each phase's report on the item so fixtures can tell pass from fail.
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def test_workdir(request):
    """A fresh directory under target/test-data/ for this test; removed if it passed."""
    DATA_ROOT.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:80]
    path = DATA_ROOT / f"{safe}-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    yield path
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.passed and not (path / KEEP_MARKER).exists():
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def broker_factory(test_workdir):
    """Start brokers with extra options: broker_factory(overrides={...}, shards=2, no_pin=True,
    open_files=600).

    Each call gets its own data dir. Brokers still running at the end are stopped with
    SIGTERM and must exit 0; a broker that died on its own fails the test's teardown.
    """
    brokers = []

    def start(args=(), overrides=None, shards=None, no_pin=False, open_files=None, start=True):
        workdir = test_workdir / f"b{len(brokers)}"
        b = Broker(workdir, args=args, overrides=overrides, shards=shards, no_pin=no_pin,
                   open_files=open_files)
        brokers.append(b)
        return b.start() if start else b

    yield start

    problems = []
    for b in brokers:
        if b.proc is None or b.failed_start:
            b._hard_kill()
            continue  # already reported by the failing start()
        try:
            if b.proc.poll() is None:
                b.stop()
            elif not b.exit_expected:
                problems.append(f"broker exited on its own with code {b.proc.returncode} "
                                f"(a crash, or a signal from outside the test); "
                                f"stderr:\n{b.stderr_tail()}")
        except BrokerError as e:
            problems.append(str(e))
        finally:
            b._hard_kill()
    if problems:
        (test_workdir / KEEP_MARKER).write_text("\n".join(problems))
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def broker(broker_factory):
    """A broker with default settings on a fresh data dir."""
    return broker_factory()


# Broker settings for tests whose groups should form in well under Kafka's default 3 s.
# Not 0: kafka-python 3.0.12 subscribes before it has the topic's metadata, so a group that
# forms at once is assigned nothing and rejoins when the metadata arrives. If that rejoin
# finishes between two short poll() calls, the client never applies its assignment (its
# join loop sees no rejoin needed and skips the finished join) and the consumer stays idle.
# Half a second lets the metadata arrive before the first assignment, as the 3 s does.
QUICK_GROUPS = {"group.initial.rebalance.delay.ms": "500"}


# ------------------------------------------------------------ client helpers

def unique_topic(prefix="t"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def wait_until(predicate, timeout=10.0, interval=0.1, what="condition"):
    """Poll predicate() until truthy; returns its value or fails the test."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def kp_create_topic(bootstrap, topic, partitions=1, configs=None):
    """Create a topic with kafka-python's admin client (works with 2.0.x and 3.0.x)."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    try:
        admin.create_topics([NewTopic(topic, partitions, 1, topic_configs=configs or {})])
    finally:
        admin.close()
    return topic


def kp_consume_all(bootstrap, topic, partitions, expected_total, timeout=30.0, **consumer_kw):
    """Read every partition of `topic` from the beginning with assign() (no group).

    Returns {partition: [ConsumerRecord, ...]} in the order received. Stops once
    expected_total records arrived (or after the timeout; callers assert the counts).
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, **consumer_kw)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    out = {p: [] for p in range(partitions)}
    got = 0
    deadline = time.monotonic() + timeout
    try:
        while got < expected_total and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500).items():
                out[tp.partition].extend(records)
                got += len(records)
    finally:
        consumer.close()
    return out
