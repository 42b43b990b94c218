"""Several broker addresses (the nodes of one cluster): the publisher connects to one that answers and, after a
failure, retries on the next. Against the real RabbitMQ (127.0.0.1:5672); a refused port stands for a dead node.
The loss of a real node of a three-node cluster is tested end to end in test/rabbit-cluster.e2e-spec.ts."""

import re
import time
import unittest
from urllib.parse import urlsplit

import pika
import support

from ansflow_realtime import PublishError, RealtimePublisher
from ansflow_realtime.transport import ConfirmTimeout, node_of, split_urls

# Nothing listens on port 1: connecting is refused at once, as with a node that is down.
DEAD = "amqp://guest:guest@127.0.0.1:1/%2F?connection_attempts=1&socket_timeout=2"


def setUpModule():
    support.quiet_third_party_warnings()


def same_broker_as(url: str, host: str) -> str:
    """The test broker under another host name: a second "node" the transport tells apart by its address."""
    u = urlsplit(url)
    return url.replace(f"@{u.hostname}:", f"@{host}:", 1)


class Addresses(unittest.TestCase):
    def test_a_comma_separated_string_and_a_list_name_the_same_nodes(self):
        self.assertEqual(split_urls(" amqp://a:1 , amqp://b:2,, "), ["amqp://a:1", "amqp://b:2"])
        self.assertEqual(split_urls(["amqp://a:1", "amqp://b:2"]), ["amqp://a:1", "amqp://b:2"])
        with self.assertRaises(ValueError):
            split_urls(" , ")

    def test_a_node_is_named_by_host_and_port_without_credentials(self):
        self.assertEqual(node_of("amqp://user:secret@rabbit-2:5701/vhost"), "rabbit-2:5701")
        self.assertEqual(node_of("amqps://user:secret@rabbit-3"), "rabbit-3:5671")


class Failover(unittest.TestCase):
    def setUp(self):
        self.scratch = support.Scratch()
        self.addCleanup(self.scratch.close)
        self.name = support.unique("ansflow-test-failover")

    def make(self, url, **overrides):
        publisher = RealtimePublisher(URL=url, EXCHANGE=self.scratch.exchange, CONNECTION_NAME=self.name, **overrides)
        self.addCleanup(publisher.close)
        return publisher

    def test_skips_a_node_that_is_down(self):
        publisher = self.make(f"{DEAD},{support.BROKER_URL}")
        published = publisher.publish("system", {"type": "x"})
        _, props, _ = self.scratch.get()
        self.assertEqual(props.message_id, published.message_id)
        self.assertEqual(publisher._transport.node, node_of(support.BROKER_URL))

    def test_after_its_node_dropped_it_the_retry_goes_to_the_next_node_with_the_same_message_id(self):
        first = support.BROKER_URL
        second = same_broker_as(support.BROKER_URL, "localhost")
        publisher = self.make([first, second])
        publisher.publish("system", {"type": "before"})
        self.scratch.get()
        self.assertEqual(publisher._transport.node, node_of(first))
        self.assertEqual(support.close_connection_named(self.name), 1)
        published = publisher.publish("system", {"type": "after"}, message_id="kept-id")
        _, props, _ = self.scratch.get()
        self.assertEqual((props.message_id, published.message_id), ("kept-id", "kept-id"))
        self.assertEqual(publisher._transport.node, node_of(second))
        self.assertEqual(self.scratch.count(), 0)  # stored once

    def test_every_node_down_raises_publish_error_naming_the_cause(self):
        publisher = self.make(f"{DEAD},{DEAD.replace(':1/', ':2/')}", PUBLISH_DEADLINE=1)
        with self.assertRaises(PublishError) as caught:
            publisher.publish("system", {"type": "x"})
        self.assertIsInstance(caught.exception.__cause__, pika.exceptions.AMQPConnectionError)

    def test_a_confirm_that_does_not_come_in_time_is_retried_until_the_deadline_then_raised(self):
        # A timeout no broker can meet: every attempt ends in ConfirmTimeout, with back-off in between.
        publisher = self.make(support.BROKER_URL, CONFIRM_TIMEOUT=0.000001, PUBLISH_DEADLINE=1)
        started = time.monotonic()
        with self.assertRaises(PublishError) as caught:
            publisher.publish("system", {"type": "x"})
        took = time.monotonic() - started
        self.assertIsInstance(caught.exception.__cause__, ConfirmTimeout)
        attempts = int(re.search(r"after (\d+) attempts", str(caught.exception)).group(1))
        # The back-off's own figures are checked with a fake clock (test_publisher_backoff.py); here: several
        # attempts, and none started past the deadline.
        self.assertGreaterEqual(attempts, 3)
        self.assertLess(took, 1.5)
        # The publisher is usable again once confirms come in time.
        publisher._settings["CONFIRM_TIMEOUT"] = 10.0
        publisher.publish("system", {"type": "y"})
        while self.scratch.get()[2] != b'{"type":"y"}':
            pass


if __name__ == "__main__":
    unittest.main()
