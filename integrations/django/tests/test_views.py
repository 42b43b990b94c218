"""The authorize view (issue 6, AUTHZ_MODE=django) with Debian's Django and simplejwt and Django's test client.

Skipped when Django is not installed (``apt-get install python3-django python3-djangorestframework-simplejwt``).
"""

import datetime
import os
import unittest
import uuid

import support  # noqa: F401  (puts the package on sys.path)

# Only `django` at module level: unittest's loader inspects every module attribute, and touching Django's lazy
# `settings` object before setUpModule configures it raises ImproperlyConfigured.
try:
    import django
except ImportError:  # pragma: no cover - exercised on machines without python3-django
    django = None

SECRET = "test-secret-for-the-authorize-view"

READ_LOG = []


def recording_can_read(user, kind, object_id):
    """A CAN_READ replacement: allows only project 1000 and records each call."""
    READ_LOG.append((user.pk, kind, object_id))
    return kind == "project" and object_id == 1000


def setUpModule():
    if django is None:
        raise unittest.SkipTest("Django is not installed")
    support.quiet_third_party_warnings()
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            SECRET_KEY=SECRET,
            DEBUG=False,
            ALLOWED_HOSTS=["testserver"],
            ROOT_URLCONF="ansflow_realtime.urls",
            INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes", "realtime_testapp"],
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
            MIDDLEWARE=[],
            USE_TZ=True,
            DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
            SIMPLE_JWT={"ACCESS_TOKEN_LIFETIME": datetime.timedelta(minutes=60)},
            ANSFLOW_REALTIME={
                "EXCHANGE": "exchange-from-django-settings",
                "MODELS": {
                    "execution": "realtime_testapp.PipelineExecution",
                    "pipeline": "realtime_testapp.Pipeline",
                    "project": "realtime_testapp.Project",
                },
                "AUTHZ_TTL_ALLOW": 30,
                "AUTHZ_TTL_DENY": 5,
            },
        )
        django.setup()
    from django.core.management import call_command

    call_command("migrate", run_syncdb=True, verbosity=0)


class AuthorizeView(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        from django.contrib.auth import get_user_model
        from realtime_testapp.models import Membership, Pipeline, PipelineExecution, Project

        User = get_user_model()
        tag = uuid.uuid4().hex[:8]
        cls.owner = User.objects.create_user(f"owner-{tag}", password="x")
        cls.member = User.objects.create_user(f"member-{tag}", password="x")
        cls.stranger = User.objects.create_user(f"stranger-{tag}", password="x")
        cls.admin = User.objects.create_superuser(f"admin-{tag}", password="x")
        cls.inactive = User.objects.create_user(f"inactive-{tag}", password="x", is_active=False)
        cls.project = Project.objects.create(name=f"p-{tag}", owner=cls.owner)
        Membership.objects.create(project=cls.project, user=cls.member)
        cls.pipeline = Pipeline.objects.create(name="build", project=cls.project)
        cls.execution = PipelineExecution.objects.create(pipeline=cls.pipeline)
        cls.public_project = Project.objects.create(name=f"pub-{tag}", owner=cls.owner, visibility="internal")
        cls.public_execution = PipelineExecution.objects.create(
            pipeline=Pipeline.objects.create(name="docs", project=cls.public_project)
        )

    def setUp(self):
        from django.test import Client

        self.client = Client()

    @staticmethod
    def token(user):
        from rest_framework_simplejwt.tokens import AccessToken

        return str(AccessToken.for_user(user))

    def ask(self, channel, user=None, token=None, **extra):
        if user is not None:
            token = self.token(user)
        if token is not None:
            extra["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        return self.client.get("/api/v1/realtime/authorize", {"channel": channel}, **extra)

    def assertDecision(self, response, allow, ttl):
        self.assertEqual(response.status_code, 200, response.content)
        self.assertEqual(response.json(), {"allow": allow, "ttl": ttl})

    def test_project_members_and_owner_may_read_the_execution_pipeline_and_project(self):
        for user in (self.owner, self.member, self.admin):
            for channel in (f"execution.{self.execution.pk}", f"pipeline.{self.pipeline.pk}", f"project.{self.project.pk}"):
                with self.subTest(user=user.username, channel=channel):
                    self.assertDecision(self.ask(channel, user), True, 30)

    def test_a_user_outside_the_project_is_denied_with_the_short_ttl(self):
        for channel in (f"execution.{self.execution.pk}", f"pipeline.{self.pipeline.pk}", f"project.{self.project.pk}"):
            with self.subTest(channel=channel):
                self.assertDecision(self.ask(channel, self.stranger), False, 5)

    def test_an_internal_project_is_readable_by_any_signed_in_user(self):
        self.assertDecision(self.ask(f"execution.{self.public_execution.pk}", self.stranger), True, 30)

    def test_an_unknown_id_is_a_deny_not_a_404(self):
        self.assertDecision(self.ask("execution.987654321", self.member), False, 5)
        self.assertDecision(self.ask("pipeline.987654321", self.member), False, 5)

    def test_user_channels_belong_to_their_user_and_monitor_system_to_everyone_signed_in(self):
        self.assertDecision(self.ask(f"user.{self.member.pk}", self.member), True, 30)
        self.assertDecision(self.ask(f"user.{self.owner.pk}", self.member), False, 5)
        self.assertDecision(self.ask("monitor", self.stranger), True, 30)
        self.assertDecision(self.ask("system", self.stranger), True, 30)

    def test_401_without_a_valid_access_token(self):
        import jwt
        from rest_framework_simplejwt.tokens import RefreshToken

        now = int(datetime.datetime.now(datetime.timezone.utc).timestamp())
        expired = jwt.encode(
            {"token_type": "access", "exp": now - 10, "iat": now - 3600, "jti": uuid.uuid4().hex, "user_id": self.member.pk},
            SECRET, algorithm="HS256",
        )
        other_key = jwt.encode(
            {"token_type": "access", "exp": now + 600, "iat": now, "jti": uuid.uuid4().hex, "user_id": self.member.pk},
            "another-secret", algorithm="HS256",
        )
        cases = {
            "no header": None,
            "garbage": "not-a-jwt",
            "expired": expired,
            "wrong key": other_key,
            "refresh token": str(RefreshToken.for_user(self.member)),
            "inactive user": self.token(self.inactive),
        }
        for name, token in cases.items():
            with self.subTest(name):
                response = self.ask(f"execution.{self.execution.pk}", token=token)
                self.assertEqual(response.status_code, 401)
                self.assertIn("Bearer", response["WWW-Authenticate"])

    def test_accepts_a_token_made_as_the_realtime_service_tests_make_them(self):
        # HS256 with the Django secret, user_id an int (simplejwt <= 5.5.0) or a string (>= 5.5.1).
        import jwt

        now = int(datetime.datetime.now(datetime.timezone.utc).timestamp())
        for user_id in (self.member.pk, str(self.member.pk)):
            token = jwt.encode(
                {"token_type": "access", "exp": now + 600, "iat": now, "jti": uuid.uuid4().hex, "user_id": user_id},
                SECRET, algorithm="HS256",
            )
            self.assertDecision(self.ask(f"execution.{self.execution.pk}", token=token), True, 30)

    def test_400_for_a_missing_or_malformed_channel_and_405_for_post(self):
        for channel in ("", "execution.0", "execution.abc", "monitor.1", "executions.1"):
            with self.subTest(channel=channel):
                self.assertEqual(self.ask(channel, self.member).status_code, 400)
        response = self.client.post(
            "/api/v1/realtime/authorize?channel=system", HTTP_AUTHORIZATION=f"Bearer {self.token(self.member)}"
        )
        self.assertEqual(response.status_code, 405)

    def test_the_answer_is_not_cacheable_by_shared_caches_and_the_slash_variant_works(self):
        response = self.client.get(
            "/api/v1/realtime/authorize/", {"channel": "system"}, HTTP_AUTHORIZATION=f"Bearer {self.token(self.member)}"
        )
        self.assertDecision(response, True, 30)
        self.assertIn("no-store", response["Cache-Control"])
        self.assertIn("Authorization", response["Vary"])

    def test_an_execution_is_resolved_to_its_project_in_one_query(self):
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as queries:
            self.assertDecision(self.ask(f"execution.{self.execution.pk}", self.member), True, 30)
        # the user (simplejwt), execution → pipeline → project id (one join), the membership check
        self.assertEqual(len(queries), 3, [q["sql"] for q in queries])

    def test_can_read_setting_replaces_the_policy(self):
        from django.conf import settings
        from django.test import override_settings

        custom = {**settings.ANSFLOW_REALTIME, "CAN_READ": "test_views.recording_can_read"}
        READ_LOG.clear()
        with override_settings(ANSFLOW_REALTIME=custom):
            self.assertDecision(self.ask("project.1000", self.stranger), True, 30)
            self.assertDecision(self.ask(f"execution.{self.execution.pk}", self.owner), False, 5)
        self.assertEqual(READ_LOG, [(self.stranger.pk, "project", 1000), (self.owner.pk, "execution", self.execution.pk)])


class SettingsFromDjango(unittest.TestCase):
    def test_django_settings_win_and_the_environment_fills_the_rest(self):
        from ansflow_realtime import config

        old = os.environ.get("RABBITMQ_URL")
        os.environ["RABBITMQ_URL"] = "amqp://env-host:5672/%2F"
        self.addCleanup(lambda: os.environ.pop("RABBITMQ_URL") if old is None else os.environ.__setitem__("RABBITMQ_URL", old))
        loaded = config.load()
        self.assertEqual(loaded["EXCHANGE"], "exchange-from-django-settings")
        self.assertEqual(loaded["URL"], "amqp://env-host:5672/%2F")


if __name__ == "__main__":
    unittest.main()
