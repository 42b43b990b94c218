"""Two ways to reach RabbitMQ: pika (tested, the default) or a kombu connection (Celery's).

A transport owns one connection and one confirm-mode channel and does exactly one thing: put a body on the
exchange and return only once the broker confirmed it. The publisher above it owns the lock, the retry and
the event format, so both transports behave the same to the caller.
"""

import logging
from typing import Any, Dict, List, Optional, Sequence, Union
from urllib.parse import urlsplit

from .errors import ExchangeNotFound, NotConfirmed, PublishError, Unroutable

DEFAULT_BLOCKED_TIMEOUT = 10.0  # seconds; override with ?blocked_connection_timeout= in the URL
# Seconds to wait for the broker's confirm. A stream whose leader just died confirms nothing until a new one is
# elected, and a node cut off from its cluster's majority never confirms: without a bound, pika would wait forever.
DEFAULT_CONFIRM_TIMEOUT = 10.0

log = logging.getLogger("ansflow_realtime")
# A library logs only where the application configured logging (Django does).
log.addHandler(logging.NullHandler())


def split_urls(url: Union[str, Sequence[str]]) -> List[str]:
    """The node addresses of one cluster: a list, or one string with comma-separated addresses (as the realtime
    service's ``RABBITMQ_URL``)."""
    parts = url.split(",") if isinstance(url, str) else list(url)
    urls = [u.strip() for u in parts if u and u.strip()]
    if not urls:
        raise ValueError("no broker URL")
    return urls


def node_of(url: str) -> str:
    """``host:port`` of an address, without credentials: safe to log."""
    u = urlsplit(url)
    return f"{u.hostname}:{u.port or (5671 if u.scheme == 'amqps' else 5672)}"


class ConfirmTimeout(Exception):
    """No confirm within the timeout: the message may or may not be stored. Recoverable: the publisher resends it
    (same ``message_id``, the service de-duplicates) on another node."""


class Message:
    """What goes on the wire besides the routing key. Built once by the publisher, so a retry resends the
    very same ``message_id`` (the realtime service de-duplicates on it)."""

    __slots__ = ("body", "message_id", "timestamp", "headers", "event_type")

    def __init__(self, body: bytes, message_id: str, timestamp: int, headers: Dict[str, Any], event_type: str):
        self.body = body
        self.message_id = message_id
        self.timestamp = timestamp
        self.headers = headers
        self.event_type = event_type


class PikaTransport:
    """A ``pika.BlockingConnection`` with a confirm-mode channel. Not thread-safe by itself (pika's blocking
    connection is not): the publisher serialises calls.

    ``url`` may name several nodes of one cluster (a list, or comma-separated). The transport connects to the
    first that answers, starting with the one it used last; after a failure (``reset``) it starts with the next one,
    so the publisher's retry goes to another node than the one that just failed."""

    def __init__(
        self,
        url: Union[str, Sequence[str]],
        exchange: str,
        declare: bool = True,
        mandatory: bool = False,
        connection_name: Optional[str] = None,
        confirm_timeout: float = DEFAULT_CONFIRM_TIMEOUT,
    ):
        import pika  # imported here so that a kombu-only deployment does not need pika

        self._pika = pika
        self._urls = split_urls(url)
        self._params = [self._parameters(u, connection_name) for u in self._urls]
        self._next = 0
        self.node: Optional[str] = None
        self.exchange = exchange
        self.declare = declare
        self.mandatory = mandatory
        self.confirm_timeout = confirm_timeout
        self._conn = None
        self._channel = None

    @property
    def node_count(self) -> int:
        return len(self._params)

    def _parameters(self, url: str, connection_name: Optional[str]):
        params = self._pika.URLParameters(url)
        if "blocked_connection_timeout" not in url:
            # While the broker is in a memory/disk alarm it stops reading from publishers; without a bound a
            # Django request publishing an event would hang until the alarm clears. Fail it instead.
            params.blocked_connection_timeout = DEFAULT_BLOCKED_TIMEOUT
        if connection_name:
            # Shows in `rabbitmqctl list_connections client_properties` and the management UI, which is how an
            # operator tells Django's publisher from Celery's connections.
            props = dict(params.client_properties or {})
            props["connection_name"] = connection_name
            params.client_properties = props
        return params

    def _connect(self):
        """Try every node once, starting with ``_next``; raise the last failure if none answers."""
        last: Optional[BaseException] = None
        for k in range(len(self._params)):
            i = (self._next + k) % len(self._params)
            try:
                conn = self._pika.BlockingConnection(self._params[i])
            except self._pika.exceptions.AMQPConnectionError as err:
                log.warning("realtime broker %s unreachable: %r", node_of(self._urls[i]), err)
                last = err
                continue
            self._next = i
            if self.node is not None and self.node != node_of(self._urls[i]):
                log.warning("realtime publisher failed over from %s to %s", self.node, node_of(self._urls[i]))
            self.node = node_of(self._urls[i])
            return conn
        assert last is not None
        raise last

    def _open_channel(self):
        if self._conn is None or not self._conn.is_open:
            self._conn = self._connect()
        channel = self._conn.channel()
        channel.confirm_delivery()
        return channel

    def _ensure_channel(self):
        if self._channel is not None and self._channel.is_open and self._conn.is_open:
            return self._channel
        exc = self._pika.exceptions
        channel = self._open_channel()
        try:
            # Passive first: the realtime service may have declared the exchange with arguments we do not know
            # (an alternate exchange, say); re-declaring with other arguments would fail with 406.
            channel.exchange_declare(self.exchange, passive=True)
        except exc.ChannelClosedByBroker as err:
            if err.reply_code != 404:
                raise
            if not self.declare:
                raise ExchangeNotFound(f"exchange {self.exchange!r} does not exist") from err
            # A 404 closes the channel; declare on a fresh one.
            channel = self._open_channel()
            channel.exchange_declare(self.exchange, exchange_type="topic", durable=True)
        self._channel = channel
        return channel

    def publish(self, routing_key: str, message: Message, timeout: Optional[float] = None) -> None:
        """Send and wait for the confirm, at most ``timeout`` seconds (default ``confirm_timeout``)."""
        timeout = self.confirm_timeout if timeout is None else timeout
        channel = self._ensure_channel()
        props = self._pika.BasicProperties(
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=2,
            message_id=message.message_id,
            timestamp=message.timestamp,
            headers=message.headers,
            type=message.event_type,
            app_id="ansflow-django",
        )
        exc = self._pika.exceptions
        conn = self._conn

        def timed_out() -> None:
            raise ConfirmTimeout(f"no confirm for message {message.message_id} within {timeout:.3g}s from {self.node}")

        # A timer of the connection's I/O loop, which basic_publish runs while it waits for the confirm: raised there,
        # the exception leaves basic_publish (BlockingConnection.call_later would only fire in process_data_events).
        # The channel, still expecting that confirm, is then dropped by the publisher's reset.
        timer = conn._impl._adapter_call_later(timeout, timed_out)
        try:
            # In confirm mode pika's basic_publish blocks until the broker's ack and raises on nack/return.
            channel.basic_publish(self.exchange, routing_key, message.body, properties=props, mandatory=self.mandatory)
        except exc.UnroutableError as err:
            raise Unroutable(f"no queue bound for routing key {routing_key!r}") from err
        except exc.NackError as err:
            raise NotConfirmed(f"broker nacked message {message.message_id}") from err
        finally:
            conn._impl._adapter_remove_timeout(timer)

    def is_recoverable(self, err: BaseException) -> bool:
        """Worth a reconnect: the connection or channel died or was refused (broker restart, idle connection dropped
        after missed heartbeats, an exchange deleted under us), no confirm in time. Not a return or a bad event; the
        publisher retries nacks itself (``NotConfirmed``)."""
        exc = self._pika.exceptions
        return isinstance(
            err,
            (
                exc.AMQPConnectionError,
                exc.ChannelClosed,
                exc.ChannelWrongStateError,
                exc.ConnectionWrongStateError,
                exc.StreamLostError,
                ConfirmTimeout,
                ConnectionError,
                OSError,
            ),
        )

    def _forget(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing an already broken connection; nothing to report
                pass

    def reset(self) -> None:
        """Forget the connection after a failure; the next publish opens a new one, on the next node first."""
        self._forget()
        self._next = (self._next + 1) % len(self._params)

    def close(self) -> None:
        self._forget()


class KombuTransport:
    # Kombu fails over itself: give its Connection several hosts (``"amqp://a;amqp://b"`` or a list) and a
    # ``failover_strategy``; this transport's retry then reconnects through kombu.
    node_count = 1

    """Publishes through an existing kombu connection, e.g. ``celery_app.connection_for_write()``.

    Publisher confirms need ``transport_options={"confirm_publish": True}`` on that connection (py-amqp
    then waits for the ack in ``basic_publish`` and raises on a nack); without it a publish is fire-and-forget,
    so the constructor refuses such a connection.
    """

    def __init__(self, connection, exchange: str, declare: bool = True, mandatory: bool = False):
        import kombu

        if not (connection.transport_options or {}).get("confirm_publish"):
            raise ValueError("kombu connection needs transport_options={'confirm_publish': True}")
        self._kombu = kombu
        self._conn = connection
        self.exchange = exchange
        self.declare = declare
        self.mandatory = mandatory
        self._producer = None

    def _ensure_producer(self):
        if self._producer is not None:
            return self._producer
        channel = self._conn.default_channel
        exchange = self._kombu.Exchange(self.exchange, type="topic", durable=True)
        try:
            exchange(channel).declare(passive=True)
        except self._conn.channel_errors as err:
            if getattr(err, "reply_code", getattr(err, "code", None)) != 404:
                raise
            if not self.declare:
                raise ExchangeNotFound(f"exchange {self.exchange!r} does not exist") from err
            channel = self._conn.default_channel  # kombu reopens the channel the 404 closed
            exchange(channel).declare()
        self._producer = self._kombu.Producer(channel, exchange=exchange, auto_declare=False)
        return self._producer

    def publish(self, routing_key: str, message: Message, timeout: Optional[float] = None) -> None:
        """Send and wait for the confirm; py-amqp gives up after ``timeout`` seconds (socket.timeout, recoverable)."""
        import amqp

        producer = self._ensure_producer()
        try:
            producer.publish(
                message.body,
                routing_key=routing_key,
                content_type="application/json",
                content_encoding="utf-8",
                delivery_mode=2,
                mandatory=self.mandatory,
                retry=False,  # the publisher retries, with back-off and the same message_id
                timeout=timeout,
                headers=message.headers,
                message_id=message.message_id,
                timestamp=message.timestamp,
                type=message.event_type,
                app_id="ansflow-django",
            )
        except amqp.exceptions.MessageNacked as err:
            raise NotConfirmed(f"broker nacked message {message.message_id}") from err
        except amqp.exceptions.ChannelError as err:
            # py-amqp raises a basic.return of a mandatory message as a channel error with code 312 NO_ROUTE.
            if getattr(err, "reply_code", getattr(err, "code", None)) == 312:
                raise Unroutable(f"no queue bound for routing key {routing_key!r}") from err
            raise

    def is_recoverable(self, err: BaseException) -> bool:
        if isinstance(err, PublishError):
            return False
        return isinstance(err, tuple(self._conn.connection_errors) + tuple(self._conn.channel_errors) + (OSError,))

    def reset(self) -> None:
        self._producer = None
        try:
            self._conn.close()
        except Exception:  # noqa: BLE001 - the connection is already broken
            pass

    def close(self) -> None:
        # The connection belongs to the caller (Celery); only drop our producer.
        self._producer = None
