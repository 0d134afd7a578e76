"""One member of a confluent-kafka consumer group, run as its own process by
test_groups_confluent.py. Each record counts as processed only once its offset is committed
synchronously; the member prints "P <partition> <offset>" for it, and "A <partitions>" on every
assignment. On SIGUSR1 it stops processing (it keeps polling, so it stays a healthy member),
says "STOPPED" and waits to be killed without leaving the group: a crashed instance, as far as
the broker can tell."""

import argparse
import signal
import sys
import time

from confluent_kafka import Consumer, KafkaException


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--strategy", default="range")
    args = ap.parse_args()
    paused = []
    signal.signal(signal.SIGUSR1, lambda *_: paused.append(True))

    def say(line):
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    # The callbacks get what changed; with the cooperative protocol that is an increment.
    cooperative = args.strategy.startswith("cooperative")
    owned = set()

    def on_assign(consumer, partitions):
        if not cooperative:
            owned.clear()
        owned.update(p.partition for p in partitions)
        say("A " + ",".join(str(p) for p in sorted(owned)))

    def on_revoke(consumer, partitions):
        owned.difference_update(p.partition for p in partitions) if cooperative else owned.clear()
        say("A " + ",".join(str(p) for p in sorted(owned)))

    c = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "partition.assignment.strategy": args.strategy,
    })
    c.subscribe([args.topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_revoke)
    stopped = False
    while True:
        msg = c.poll(0.2)
        if paused and not stopped:
            stopped = True
            say("STOPPED")
        if msg is None or msg.error() or stopped:
            continue
        try:
            c.commit(message=msg, asynchronous=False)
        except KafkaException:
            continue  # lost the partition in a rebalance: its next owner processes it
        say(f"P {msg.partition()} {msg.offset()}")
        # Slow enough that the kill lands while records are still left.
        time.sleep(0.002)


if __name__ == "__main__":
    main()
