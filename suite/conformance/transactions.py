"""Kafka transactions on a broker, checked with an independent client (confluent-kafka).

Run by suite/tests/broker_transactions.rs against a local tansu broker, before the engine relies
on transactions (issue 28): every check is what a real Kafka broker does, and each prints one
line. Exits non-zero at the first check that fails, saying what was expected and what was seen.

    python transactions.py --bootstrap HOST:PORT --prefix UNIQUE [--only NAME]
"""

import argparse
import subprocess
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

DEADLINE_S = 30.0


class CheckFailed(Exception):
    pass


def expect(condition, what):
    if not condition:
        raise CheckFailed(what)


class Broker:
    def __init__(self, bootstrap, prefix):
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.admin = AdminClient({"bootstrap.servers": bootstrap})

    def topic(self, name, partitions=1):
        topic = f"{self.prefix}-{name}"
        futures = self.admin.create_topics([NewTopic(topic, partitions, 1)])
        futures[topic].result(DEADLINE_S)
        return topic

    def producer(self, transactional_id, **settings):
        config = {
            "bootstrap.servers": self.bootstrap,
            "transactional.id": f"{self.prefix}-{transactional_id}",
            "linger.ms": 5,
        }
        config.update(settings)
        producer = Producer(config)
        producer.init_transactions(DEADLINE_S)
        return producer

    def consumer(self, isolation, group=None):
        return Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": group or f"{self.prefix}-reader",
                "isolation.level": isolation,
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
            }
        )

    def read(self, topic, isolation, partition=0):
        """Every value of the partition a consumer of this isolation level sees, in order, and its
        position once it reached the end (for read_committed, the last stable offset)."""
        consumer = self.consumer(isolation)
        try:
            consumer.assign([TopicPartition(topic, partition, 0)])
            values = []
            deadline = time.monotonic() + DEADLINE_S
            while True:
                expect(time.monotonic() < deadline, f"{isolation} read of {topic} found no end in {DEADLINE_S} s")
                message = consumer.poll(0.5)
                if message is None:
                    continue
                if message.error():
                    if message.error().code() == KafkaError._PARTITION_EOF:
                        position = consumer.position([TopicPartition(topic, partition)])[0].offset
                        return values, position
                    raise CheckFailed(f"{isolation} read of {topic}: {message.error()}")
                values.append(message.value().decode())
        finally:
            consumer.close()

    def high_watermark(self, topic, partition=0):
        consumer = self.consumer("read_uncommitted")
        try:
            return consumer.get_watermark_offsets(TopicPartition(topic, partition), DEADLINE_S, cached=False)[1]
        finally:
            consumer.close()

    def committed(self, group, topic, partition=0):
        consumer = self.consumer("read_committed", group=group)
        try:
            return consumer.committed([TopicPartition(topic, partition)], DEADLINE_S)[0].offset
        finally:
            consumer.close()

    def group_metadata(self, group):
        consumer = self.consumer("read_committed", group=group)
        try:
            return consumer.consumer_group_metadata()
        finally:
            consumer.close()


def send(producer, topic, values, partition=0):
    for value in values:
        producer.produce(topic, value=value.encode(), key=value.encode(), partition=partition)
    remaining = producer.flush(DEADLINE_S)
    expect(remaining == 0, f"{remaining} records not acknowledged in {DEADLINE_S} s")


def commit_and_abort(broker):
    """An aborted transaction's records are invisible to read_committed and visible to
    read_uncommitted; a committed one's offsets reach the group only on commit."""
    topic = broker.topic("commit-abort")
    source = broker.topic("commit-abort-source")
    group = f"{broker.prefix}-commit-abort-group"
    producer = broker.producer("commit-abort")

    producer.begin_transaction()
    send(producer, topic, [f"aborted-{n}" for n in range(5)])
    producer.send_offsets_to_transaction([TopicPartition(source, 0, 17)], broker.group_metadata(group), DEADLINE_S)
    producer.abort_transaction(DEADLINE_S)
    expect(broker.committed(group, source) < 0, "an aborted transaction's offsets reached the group")

    producer.begin_transaction()
    send(producer, topic, [f"committed-{n}" for n in range(7)])
    metadata = broker.group_metadata(group)
    producer.send_offsets_to_transaction([TopicPartition(source, 0, 40)], metadata, DEADLINE_S)
    # A second send in one transaction: the later offset wins.
    producer.send_offsets_to_transaction([TopicPartition(source, 0, 42)], metadata, DEADLINE_S)
    producer.commit_transaction(DEADLINE_S)

    committed_values, _ = broker.read(topic, "read_committed")
    expect(
        committed_values == [f"committed-{n}" for n in range(7)],
        f"read_committed saw {committed_values}",
    )
    all_values, _ = broker.read(topic, "read_uncommitted")
    expect(
        all_values == [f"aborted-{n}" for n in range(5)] + [f"committed-{n}" for n in range(7)],
        f"read_uncommitted saw {all_values}",
    )
    offset = broker.committed(group, source)
    expect(offset == 42, f"the group's committed offset is {offset}, not 42")


def last_stable_offset(broker):
    """While a transaction is open, read_committed ends at its first offset; its records appear
    once it commits."""
    topic = broker.topic("lso")
    producer = broker.producer("lso")
    producer.begin_transaction()
    send(producer, topic, ["before-0", "before-1"])
    producer.commit_transaction(DEADLINE_S)

    open_from = broker.high_watermark(topic)
    producer.begin_transaction()
    send(producer, topic, ["open-0", "open-1", "open-2"])
    values, position = broker.read(topic, "read_committed")
    expect(values == ["before-0", "before-1"], f"with a transaction open, read_committed saw {values}")
    expect(position == open_from, f"read_committed ended at {position}, not at the open transaction's {open_from}")

    producer.commit_transaction(DEADLINE_S)
    values, _ = broker.read(topic, "read_committed")
    expect(
        values == ["before-0", "before-1", "open-0", "open-1", "open-2"],
        f"after the commit, read_committed saw {values}",
    )


def fenced_zombie(broker):
    """A second producer with the same transactional.id fences the first: the first's open
    transaction is aborted and it can no longer commit."""
    topic = broker.topic("fencing")
    zombie = broker.producer("fencing")
    zombie.begin_transaction()
    send(zombie, topic, ["zombie-0", "zombie-1"])

    successor = broker.producer("fencing")
    values, _ = broker.read(topic, "read_committed")
    expect(values == [], f"the fenced producer's open transaction was not aborted: read_committed saw {values}")

    try:
        zombie.commit_transaction(DEADLINE_S)
        raise CheckFailed("the fenced producer committed")
    except KafkaException as error:
        expect(
            error.args[0].fatal() or error.args[0].code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH),
            f"the fenced producer's commit failed with {error.args[0]}, not as fenced",
        )

    successor.begin_transaction()
    send(successor, topic, ["successor-0"])
    successor.commit_transaction(DEADLINE_S)
    values, _ = broker.read(topic, "read_committed")
    expect(values == ["successor-0"], f"read_committed saw {values}")


def many_and_interleaved(broker):
    """Transactions one after another on one producer, and two producers interleaving on one
    partition: each commit and abort lands as Kafka's would."""
    topic = broker.topic("interleaved")
    one = broker.producer("interleaved-one")
    other = broker.producer("interleaved-other")
    expected = []
    for round_ in range(4):
        one.begin_transaction()
        send(one, topic, [f"one-{round_}"])
        other.begin_transaction()
        send(other, topic, [f"other-{round_}"])
        one.commit_transaction(DEADLINE_S)
        expected.append(f"one-{round_}")
        send(other, topic, [f"other-{round_}-more"])
        if round_ % 2 == 0:
            other.abort_transaction(DEADLINE_S)
        else:
            other.commit_transaction(DEADLINE_S)
            expected += [f"other-{round_}", f"other-{round_}-more"]
    values, position = broker.read(topic, "read_committed")
    # read_committed delivers in offset order: one's records before other's where they were
    # written first.
    offsets_order = broker.read(topic, "read_uncommitted")[0]
    expected_in_order = [value for value in offsets_order if value in expected]
    expect(values == expected_in_order, f"read_committed saw {values}, expected {expected_in_order}")
    expect(position == broker.high_watermark(topic), "read_committed did not reach the end with no transaction open")


def abandoned_transaction_times_out(broker):
    """A producer that dies with a transaction open and never comes back: the broker aborts the
    transaction after its timeout, so read_committed readers move past it."""
    topic = broker.topic("timeout")
    before = broker.producer("timeout-before")
    before.begin_transaction()
    send(before, topic, ["before"])
    before.commit_transaction(DEADLINE_S)
    open_from = broker.high_watermark(topic)
    script = (
        "import os, sys\n"
        "from confluent_kafka import Producer\n"
        "p = Producer({'bootstrap.servers': sys.argv[1], 'transactional.id': sys.argv[2],"
        " 'transaction.timeout.ms': 3000})\n"
        "p.init_transactions(30)\n"
        "p.begin_transaction()\n"
        "p.produce(sys.argv[3], value=b'abandoned', partition=0)\n"
        "assert p.flush(30) == 0\n"
        "os._exit(0)\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, broker.bootstrap, f"{broker.prefix}-abandoned", topic],
        check=True,
        timeout=DEADLINE_S,
    )
    values, position = broker.read(topic, "read_committed")
    expect(values == ["before"] and position == open_from, f"read_committed saw {values} up to {position} at once")
    deadline = time.monotonic() + DEADLINE_S
    while True:
        values, position = broker.read(topic, "read_committed")
        if position > open_from:
            break
        expect(time.monotonic() < deadline, f"the abandoned transaction still pins read_committed at {position} after {DEADLINE_S} s")
        time.sleep(0.5)
    expect(values == ["before"], f"the abandoned transaction's records became visible: {values}")


CHECKS = [commit_and_abort, last_stable_offset, fenced_zombie, many_and_interleaved, abandoned_transaction_times_out]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--only")
    args = parser.parse_args()
    broker = Broker(args.bootstrap, args.prefix)
    for check in CHECKS:
        if args.only and check.__name__ != args.only:
            continue
        started = time.monotonic()
        try:
            check(broker)
        except CheckFailed as failure:
            print(f"FAIL {check.__name__}: {failure}", flush=True)
            return 1
        except KafkaException as error:
            print(f"FAIL {check.__name__}: the client failed: {error.args[0]}", flush=True)
            return 1
        print(f"ok {check.__name__} ({time.monotonic() - started:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
