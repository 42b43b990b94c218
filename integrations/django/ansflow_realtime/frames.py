"""Builders for the events AnsFlow's frontend reads (../shared/ansflow-compat.md): flat frames, exact field
names, checked value domains. Pure functions returning ``(channel, event)``; ``ansflow_realtime.events``
publishes them. Kept apart so the shapes can be tested without a broker and reused by other transports.
"""

import datetime
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from .errors import InvalidEvent
from .publisher import iso_utc

Event = Dict[str, Any]
Timestamp = Union[None, str, datetime.datetime]

# Value domains from ansflow-compat.md ("Domain values"). `starting` and `completed` are listed there as
# statuses the page also knows; the others are what Django's models store.
EXECUTION_STATUSES = frozenset({"pending", "running", "success", "failed", "cancelled", "timeout", "starting", "completed"})
FINAL_EXECUTION_STATUSES = frozenset({"success", "failed", "cancelled", "timeout", "completed"})
STEP_STATUSES = frozenset({"pending", "running", "success", "failed", "skipped", "cancelled"})
LOG_LEVELS = frozenset({"info", "success", "error", "warning", "debug"})
LOG_SOURCES = frozenset({"pipeline", "step", "step_output"})
NOTIFICATION_LEVELS = frozenset({"info", "warning", "error", "success"})


def _check(value: Any, allowed: Iterable[str], field: str) -> str:
    if value not in allowed:
        raise InvalidEvent(f"{field}={value!r} is not one of {sorted(allowed)}")
    return value


def _id(value: Any, field: str) -> int:
    # bool is an int subclass; True is not a primary key.
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidEvent(f"{field} must be a positive integer, got {value!r}")
    return value


def _ts(value: Timestamp) -> str:
    if isinstance(value, str):
        return value
    return iso_utc(value)


def _seconds(value: Optional[float]) -> float:
    return float(value) if value is not None else 0.0


def _count_done(steps: Sequence[Mapping[str, Any]]) -> int:
    return sum(1 for step in steps if step.get("status") in ("success", "skipped"))


def _running_step(steps: Sequence[Mapping[str, Any]]) -> Optional[Mapping[str, Any]]:
    return next((step for step in steps if step.get("status") == "running"), None)


def execution_update(
    execution_id: int,
    status: str,
    pipeline_name: str,
    steps: Optional[Sequence[Mapping[str, Any]]] = None,
    *,
    total_steps: Optional[int] = None,
    completed_steps: Optional[int] = None,
    execution_time: Optional[float] = None,
    current_step: Optional[Mapping[str, Any]] = None,
    timestamp: Timestamp = None,
) -> Tuple[str, Event]:
    """``execution_update`` on ``execution.{id}``: the execution page's whole view of the run.

    ``steps`` are the page's step objects (``{"id", "name", "status", "order", "execution_time", ...}`` or a
    parallel group ``{"group_id", "name", "type": "parallel_group", "status", "steps", "order", ...}``).
    ``total_steps`` defaults to ``len(steps)``, ``completed_steps`` to the steps in success/skipped and
    ``current_step`` to the first running step: the service keeps the latest of these as the snapshot it
    sends in ``execution_status`` to a socket that connects mid-run.
    """
    steps = list(steps or [])
    return f"execution.{_id(execution_id, 'execution_id')}", {
        "type": "execution_update",
        "execution_id": execution_id,
        "status": _check(status, EXECUTION_STATUSES, "status"),
        "pipeline_name": pipeline_name,
        "steps": steps,
        "total_steps": len(steps) if total_steps is None else total_steps,
        "completed_steps": _count_done(steps) if completed_steps is None else completed_steps,
        "current_step": _running_step(steps) if current_step is None else current_step,
        "execution_time": _seconds(execution_time),
        "timestamp": _ts(timestamp),
    }


def step_progress(
    execution_id: int,
    step_id: Optional[int],
    step_name: str,
    status: str,
    *,
    execution_time: Optional[float] = None,
    output: Any = "",
    error_message: str = "",
    timestamp: Timestamp = None,
) -> Tuple[str, Event]:
    """``step_progress`` on ``execution.{id}``. ``step_id`` is the step's id, or None for a parallel group
    (the page upserts steps by ``step_id``)."""
    if step_id is not None:
        _id(step_id, "step_id")
    return f"execution.{_id(execution_id, 'execution_id')}", {
        "type": "step_progress",
        "execution_id": execution_id,
        "step_id": step_id,
        "step_name": step_name,
        "status": _check(status, STEP_STATUSES, "status"),
        "execution_time": _seconds(execution_time),
        "output": output,
        "error_message": error_message or "",
        "timestamp": _ts(timestamp),
    }


def log_entry(
    execution_id: int,
    level: str,
    message: str,
    *,
    step_name: Optional[str] = None,
    source: str = "pipeline",
    timestamp: Timestamp = None,
) -> Tuple[str, Event]:
    """``log_entry`` on ``execution.{id}``: one log line (the page appends and keeps the last 1000)."""
    return f"execution.{_id(execution_id, 'execution_id')}", {
        "type": "log_entry",
        "execution_id": execution_id,
        "timestamp": _ts(timestamp),
        "level": _check(level, LOG_LEVELS, "level"),
        "message": message,
        "step_name": step_name,
        "source": _check(source, LOG_SOURCES, "source"),
    }


def pipeline_update(
    pipeline_id: int,
    status: str,
    *,
    progress: Optional[float] = None,
    logs: Optional[List[Any]] = None,
    timestamp: Timestamp = None,
) -> Tuple[str, Event]:
    """``pipeline_update`` on ``pipeline.{id}``: the pipeline's latest execution status and progress (0-100)."""
    return f"pipeline.{_id(pipeline_id, 'pipeline_id')}", {
        "type": "pipeline_update",
        "pipeline_id": pipeline_id,
        "status": _check(status, EXECUTION_STATUSES, "status"),
        "progress": 0 if progress is None else progress,
        "logs": list(logs or []),
        "timestamp": _ts(timestamp),
    }


def project_update(
    project_id: int,
    event: str,
    data: Optional[Mapping[str, Any]] = None,
    *,
    timestamp: Timestamp = None,
) -> Tuple[str, Event]:
    """``project_update`` on ``project.{id}``: ``event`` names what happened (e.g. ``execution_finished``)."""
    if not isinstance(event, str) or not event:
        raise InvalidEvent("project_update needs a non-empty string 'event'")
    return f"project.{_id(project_id, 'project_id')}", {
        "type": "project_update",
        "project_id": project_id,
        "event": event,
        "data": dict(data or {}),
        "timestamp": _ts(timestamp),
    }


def _notification(channel: str, level: str, title: str, message: str, timestamp: Timestamp) -> Tuple[str, Event]:
    fields = {"level": _check(level, NOTIFICATION_LEVELS, "level"), "title": title, "message": message}
    # Flat for today's clients, and under `data` because the notification bell reads `message.data`; the
    # service does the same, sending both costs nothing and does not depend on it.
    return channel, {"type": "system_notification", **fields, "data": dict(fields), "timestamp": _ts(timestamp)}


def notify_user(user_id: int, level: str, title: str, message: str, *, timestamp: Timestamp = None) -> Tuple[str, Event]:
    """``system_notification`` on ``user.{id}``: reaches only that user's sockets, on every endpoint."""
    return _notification(f"user.{_id(user_id, 'user_id')}", level, title, message, timestamp)


def system_notification(level: str, title: str, message: str, *, timestamp: Timestamp = None) -> Tuple[str, Event]:
    """``system_notification`` on ``system``: every system and monitor socket."""
    return _notification("system", level, title, message, timestamp)
