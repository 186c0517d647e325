"""A partition's offsets on a broker, checked with an independent client (confluent-kafka).

Run by suite/tests/broker_offsets.rs against a local tansu broker on each storage (sqlite://,
memory://): what a real Kafka broker answers when records arrive in multi-record batches. A
changelog restore reads to the end offset it is told, and a consumer that resumes or seeks
lands inside a batch, so both must be right. Each check prints one line; exits non-zero at the
first that fails, saying what was expected and what was seen.

    python offsets.py --bootstrap HOST:PORT --prefix UNIQUE
"""

import argparse
import sys
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

DEADLINE_S = 30.0
# Two batches of several records each (linger lets the producer batch them), then a third.
BATCHES = (1000, 250, 7)


class CheckFailed(Exception):
    pass


def expect(condition, what):
    if not condition:
        raise CheckFailed(what)


def produce(bootstrap, topic, batches):
    """Writes each batch as one flush of keyed records; returns the offsets the broker gave."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 100,
            "batch.num.messages": 10000,
            "enable.idempotence": True,
        }
    )
    offsets = []

    def delivered(error, message):
        expect(error is None, f"delivery failed: {error}")
        offsets.append(message.offset())

    written = 0
    for size in batches:
        for i in range(size):
            producer.produce(topic, key=f"k{written + i}", value=f"v{written + i}", partition=0,
                             on_delivery=delivered)
        written += size
        remaining = producer.flush(DEADLINE_S)
        expect(remaining == 0, f"{remaining} records not delivered within {DEADLINE_S} s")
    return sorted(offsets)


def read_from(bootstrap, topic, offset, end):
    """The offsets a consumer assigned at `offset` reads until it has seen `end - 1`."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{topic}-reader",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        }
    )
    consumer.assign([TopicPartition(topic, 0, offset)])
    seen = []
    deadline = time.monotonic() + DEADLINE_S
    while (not seen or seen[-1] < end - 1) and time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is None:
            continue
        if message.error():
            expect(message.error().code() == KafkaError._PARTITION_EOF, f"{message.error()}")
            continue
        seen.append(message.offset())
    consumer.close()
    return seen


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--prefix", required=True)
    args = parser.parse_args()

    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    topic = f"{args.prefix}-offsets"
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(DEADLINE_S)
    total = sum(BATCHES)
    try:
        offsets = produce(args.bootstrap, topic, BATCHES)
        expect(offsets == list(range(total)), f"offsets given {offsets[:3]}..{offsets[-3:]}, "
               f"expected 0..{total - 1}")
        print(f"ok produced {total} records in {len(BATCHES)} flushes, offsets 0..{total - 1}")

        # The end and the start a restore or a lag figure reads: ListOffsets latest/earliest.
        consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": f"{topic}-w"})
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), DEADLINE_S)
        consumer.close()
        expect((low, high) == (0, total), f"watermarks ({low}, {high}), expected (0, {total})")
        listed = {}
        for name, spec in (("earliest", OffsetSpec.earliest()), ("latest", OffsetSpec.latest())):
            futures = admin.list_offsets({TopicPartition(topic, 0): spec})
            listed[name] = futures[TopicPartition(topic, 0)].result(DEADLINE_S).offset
        expect(listed == {"earliest": 0, "latest": total},
               f"list_offsets {listed}, expected earliest 0, latest {total}")
        print(f"ok end_offsets watermarks (0, {total}), list_offsets earliest 0 latest {total}")

        # A consumer that starts inside a batch reads the rest of it, then the rest.
        for start in (BATCHES[0] // 2, BATCHES[0] + BATCHES[1] - 1, total - 3):
            seen = read_from(args.bootstrap, topic, start, total)
            expect(seen == list(range(start, total)),
                   f"from offset {start}: read {len(seen)} records "
                   f"({seen[:3]}..{seen[-3:]}), expected {start}..{total - 1}")
        print("ok fetch_inside_a_batch from the middle of the first, the end of the second, "
              "and inside the last")
    except CheckFailed as failed:
        print(f"FAILED: {failed}")
        sys.exit(1)


if __name__ == "__main__":
    main()
