"""The calls Django's pipeline executor makes. Each builds one frame (``frames``), publishes it with a
confirm and returns ``Published(channel, type, message_id)``; each raises ``PublishError`` when the broker did
not take the event, and ``InvalidEvent`` (a ``PublishError`` and a ``ValueError``) for a bad argument.

Every call takes two keyword-only extras: ``message_id`` (default: a fresh uuid4 hex; pass a stable one, e.g.
``f"exec-{id}-finished"``, to make a retried Celery task publish the same event only once) and ``publisher``
(default: the process-wide ``get_publisher()``).
"""

from typing import Any, Mapping, Optional, Sequence, Tuple

from . import frames
from .errors import InvalidEvent
from .publisher import Published, RealtimePublisher, get_publisher


def _send(built: Tuple[str, dict], message_id: Optional[str], publisher: Optional[RealtimePublisher]) -> Published:
    channel, event = built
    return (publisher or get_publisher()).publish(channel, event, message_id=message_id)


def execution_started(
    execution_id: int,
    pipeline_name: str,
    steps: Optional[Sequence[Mapping[str, Any]]] = None,
    *,
    message_id: Optional[str] = None,
    publisher: Optional[RealtimePublisher] = None,
    **fields: Any,
) -> Published:
    """The run began: an ``execution_update`` with status ``running`` and the step list (all pending)."""
    return _send(frames.execution_update(execution_id, "running", pipeline_name, steps, **fields), message_id, publisher)


def execution_update(
    execution_id: int,
    status: str,
    pipeline_name: str,
    steps: Optional[Sequence[Mapping[str, Any]]] = None,
    *,
    message_id: Optional[str] = None,
    publisher: Optional[RealtimePublisher] = None,
    **fields: Any,
) -> Published:
    """The run's state changed (a step finished, ``completed_steps`` moved). See ``frames.execution_update``."""
    return _send(frames.execution_update(execution_id, status, pipeline_name, steps, **fields), message_id, publisher)


def execution_finished(
    execution_id: int,
    status: str,
    pipeline_name: str,
    steps: Optional[Sequence[Mapping[str, Any]]] = None,
    *,
    execution_time: Optional[float] = None,
    message_id: Optional[str] = None,
    publisher: Optional[RealtimePublisher] = None,
    **fields: Any,
) -> Published:
    """The run ended: an ``execution_update`` with a final status (success, failed, cancelled, timeout)."""
    if status not in frames.FINAL_EXECUTION_STATUSES:
        raise InvalidEvent(f"{status!r} is not a final status: {sorted(frames.FINAL_EXECUTION_STATUSES)}")
    built = frames.execution_update(execution_id, status, pipeline_name, steps, execution_time=execution_time, **fields)
    return _send(built, message_id, publisher)


def step_progress(
    execution_id: int,
    step_id: Optional[int],
    step_name: str,
    status: str,
    *,
    message_id: Optional[str] = None,
    publisher: Optional[RealtimePublisher] = None,
    **fields: Any,
) -> Published:
    """A step started or ended (``execution_time``, ``output``, ``error_message`` as keywords)."""
    return _send(frames.step_progress(execution_id, step_id, step_name, status, **fields), message_id, publisher)


def log_entry(
    execution_id: int,
    level: str,
    message: str,
    *,
    message_id: Optional[str] = None,
    publisher: Optional[RealtimePublisher] = None,
    **fields: Any,
) -> Published:
    """One log line (``step_name``, ``source`` in pipeline/step/step_output, ``timestamp`` as keywords)."""
    return _send(frames.log_entry(execution_id, level, message, **fields), message_id, publisher)


def pipeline_update(
    pipeline_id: int,
    status: str,
    *,
    message_id: Optional[str] = None,
    publisher: Optional[RealtimePublisher] = None,
    **fields: Any,
) -> Published:
    """The pipeline's state for pipeline pages (``progress``, ``logs`` as keywords)."""
    return _send(frames.pipeline_update(pipeline_id, status, **fields), message_id, publisher)


def project_update(
    project_id: int,
    event: str,
    data: Optional[Mapping[str, Any]] = None,
    *,
    message_id: Optional[str] = None,
    publisher: Optional[RealtimePublisher] = None,
    **fields: Any,
) -> Published:
    """Something happened in a project (``event`` names it, ``data`` carries it)."""
    return _send(frames.project_update(project_id, event, data, **fields), message_id, publisher)


def notify_user(
    user_id: int,
    level: str,
    title: str,
    message: str,
    *,
    message_id: Optional[str] = None,
    publisher: Optional[RealtimePublisher] = None,
    **fields: Any,
) -> Published:
    """A notification for one user's bell (``system_notification`` on ``user.{id}``)."""
    return _send(frames.notify_user(user_id, level, title, message, **fields), message_id, publisher)


def system_notification(
    level: str,
    title: str,
    message: str,
    *,
    message_id: Optional[str] = None,
    publisher: Optional[RealtimePublisher] = None,
    **fields: Any,
) -> Published:
    """A notification for everyone (``system_notification`` on ``system``)."""
    return _send(frames.system_notification(level, title, message, **fields), message_id, publisher)
