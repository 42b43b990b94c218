"""A minimal copy of AnsFlow's shape (Project with owner/members/visibility → Pipeline → PipelineExecution),
enough for the authorize view's default policy to walk execution → pipeline → project."""

from django.conf import settings
from django.db import models


class Project(models.Model):
    name = models.CharField(max_length=100)
    visibility = models.CharField(max_length=20, default="private")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="owned_projects")
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="Membership", related_name="projects")


class Membership(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    role = models.CharField(max_length=20, default="developer")


class Pipeline(models.Model):
    name = models.CharField(max_length=100)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="pipelines")


class PipelineExecution(models.Model):
    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="executions")
    status = models.CharField(max_length=20, default="pending")
