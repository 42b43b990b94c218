"""``path("", include("ansflow_realtime.urls"))`` in the project's urls.py mounts the authorize endpoint."""

from django.urls import re_path

from .views import authorize

# With or without the trailing slash: the realtime service calls the URL it is configured with, and a redirect
# (APPEND_SLASH) would drop nothing but cost a round trip.
urlpatterns = [re_path(r"^api/v1/realtime/authorize/?$", authorize, name="ansflow-realtime-authorize")]
