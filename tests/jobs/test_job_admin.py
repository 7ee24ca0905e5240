"""The Django admin shows jobs read-only: no add, change or delete, for superusers too."""

from __future__ import annotations

from http import HTTPStatus

from allauth.account.models import EmailAddress
from django.contrib.admin.sites import site
from django.test import Client, RequestFactory

from jobs.models import Job
from tests import factories


def test_the_job_admin_lists_and_shows_jobs_but_allows_no_writes(submit, sim_cluster):
    job = submit(sim_cluster)
    root = factories.UserFactory(username="root", is_staff=True, is_superuser=True)
    EmailAddress.objects.create(user=root, email=root.email, verified=True, primary=True)
    root.save()
    client = Client()
    client.force_login(root)
    model_admin = site._registry[Job]
    request = RequestFactory().get("/")
    request.user = root

    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request, job)
    assert not model_admin.has_delete_permission(request, job)
    listing = client.get("/django-admin/jobs/job/")
    assert listing.status_code == HTTPStatus.OK
    assert str(job.uuid) in listing.content.decode()
    assert client.get(f"/django-admin/jobs/job/{job.pk}/change/").status_code == HTTPStatus.OK
    assert client.get("/django-admin/jobs/job/add/").status_code == HTTPStatus.FORBIDDEN
    response = client.post(f"/django-admin/jobs/job/{job.pk}/delete/", {"post": "yes"})
    assert response.status_code == HTTPStatus.FORBIDDEN
    assert Job.objects.filter(pk=job.pk).exists()
