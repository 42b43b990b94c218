"""Who may read which realtime channel: the default ``can_read`` and the channel parser the view uses.

Needs Django (models, ``apps``); imported only by ``views``. Replace the policy with
``ANSFLOW_REALTIME["CAN_READ"] = "myapp.realtime.can_read"``: a function ``can_read(user, kind, id) -> bool``
where ``kind`` is one of execution, pipeline, project, user, monitor, system and ``id`` the int id (None for
monitor/system).
"""

import re
from typing import Any, Optional, Tuple

from django.apps import apps
from django.db.models import Q

from . import config

_CHANNEL = re.compile(r"^(?:(execution|pipeline|project|user)\.([1-9][0-9]{0,18})|(monitor|system))$")


def parse_channel(channel: str) -> Optional[Tuple[str, Optional[int]]]:
    """``"execution.42"`` → ``("execution", 42)``, ``"system"`` → ``("system", None)``; None if not a channel."""
    match = _CHANNEL.match(channel or "")
    if not match:
        return None
    if match.group(3):
        return match.group(3), None
    return match.group(1), int(match.group(2))


def project_id_of(kind: str, object_id: int) -> Optional[int]:
    """Walk execution → pipeline → project in one query; None when the object does not exist."""
    settings = config.load()
    if kind == "project":
        return object_id
    model = apps.get_model(settings["MODELS"][kind])
    lookup = settings["PROJECT_LOOKUPS"][kind]
    return model._default_manager.filter(pk=object_id).values_list(lookup, flat=True).first()


def is_project_member(user: Any, project_id: int) -> bool:
    """Owner or member of the project, or the project is visible to every signed-in user
    (AnsFlow's ``visibility`` public/internal, when the model has that field)."""
    project_model = apps.get_model(config.load()["MODELS"]["project"])
    field_names = {f.name for f in project_model._meta.get_fields()}
    rule = Q()
    if "owner" in field_names:
        rule |= Q(owner=user)
    if "members" in field_names:
        rule |= Q(members=user)
    if "visibility" in field_names:
        rule |= Q(visibility__in=("public", "internal"))
    if not rule:
        return False
    return project_model._default_manager.filter(Q(pk=project_id) & rule).exists()


def default_can_read(user: Any, kind: str, object_id: Optional[int]) -> bool:
    """The default policy.

    - superusers read everything;
    - ``user.{id}``: only that user;
    - ``monitor`` and ``system``: any authenticated user (what AnsFlow shows today; restrict the monitor to
      staff with your own CAN_READ if it should be);
    - ``execution``/``pipeline``/``project``: members of the owning project. An unknown id is a deny, not a
      404, so the answer does not reveal which ids exist.
    """
    if not getattr(user, "is_authenticated", False) or not getattr(user, "is_active", True):
        return False
    if getattr(user, "is_superuser", False):
        return True
    if kind == "user":
        return str(user.pk) == str(object_id)
    if kind in ("monitor", "system"):
        return True
    project_id = project_id_of(kind, object_id)
    return project_id is not None and is_project_member(user, project_id)
