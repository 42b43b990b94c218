"""Errors the publisher raises. Every failure to hand an event to the broker is a ``PublishError``, so the
executor can catch one class (and decide whether a lost live update should fail the run: usually not)."""


class PublishError(Exception):
    """The event was not accepted by the broker. ``__cause__`` holds the transport's own exception."""


class InvalidEvent(PublishError, ValueError):
    """The event cannot be published at all: bad channel name, no string ``type``, not JSON, too large.

    Raised before anything is sent, because the realtime service would dead-letter such a message anyway."""


class ExchangeNotFound(PublishError):
    """The exchange does not exist and ``DECLARE_EXCHANGE`` is off."""


class NotConfirmed(PublishError):
    """The broker nacked the message (publisher confirms): it was not stored, e.g. a queue refused it."""


class Unroutable(PublishError):
    """``MANDATORY`` is on and no queue was bound for the routing key: the broker returned the message."""
