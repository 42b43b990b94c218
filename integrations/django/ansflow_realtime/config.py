"""Where the publisher and the authorize view read their settings.

Django's ``settings.ANSFLOW_REALTIME`` wins when Django is importable *and* configured; otherwise the environment
(``RABBITMQ_URL``, ``RABBITMQ_EXCHANGE``), the same variable names the realtime service reads, so one ``.env``
serves both sides. Importing this module never imports Django eagerly: the publisher must work in a plain
script (``examples/simulate_run.py``) and in a Celery worker that has not called ``django.setup()``.
"""

import os
from typing import Any, Dict

DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"
DEFAULT_EXCHANGE = "ansflow.realtime"

# Seconds the realtime service may cache an authorize answer. Deny is short so that a user just added to a
# project does not wait long; allow is longer because revocation also closes on the token's expiry (60 min).
DEFAULT_TTL_ALLOW = 60
DEFAULT_TTL_DENY = 10

# Seconds one publish() may take, retries included, before it raises PublishError. Long enough to outlast a stream
# leader election after a node of the cluster died (seconds; the cluster test's figures are in docs/operations.md),
# short enough that a Django request or Celery task is not held for minutes by a broker that is really gone.
DEFAULT_PUBLISH_DEADLINE = 30.0

# Where the default can_read() finds AnsFlow's models (app_label.ModelName) and how it walks to the project.
DEFAULT_MODELS = {
    "execution": "cicd_integrations.PipelineExecution",
    "pipeline": "pipelines.Pipeline",
    "project": "project_management.Project",
}
DEFAULT_PROJECT_LOOKUPS = {
    "execution": "pipeline__project_id",
    "pipeline": "project_id",
}


def _django_settings() -> Dict[str, Any]:
    try:
        from django.conf import settings
    except ImportError:
        return {}
    # Touching an attribute of unconfigured settings raises ImproperlyConfigured; a script that happens to
    # have Django installed but no settings module must still fall back to the environment.
    if not settings.configured:
        return {}
    value = getattr(settings, "ANSFLOW_REALTIME", None)
    return dict(value) if value else {}


def load() -> Dict[str, Any]:
    """The effective settings, with defaults filled in. Keys are documented in the README."""
    conf = _django_settings()
    return {
        "URL": conf.get("URL") or os.environ.get("RABBITMQ_URL") or DEFAULT_URL,
        "EXCHANGE": conf.get("EXCHANGE") or os.environ.get("RABBITMQ_EXCHANGE") or DEFAULT_EXCHANGE,
        "DECLARE_EXCHANGE": conf.get("DECLARE_EXCHANGE", True),
        "MANDATORY": conf.get("MANDATORY", False),
        "CONNECTION_NAME": conf.get("CONNECTION_NAME", "ansflow-django-realtime"),
        "CONFIRM_TIMEOUT": conf.get("CONFIRM_TIMEOUT", 10.0),
        "PUBLISH_DEADLINE": conf.get("PUBLISH_DEADLINE", DEFAULT_PUBLISH_DEADLINE),
        "CAN_READ": conf.get("CAN_READ"),
        "AUTHENTICATE": conf.get("AUTHENTICATE"),
        "MODELS": {**DEFAULT_MODELS, **conf.get("MODELS", {})},
        "PROJECT_LOOKUPS": {**DEFAULT_PROJECT_LOOKUPS, **conf.get("PROJECT_LOOKUPS", {})},
        "AUTHZ_TTL_ALLOW": int(conf.get("AUTHZ_TTL_ALLOW", DEFAULT_TTL_ALLOW)),
        "AUTHZ_TTL_DENY": int(conf.get("AUTHZ_TTL_DENY", DEFAULT_TTL_DENY)),
    }
