"""``GET /api/v1/realtime/authorize?channel=<channel>``: may the bearer of this token read this channel?

Called by the realtime service with ``AUTHZ_MODE=django`` for each channel a socket asks for, with the user's
own ``Authorization: Bearer <access token>``. Answers 200 ``{"allow": bool, "ttl": seconds}`` (the service
caches the answer for ``ttl``), 401 when the request is not authenticated, 400 when ``channel`` is not a
channel name, 405 for another method. Requires Django.
"""

from typing import Any, Callable, Optional

from django.http import HttpRequest, JsonResponse
from django.utils.module_loading import import_string
from django.views.decorators.http import require_GET

from . import config
from .authz import default_can_read, parse_channel


def _authenticate_bearer(request: HttpRequest) -> Optional[Any]:
    """simplejwt's authenticator (what AnsFlow's API uses) when installed, else whatever Django middleware
    already put on ``request.user``. Returns the user or None."""
    try:
        from rest_framework_simplejwt.authentication import JWTAuthentication
        from rest_framework.exceptions import AuthenticationFailed
    except ImportError:
        user = getattr(request, "user", None)
        return user if getattr(user, "is_authenticated", False) else None
    try:
        result = JWTAuthentication().authenticate(request)
    except AuthenticationFailed:
        # Invalid, expired, a refresh token, or a deleted/inactive user: all "not authenticated".
        return None
    return result[0] if result else None


def _setting_callable(name: str, default: Callable) -> Callable:
    path = config.load()[name]
    return import_string(path) if path else default


@require_GET
def authorize(request: HttpRequest) -> JsonResponse:
    user = _setting_callable("AUTHENTICATE", _authenticate_bearer)(request)
    if user is None:
        response = JsonResponse({"detail": "not authenticated"}, status=401)
        response["WWW-Authenticate"] = 'Bearer realm="api"'
        return response
    parsed = parse_channel(request.GET.get("channel", ""))
    if parsed is None:
        return JsonResponse({"detail": "channel must be execution.{id}, pipeline.{id}, project.{id}, user.{id}, monitor or system"}, status=400)
    kind, object_id = parsed
    allow = bool(_setting_callable("CAN_READ", default_can_read)(user, kind, object_id))
    settings = config.load()
    ttl = settings["AUTHZ_TTL_ALLOW"] if allow else settings["AUTHZ_TTL_DENY"]
    response = JsonResponse({"allow": allow, "ttl": ttl})
    # The answer is per user: no shared cache may keep it; the realtime service does its own caching by ttl.
    response["Cache-Control"] = "private, no-store"
    response["Vary"] = "Authorization"
    return response
