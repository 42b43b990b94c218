"""The publisher against the real RabbitMQ (127.0.0.1:5672, or ANSFLOW_TEST_RABBITMQ_URL)."""

import json
import re
import threading
import time
import unittest

import support

import pika
from ansflow_realtime import (
    ExchangeNotFound,
    InvalidEvent,
    KombuTransport,
    NotConfirmed,
    PublishError,
    RealtimePublisher,
    Unroutable,
    events,
)


def setUpModule():
    support.quiet_third_party_warnings()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class PublisherCase(unittest.TestCase):
    def setUp(self):
        self.scratch = support.Scratch()
        self.addCleanup(self.scratch.close)
        self.name = support.unique("ansflow-test-publisher")
        self.publisher = self.make_publisher()

    def make_publisher(self, **overrides):
        settings = {"URL": support.BROKER_URL, "EXCHANGE": self.scratch.exchange, "CONNECTION_NAME": self.name}
        publisher = RealtimePublisher(**{**settings, **overrides})
        self.addCleanup(publisher.close)
        return publisher

    def received(self):
        method, props, body = self.scratch.get()
        return method.routing_key, props, json.loads(body)


class EachHelperPublishes(PublisherCase):
    def test_each_helper_routes_by_channel_with_properties_and_confirms(self):
        via = {"publisher": self.publisher}
        steps = [{"id": 1, "name": "build", "status": "pending", "order": 1}]
        calls = [
            ("execution.42", "execution_update", lambda: events.execution_started(42, "demo", steps, **via)),
            ("execution.42", "execution_update", lambda: events.execution_update(42, "running", "demo", steps, **via)),
            ("execution.42", "step_progress", lambda: events.step_progress(42, 1, "build", "success", execution_time=1.5, **via)),
            ("execution.42", "log_entry", lambda: events.log_entry(42, "info", "hello", step_name="build", source="step", **via)),
            ("execution.42", "execution_update", lambda: events.execution_finished(42, "failed", "demo", steps, execution_time=9.5, **via)),
            ("pipeline.7", "pipeline_update", lambda: events.pipeline_update(7, "success", progress=100, **via)),
            ("project.3", "project_update", lambda: events.project_update(3, "execution_finished", {"execution_id": 42}, **via)),
            ("user.5", "system_notification", lambda: events.notify_user(5, "error", "Failed", "demo #42 failed", **via)),
            ("system", "system_notification", lambda: events.system_notification("info", "Maintenance", "at 22:00", **via)),
        ]
        for channel, type_, call in calls:
            with self.subTest(type_=type_, channel=channel):
                before = now_ms()
                published = call()
                after = now_ms()
                self.assertEqual((published.channel, published.type), (channel, type_))
                routing_key, props, body = self.received()
                self.assertEqual(routing_key, channel)
                self.assertEqual(body, json.loads(json.dumps(published.event)))
                self.assertEqual(body["type"], type_)
                self.assertEqual(props.message_id, published.message_id)
                self.assertRegex(props.message_id, r"^[0-9a-f]{32}$")
                self.assertEqual(props.content_type, "application/json")
                self.assertEqual(props.delivery_mode, 2)
                sent_ms = props.headers["x-published-at-ms"]
                self.assertIsInstance(sent_ms, int)
                self.assertTrue(before <= sent_ms <= after, (before, sent_ms, after))
                self.assertEqual(props.timestamp, sent_ms // 1000)
        self.assertEqual(self.scratch.count(), 0)

    def test_a_given_message_id_is_kept(self):
        events.log_entry(42, "info", "x", message_id="exec-42-line-1", publisher=self.publisher)
        _, props, _ = self.received()
        self.assertEqual(props.message_id, "exec-42-line-1")

    def test_the_finished_status_must_be_final(self):
        with self.assertRaises(InvalidEvent):
            events.execution_finished(42, "running", "demo", publisher=self.publisher)

    def test_an_invalid_event_sends_nothing(self):
        with self.assertRaises(InvalidEvent):
            self.publisher.publish("execution.abc", {"type": "log_entry"})
        self.publisher.publish("system", {"type": "marker"})
        routing_key, _, body = self.received()
        self.assertEqual((routing_key, body["type"]), ("system", "marker"))

    def test_concurrent_threads_share_one_publisher(self):
        threads, per_thread, errors, ids = 8, 40, [], []
        lock = threading.Lock()

        def work(t):
            try:
                for i in range(per_thread):
                    p = events.log_entry(t + 1, "info", f"line {i}", publisher=self.publisher)
                    with lock:
                        ids.append(p.message_id)
            except Exception as err:  # noqa: BLE001 - collected and asserted below
                errors.append(err)

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        self.assertEqual(errors, [])
        got = [self.scratch.get()[1].message_id for _ in range(threads * per_thread)]
        self.assertEqual(sorted(got), sorted(ids))
        self.assertEqual(len(set(ids)), threads * per_thread)


class Exchange(PublisherCase):
    def test_declares_a_missing_exchange_durable_topic(self):
        name = support.unique("ansflow.realtime.test-declared")
        publisher = self.make_publisher(EXCHANGE=name)
        self.addCleanup(lambda: self.scratch.channel.exchange_delete(name))
        publisher.publish("system", {"type": "x"})
        self.assertTrue(self.scratch.exchange_exists(name))
        # Re-declaring with the same type and durability succeeds only if they match (else 406).
        self.scratch.channel.exchange_declare(name, exchange_type="topic", durable=True)

    def test_a_missing_exchange_raises_when_declaring_is_off(self):
        name = support.unique("ansflow.realtime.test-missing")
        publisher = self.make_publisher(EXCHANGE=name, DECLARE_EXCHANGE=False)
        with self.assertRaises(ExchangeNotFound):
            publisher.publish("system", {"type": "x"})
        self.assertFalse(self.scratch.exchange_exists(name))
        # Once the exchange exists (the service declared it), the same publisher works.
        self.scratch.channel.exchange_declare(name, exchange_type="topic", durable=True)
        self.addCleanup(lambda: self.scratch.channel.exchange_delete(name))
        publisher.publish("system", {"type": "x"})

    def test_an_exchange_deleted_under_the_publisher_is_declared_again(self):
        self.publisher.publish("system", {"type": "first"})
        self.assertEqual(self.received()[2]["type"], "first")
        self.scratch.channel.exchange_delete(self.scratch.exchange)
        # The 404 closes the publisher's channel; the one retry re-declares and publishes.
        self.publisher.publish("system", {"type": "second"})
        self.assertTrue(self.scratch.exchange_exists(self.scratch.exchange))
        self.scratch.channel.queue_bind(self.scratch.queue, self.scratch.exchange, "#")
        self.publisher.publish("system", {"type": "third"})
        self.assertEqual(self.received()[2]["type"], "third")

    def test_a_deleted_exchange_raises_when_declaring_is_off(self):
        publisher = self.make_publisher(DECLARE_EXCHANGE=False)
        publisher.publish("system", {"type": "first"})
        self.scratch.channel.exchange_delete(self.scratch.exchange)
        with self.assertRaises(ExchangeNotFound):
            publisher.publish("system", {"type": "second"})


class Confirms(PublisherCase):
    def test_a_nacked_publish_raises(self):
        # A queue that rejects every publish makes the broker nack the message (publisher confirms).
        full = self.scratch.channel.queue_declare(
            "", exclusive=True, arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
        ).method.queue
        self.scratch.channel.queue_bind(full, self.scratch.exchange, "project.99")
        publisher = self.make_publisher(PUBLISH_DEADLINE=0.5)
        with self.assertRaises(NotConfirmed) as caught:
            events.project_update(99, "x", publisher=publisher)
        # Retried (a nack is what a stream does during its leader election) until the deadline, same message_id.
        attempts = int(re.search(r"after (\d+) attempts", str(caught.exception)).group(1))
        self.assertGreaterEqual(attempts, 3)
        # The `#` queue took every copy before the nack, all with one message_id; the publisher goes on after.
        events.project_update(98, "y", publisher=publisher)
        copies = []
        while True:
            routing_key, props, _ = self.received()
            if routing_key == "project.98":
                break
            copies.append((routing_key, props.message_id))
        self.assertEqual(len(copies), attempts)
        self.assertEqual(len(set(copies)), 1)
        self.assertEqual(copies[0][0], "project.99")

    def test_mandatory_raises_when_no_queue_is_bound(self):
        self.scratch.channel.queue_unbind(self.scratch.queue, self.scratch.exchange, "#")
        publisher = self.make_publisher(MANDATORY=True)
        with self.assertRaises(Unroutable):
            publisher.publish("execution.7", {"type": "x"})
        # Without MANDATORY an unroutable event is confirmed and dropped by the broker: no error.
        self.publisher.publish("execution.7", {"type": "x"})


class ConnectionLoss(PublisherCase):
    def test_recovers_from_a_connection_the_broker_closed(self):
        self.publisher.publish("system", {"type": "before"})
        self.assertEqual(self.received()[2]["type"], "before")
        self.assertEqual(support.close_connection_named(self.name), 1)
        published = self.publisher.publish("system", {"type": "after"})
        _, props, body = self.received()
        self.assertEqual((body["type"], props.message_id), ("after", published.message_id))
        self.assertEqual(self.scratch.count(), 0)  # delivered once

    def test_recovers_after_the_broker_dropped_an_idle_connection(self):
        # A Django process that published nothing for a while: pika's blocking connection sends no heartbeats
        # between calls, so the broker drops it after two missed ones. Heartbeat 1 s makes that quick.
        publisher = self.make_publisher(URL=support.BROKER_URL + "?heartbeat=1")
        publisher.publish("system", {"type": "before"})
        self.received()
        deadline = time.monotonic() + 15
        while support.connections_named(self.name):
            self.assertLess(time.monotonic(), deadline, "the broker kept the idle connection")
            time.sleep(0.5)  # polling the broker's connection list (rabbitmqctl), not synchronising with our code
        publisher.publish("system", {"type": "after"})
        self.assertEqual(self.received()[2]["type"], "after")

    def test_recovers_from_a_connection_closed_locally(self):
        self.publisher.publish("system", {"type": "before"})
        self.received()
        self.publisher._transport._conn.close()
        self.publisher.publish("system", {"type": "after"})
        self.assertEqual(self.received()[2]["type"], "after")

    def test_a_forked_child_opens_its_own_connection_and_the_parent_keeps_its_own(self):
        # gunicorn/Celery prefork: the publisher connected in the parent, then the process forked.
        import os

        self.publisher.publish("system", {"type": "parent-before"})
        self.received()
        pid = os.fork()
        if pid == 0:  # child: publish through the inherited publisher object, report by exit status
            try:
                inherited = self.publisher._transport
                self.publisher.publish("system", {"type": "child"})
                os._exit(0 if self.publisher._transport is not inherited else 2)
            except BaseException:  # noqa: BLE001 - any failure is the exit status the parent asserts on
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)
        self.assertEqual(self.received()[2]["type"], "child")
        self.publisher.publish("system", {"type": "parent-after"})
        self.assertEqual(self.received()[2]["type"], "parent-after")

    def test_an_unreachable_broker_raises_publish_error(self):
        publisher = self.make_publisher(URL="amqp://guest:guest@127.0.0.1:1/%2F?connection_attempts=1&socket_timeout=2", PUBLISH_DEADLINE=2)
        started = time.monotonic()
        with self.assertRaises(PublishError) as caught:
            publisher.publish("system", {"type": "x"})
        # Retried (it may be a node restarting) until the deadline, not longer.
        self.assertLess(time.monotonic() - started, 3)
        self.assertRegex(str(caught.exception), r"after \d+ attempts")
        self.assertIsInstance(caught.exception.__cause__, pika.exceptions.AMQPConnectionError)


class Kombu(PublisherCase):
    def kombu_connection(self, **options):
        import kombu

        conn = kombu.Connection(support.BROKER_URL.replace("amqp://", "pyamqp://"), **options)
        self.addCleanup(conn.release)
        return conn

    def test_publishes_through_a_kombu_connection_with_confirms(self):
        conn = self.kombu_connection(transport_options={"confirm_publish": True})
        publisher = RealtimePublisher(transport=KombuTransport(conn, self.scratch.exchange))
        published = events.log_entry(42, "info", "via kombu", publisher=publisher)
        routing_key, props, body = self.received()
        self.assertEqual((routing_key, body["message"], props.message_id), ("execution.42", "via kombu", published.message_id))
        self.assertEqual((props.content_type, props.delivery_mode), ("application/json", 2))
        self.assertIsInstance(props.headers["x-published-at-ms"], int)
        self.assertEqual(props.timestamp, props.headers["x-published-at-ms"] // 1000)

    def test_kombu_nack_raises(self):
        conn = self.kombu_connection(transport_options={"confirm_publish": True})
        publisher = RealtimePublisher(transport=KombuTransport(conn, self.scratch.exchange), PUBLISH_DEADLINE=0.5)
        full = self.scratch.channel.queue_declare(
            "", exclusive=True, arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
        ).method.queue
        self.scratch.channel.queue_bind(full, self.scratch.exchange, "project.99")
        with self.assertRaises(NotConfirmed):
            events.project_update(99, "x", publisher=publisher)

    def test_refuses_a_kombu_connection_without_confirms(self):
        with self.assertRaises(ValueError):
            KombuTransport(self.kombu_connection(), self.scratch.exchange)


if __name__ == "__main__":
    unittest.main()
