"""Django's side of the ansflow-realtime event contract: publish realtime events to RabbitMQ with confirms.

    from ansflow_realtime import events
    events.log_entry(42, "info", "Cloning repository", step_name="checkout", source="step")

Imports without Django; ``ansflow_realtime.views`` (the authorize endpoint) needs Django.
"""

from . import events, frames
from .errors import ExchangeNotFound, InvalidEvent, NotConfirmed, PublishError, Unroutable
from .publisher import Published, RealtimePublisher, get_publisher, iso_utc, set_publisher
from .transport import KombuTransport, PikaTransport

__all__ = [
    "events",
    "frames",
    "ExchangeNotFound",
    "InvalidEvent",
    "NotConfirmed",
    "PublishError",
    "Unroutable",
    "Published",
    "RealtimePublisher",
    "get_publisher",
    "set_publisher",
    "iso_utc",
    "KombuTransport",
    "PikaTransport",
]
