"""Shared by the tests: the package on sys.path, and a scratch exchange with a queue to read what was published.

Each test run uses its own exchange (``ansflow.realtime.test-<hex>``) so that it never feeds events into a
realtime service running against the real ``ansflow.realtime`` exchange on the same broker, and never
declares that exchange with arguments the service may not expect.
"""

import os
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path


PACKAGE_ROOT = Path(__file__).resolve().parents[1]
if str(PACKAGE_ROOT) not in sys.path:
    sys.path.insert(0, str(PACKAGE_ROOT))

import pika  # noqa: E402

BROKER_URL = os.environ.get("ANSFLOW_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


def quiet_third_party_warnings() -> None:
    """Debian's kombu 5.2 and Django 3.2 use APIs Python 3.11 deprecates; their warnings are not ours to fix.
    Call from setUpModule: unittest's runner resets the warning filters when the run starts."""
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="kombu")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="django")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class Scratch:
    """A connection of the test's own, a scratch topic exchange and an exclusive queue bound to it with ``#``."""

    def __init__(self, declare_exchange: bool = True):
        self.conn = pika.BlockingConnection(pika.URLParameters(BROKER_URL))
        self.channel = self.conn.channel()
        self.exchange = unique("ansflow.realtime.test")
        self.queue = self.channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
        if declare_exchange:
            self.declare_and_bind()

    def declare_and_bind(self, routing_key: str = "#") -> None:
        self.channel.exchange_declare(self.exchange, exchange_type="topic", durable=True)
        self.channel.queue_bind(self.queue, self.exchange, routing_key)

    def get(self, timeout: float = 5.0):
        """The next message in the queue as (method, properties, body), waiting at most ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            method, props, body = self.channel.basic_get(self.queue, auto_ack=True)
            if method is not None:
                return method, props, body
            if time.monotonic() > deadline:
                raise AssertionError(f"no message on {self.queue} within {timeout}s")
            # Let pika read the socket without busy-spinning; returns as soon as data arrives.
            self.conn.process_data_events(time_limit=0.01)

    def count(self) -> int:
        return self.channel.queue_declare(self.queue, passive=True).method.message_count

    def exchange_exists(self, name: str) -> bool:
        probe = self.conn.channel()
        try:
            probe.exchange_declare(name, passive=True)
        except pika.exceptions.ChannelClosedByBroker as err:
            if err.reply_code == 404:
                return False
            raise
        probe.close()
        return True

    def close(self) -> None:
        if self.conn.is_open:
            try:
                self.channel.exchange_delete(self.exchange)
            except pika.exceptions.AMQPError:
                pass
            self.conn.close()


def connections_named(name: str) -> list:
    """Broker-side pids of the connections whose client_properties carry ``connection_name=name``."""
    listing = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "pid", "client_properties"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    return [line.split("\t", 1)[0] for line in listing.splitlines() if f'"{name}"' in line]


def close_connection_named(name: str) -> int:
    """Have the broker close every connection whose client_properties carry ``connection_name=name``, as a
    broker restart or an idle-timeout would. Returns how many were closed."""
    pids = connections_named(name)
    for pid in pids:
        subprocess.run(["rabbitmqctl", "-q", "close_connection", pid, "closed by test"], timeout=30, check=True)
    return len(pids)
