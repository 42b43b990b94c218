"""The publisher's retry policy against a fake transport and a fake clock: bounded exponential back-off with jitter,
the same message_id on every attempt, PublishError only at the deadline. No broker: the real failure (a node of a
three-node cluster killed mid-run) is test/rabbit-cluster.e2e-spec.ts."""

import time as real_time
import unittest
from unittest import mock

import support  # noqa: F401 - puts the package on sys.path

from ansflow_realtime import InvalidEvent, NotConfirmed, PublishError, RealtimePublisher, Unroutable
from ansflow_realtime import publisher as publisher_module
from ansflow_realtime.publisher import BACKOFF_FIRST, BACKOFF_MAX, backoff_delay
from ansflow_realtime.transport import ConfirmTimeout


class FakeClock:
    """Stands in for the publisher module's ``time``: ``sleep`` advances ``monotonic`` and is recorded."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps = []

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        assert seconds >= 0, seconds
        self.sleeps.append(seconds)
        self.now += seconds

    @staticmethod
    def time_ns():
        return real_time.time_ns()


class FakeTransport:
    """Fails with the errors it is given, one per attempt, then confirms. A ConfirmTimeout takes the whole
    timeout it was given, as the real one does."""

    exchange = "fake"
    node_count = 3

    def __init__(self, clock, failures):
        self.clock = clock
        # A list (one error per attempt, then success) or a function (an error for every attempt).
        self.failures = failures if callable(failures) else list(failures)
        self.attempts = []  # (started at, message_id, timeout)
        self.resets = 0

    def publish(self, routing_key, message, timeout=None):
        self.attempts.append((self.clock.now, message.message_id, timeout))
        if callable(self.failures):
            err = self.failures()
        elif self.failures:
            err = self.failures.pop(0)
        else:
            return
        if isinstance(err, ConfirmTimeout):
            self.clock.now += timeout
        raise err

    @staticmethod
    def is_recoverable(err):
        return isinstance(err, (ConfirmTimeout, OSError))

    def reset(self):
        self.resets += 1

    def close(self):
        pass


class Backoff(unittest.TestCase):
    def setUp(self):
        self.clock = FakeClock()
        patcher = mock.patch.object(publisher_module, "time", self.clock)
        patcher.start()
        self.addCleanup(patcher.stop)

    def publisher(self, failures, jitter=0.5, **settings):
        transport = FakeTransport(self.clock, failures)
        publisher = RealtimePublisher(transport=transport, **settings)
        rand = mock.patch.object(publisher_module.random, "random", return_value=jitter)
        rand.start()
        self.addCleanup(rand.stop)
        return publisher, transport

    def test_the_delay_doubles_from_the_second_retry_up_to_a_bound_with_jitter_between_half_and_all_of_it(self):
        self.assertEqual(backoff_delay(1, 0.9), 0.0)  # the first retry goes at once to the next node
        self.assertAlmostEqual(backoff_delay(2, 0.0), BACKOFF_FIRST / 2)
        self.assertAlmostEqual(backoff_delay(2, 0.999999), BACKOFF_FIRST, places=5)
        self.assertAlmostEqual(backoff_delay(3, 0.0), BACKOFF_FIRST)
        self.assertAlmostEqual(backoff_delay(4, 0.0), BACKOFF_FIRST * 2)
        self.assertAlmostEqual(backoff_delay(50, 0.0), BACKOFF_MAX / 2)
        self.assertAlmostEqual(backoff_delay(50, 0.999999), BACKOFF_MAX, places=5)

    def test_nacks_during_an_election_are_retried_with_growing_delays_and_the_same_message_id(self):
        nacks = [NotConfirmed("nacked") for _ in range(6)]
        publisher, transport = self.publisher(nacks, jitter=0.0)
        published = publisher.publish("execution.7", {"type": "log_entry"}, message_id="m-1")
        self.assertEqual(published.message_id, "m-1")
        self.assertEqual([a[1] for a in transport.attempts], ["m-1"] * 7)
        self.assertEqual(transport.resets, 6)  # each retry on a fresh connection, the next node first
        self.assertEqual(self.clock.sleeps, [0.0, 0.05, 0.1, 0.2, 0.4, 0.8])

    def test_a_connection_lost_or_refused_is_retried_too(self):
        publisher, transport = self.publisher([ConnectionResetError(104, "reset"), ConnectionRefusedError(111, "refused")])
        publisher.publish("system", {"type": "x"})
        self.assertEqual(len(transport.attempts), 3)

    def test_gives_up_at_the_deadline_with_not_confirmed_when_every_attempt_was_nacked(self):
        publisher, transport = self.publisher(lambda: NotConfirmed("nacked"), jitter=0.999999, PUBLISH_DEADLINE=30)
        started = self.clock.now
        with self.assertRaises(NotConfirmed) as caught:
            publisher.publish("system", {"type": "x"})
        self.assertLessEqual(self.clock.now - started, 30)
        # Never more than BACKOFF_MAX between attempts: 0.1+0.2+0.4+0.8+1.6 s, then 2 s each, over 30 s.
        self.assertLessEqual(max(self.clock.sleeps), BACKOFF_MAX)
        self.assertEqual(len(transport.attempts), 2 + 5 + 13)
        self.assertGreater(self.clock.now - started, 30 - BACKOFF_MAX)
        self.assertIn(f"after {len(transport.attempts)} attempts", str(caught.exception))
        self.assertEqual({a[1] for a in transport.attempts}, {transport.attempts[0][1]})

    def test_no_attempt_waits_for_its_confirm_past_the_deadline(self):
        publisher, transport = self.publisher(lambda: ConfirmTimeout("no confirm"), PUBLISH_DEADLINE=25, CONFIRM_TIMEOUT=10)
        started = self.clock.now
        with self.assertRaises(PublishError) as caught:
            publisher.publish("system", {"type": "x"})
        self.assertIsInstance(caught.exception.__cause__, ConfirmTimeout)
        self.assertNotIsInstance(caught.exception, NotConfirmed)
        for at, _, timeout in transport.attempts:
            self.assertLessEqual(timeout, 10)
            self.assertLessEqual(at + timeout, started + 25 + 1e-9)
        self.assertEqual([round(a[2], 6) for a in transport.attempts[:2]], [10, 10])
        self.assertLess(transport.attempts[-1][2], 10)  # the last one got what was left

    def test_a_failure_no_retry_can_fix_is_raised_at_once(self):
        for err in (Unroutable("no queue"), ValueError("a bug")):
            with self.subTest(err=err):
                publisher, transport = self.publisher([err])
                with self.assertRaises(PublishError) as caught:
                    publisher.publish("system", {"type": "x"})
                self.assertEqual(len(transport.attempts), 1)
                self.assertEqual(self.clock.sleeps, [])
                if isinstance(err, Unroutable):
                    self.assertIs(caught.exception, err)
        publisher, transport = self.publisher([])
        with self.assertRaises(InvalidEvent):
            publisher.publish("nope", {"type": "x"})
        self.assertEqual(transport.attempts, [])

    def test_a_deadline_or_confirm_timeout_that_is_not_a_positive_number_is_refused(self):
        for key, value in (("PUBLISH_DEADLINE", 0), ("PUBLISH_DEADLINE", "30"), ("CONFIRM_TIMEOUT", -1), ("PUBLISH_DEADLINE", True)):
            with self.subTest(key=key, value=value):
                with self.assertRaisesRegex(ValueError, key):
                    RealtimePublisher(transport=FakeTransport(self.clock, []), **{key: value})

    def test_the_default_deadline_is_30_seconds(self):
        publisher, transport = self.publisher(lambda: OSError("down"))
        started = self.clock.now
        with self.assertRaisesRegex(PublishError, r"PUBLISH_DEADLINE 30 s"):
            publisher.publish("system", {"type": "x"})
        self.assertGreater(self.clock.now - started, 28)


if __name__ == "__main__":
    unittest.main()
