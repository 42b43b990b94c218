"""The one way Django puts an event on the realtime exchange (contract: docs/protocol.md, "RabbitMQ (input)")."""

import datetime
import decimal
import json
import logging
import os
import random
import re
import threading
import time
import uuid
from typing import Any, Dict, Mapping, NamedTuple, Optional

from . import config
from .errors import InvalidEvent, NotConfirmed, PublishError
from .transport import Message, PikaTransport

log = logging.getLogger("ansflow_realtime")

# Routing key = channel. Ids are Django primary keys: positive integers, as the service validates them.
CHANNEL_RE = re.compile(r"^(?:(?:execution|pipeline|project|user)\.[1-9][0-9]{0,18}|monitor|system)$")

# The service's default BROKER_MAX_MESSAGE_BYTES: a larger body would be dead-lettered, so refuse it here where
# the caller can still see the error.
MAX_BODY_BYTES = 256 * 1024

# Back-off between attempts of one publish: the first retry goes at once to the next node (a dead node is the common
# case, and another node usually confirms within milliseconds); from the second on, the wait doubles from
# BACKOFF_FIRST up to BACKOFF_MAX seconds. A stream whose leader died is nacked or unconfirmed by every node until a
# new leader is elected (seconds, more on a loaded host), so retrying through the nodes at once would burn every
# attempt inside the election. Jitter (a factor drawn from [0.5, 1]) keeps the gunicorn/Celery processes that all
# failed at the same moment from retrying in lock-step.
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 2.0


def backoff_delay(retry: int, rand: float) -> float:
    """Seconds to wait before retry number ``retry`` (1 = the first retry), ``rand`` in [0, 1) the jitter draw."""
    if retry <= 1:
        return 0.0
    return min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (retry - 2)) * (0.5 + rand / 2)


class Published(NamedTuple):
    """What a helper returns: enough for a caller (or simulate_run.py) to correlate with what clients got."""

    channel: str
    type: str
    message_id: str
    event: Mapping[str, Any]


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return iso_utc(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):
        return value.hex
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def iso_utc(value: Optional[datetime.datetime] = None) -> str:
    """ISO 8601 UTC with ``Z`` and milliseconds. A naive datetime is taken as UTC (Django's storage zone with
    ``USE_TZ``); AnsFlow's old service sent naive strings that browsers read as local time."""
    if value is None:
        value = datetime.datetime.now(datetime.timezone.utc)
    elif value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    else:
        value = value.astimezone(datetime.timezone.utc)
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class RealtimePublisher:
    """Publishes events with confirms; safe to share between a Django process's threads.

    One lock serialises use of the transport (pika's blocking connection is not thread-safe). A recoverable
    failure (connection dropped or refused, channel closed, a nack, no confirm in time) resets the transport and
    retries with the same ``message_id``, on the next node of the cluster when several are configured, with bounded
    exponential back-off (``backoff_delay``); the service de-duplicates, so a message that was in fact stored before
    the failure is still delivered once. ``PublishError`` once ``PUBLISH_DEADLINE`` seconds have passed without a
    confirm, at once for a failure no retry can fix (a bad event, an unroutable message, a missing exchange).
    """

    def __init__(self, transport=None, **overrides: Any):
        self._settings = {**config.load(), **overrides}
        for key in ("CONFIRM_TIMEOUT", "PUBLISH_DEADLINE"):
            value = self._settings[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"ANSFLOW_REALTIME[{key!r}] must be a positive number of seconds, not {value!r}")
        self._transport = transport
        # A transport handed in (Celery's kombu connection) is the caller's to manage across forks; only the
        # pika transport this class creates itself is replaced in a forked child.
        self._owns_transport = transport is None
        self._lock = threading.Lock()
        self._pid = os.getpid()

    @property
    def exchange(self) -> str:
        return self._transport.exchange if self._transport is not None else self._settings["EXCHANGE"]

    def _get_transport(self):
        if self._owns_transport and self._transport is not None and self._pid != os.getpid():
            # Forked (gunicorn/celery prefork) after connecting: a socket shared by two processes interleaves
            # frames. Drop the parent's without closing it (closing would send close on the parent's behalf).
            self._transport = None
        if self._transport is None:
            s = self._settings
            self._transport = PikaTransport(
                s["URL"],
                s["EXCHANGE"],
                declare=s["DECLARE_EXCHANGE"],
                mandatory=s["MANDATORY"],
                connection_name=s["CONNECTION_NAME"],
                confirm_timeout=s["CONFIRM_TIMEOUT"],
            )
            self._pid = os.getpid()
        return self._transport

    @staticmethod
    def encode(channel: str, event: Mapping[str, Any], message_id: Optional[str] = None) -> Message:
        """Validate and serialise an event; raises ``InvalidEvent`` for what the service would dead-letter."""
        if not isinstance(channel, str) or not CHANNEL_RE.match(channel):
            raise InvalidEvent(f"not a channel: {channel!r}")
        if not isinstance(event, Mapping) or not isinstance(event.get("type"), str) or not event["type"]:
            raise InvalidEvent("an event is a mapping with a non-empty string 'type'")
        try:
            body = json.dumps(event, default=_json_default, ensure_ascii=False, separators=(",", ":")).encode()
        except (TypeError, ValueError) as err:
            raise InvalidEvent(f"event is not JSON serialisable: {err}") from err
        if len(body) > MAX_BODY_BYTES:
            raise InvalidEvent(f"event body is {len(body)} bytes, more than {MAX_BODY_BYTES}")
        now_ms = time.time_ns() // 1_000_000
        return Message(
            body=body,
            message_id=message_id or uuid.uuid4().hex,
            timestamp=now_ms // 1000,
            headers={"x-published-at-ms": now_ms},
            event_type=event["type"],
        )

    def publish(self, channel: str, event: Mapping[str, Any], message_id: Optional[str] = None) -> Published:
        """Publish one event on a channel and wait for the broker's confirm. Raises ``PublishError``.

        Returns only once a node confirmed the message: the event is then in the stream, replicated, and survives
        the loss of that node. A recoverable failure (the node died, a nack or no confirm in time during a leader
        election) resends the same message on the next node, with back-off, until ``PUBLISH_DEADLINE`` seconds
        after the call; each attempt waits for its confirm at most ``CONFIRM_TIMEOUT``, and never past the
        deadline."""
        message = self.encode(channel, event, message_id)
        deadline_s = float(self._settings["PUBLISH_DEADLINE"])
        confirm_timeout = float(self._settings["CONFIRM_TIMEOUT"])
        with self._lock:
            # The deadline starts once the lock is held: time spent behind another thread's publish is not ours.
            deadline = time.monotonic() + deadline_s
            transport = self._get_transport()
            attempt = 0
            while True:
                attempt += 1
                try:
                    transport.publish(channel, message, timeout=min(confirm_timeout, max(deadline - time.monotonic(), 0.001)))
                    break
                except Exception as err:  # noqa: BLE001 - classified right below, re-raised if not recoverable
                    if not isinstance(err, NotConfirmed):
                        if isinstance(err, PublishError):
                            raise
                        if not transport.is_recoverable(err):
                            raise PublishError(f"publish to {channel} failed: {err!r}") from err
                    transport.reset()
                    delay = backoff_delay(attempt, random.random())
                    left = deadline - time.monotonic()
                    if left <= delay:
                        # A message nacked to the end stays a NotConfirmed (a full queue with reject-publish, say).
                        raise (NotConfirmed if isinstance(err, NotConfirmed) else PublishError)(
                            f"publish to {channel} failed after {attempt} attempts in {deadline_s - left:.1f} s "
                            f"(PUBLISH_DEADLINE {deadline_s:g} s): {err!r}"
                        ) from err
                    log.warning(
                        "realtime publish of %s on %s not confirmed (attempt %d, %r); retrying in %.2f s",
                        message.message_id,
                        channel,
                        attempt,
                        err,
                        delay,
                    )
                    time.sleep(delay)
        return Published(channel, message.event_type, message.message_id, event)

    def close(self) -> None:
        with self._lock:
            if self._transport is not None:
                self._transport.close()


_default: Optional[RealtimePublisher] = None
_default_lock = threading.Lock()


def get_publisher() -> RealtimePublisher:
    """The process-wide publisher, created on first use from settings."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = RealtimePublisher()
    return _default


def set_publisher(publisher: Optional[RealtimePublisher]) -> None:
    """Replace the process-wide publisher (tests, or a Celery app wiring a ``KombuTransport``)."""
    global _default
    with _default_lock:
        _default = publisher
