"""factory_boy factories for every model the tests build."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import factory
from django.utils import timezone

from accounts.models import Membership, Organization, Project, ProjectMember, User
from jobs.drafts import JobDraft
from jobs.models import Job
from jobs.services import job_submit
from quotas.models import Allocation, Cluster, Rate

PASSWORD = "correct horse battery staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.org")
    password = factory.django.Password(PASSWORD)


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization

    name = factory.Sequence(lambda n: f"Lab {n}")
    slug = factory.Sequence(lambda n: f"lab-{n}")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    organization = factory.SubFactory(OrganizationFactory)
    user = factory.SubFactory(UserFactory)
    role = Membership.Role.MEMBER


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    organization = factory.SubFactory(OrganizationFactory)
    name = factory.Sequence(lambda n: f"Project {n}")
    slug = factory.Sequence(lambda n: f"project-{n}")


class ProjectMemberFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ProjectMember

    project = factory.SubFactory(ProjectFactory)
    user = factory.SubFactory(UserFactory)
    role = ProjectMember.Role.MEMBER


class ClusterFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Cluster
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"cluster-{n}")
    kind = Cluster.Kind.SIMULATED
    options = factory.LazyFunction(lambda: {"gpu_types": ["h100", "a100"], "gpus": 64})


class RateFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Rate

    cluster = factory.SubFactory(ClusterFactory)
    resource = Rate.Resource.GPU_HOUR
    gpu_type = ""
    su_per_unit = Decimal("1.0")
    effective_from = factory.LazyFunction(lambda: timezone.now() - timedelta(days=365))


class AllocationFactory(factory.django.DjangoModelFactory):
    """An active allocation with no SU yet: credit it through quotas.services.ledger_credit."""

    class Meta:
        model = Allocation
        skip_postgeneration_save = True

    project = factory.SubFactory(ProjectFactory)
    kind = Allocation.Kind.GRANT
    starts_at = factory.LazyFunction(lambda: timezone.now() - timedelta(days=1))
    ends_at = factory.LazyFunction(lambda: timezone.now() + timedelta(days=365))

    @factory.post_generation
    def clusters(self, create: bool, extracted: list[Cluster] | None, **kwargs: object) -> None:
        if create and extracted:
            self.clusters.set(extracted)


def submitted_job(
    *, user: User, project: Project, cluster: Cluster, idempotency_key: str = "", **fields: Any
) -> Job:
    """A job submitted through jobs.services.job_submit (estimate held, forwarding queued):
    "train", `echo hi`, one GPU, one CPU, 1 GiB for an hour, unless `fields` say otherwise."""
    draft = JobDraft(**{"name": "train", "script": "echo hi\n", "gpus": 1, **fields})
    return job_submit(
        user=user, project=project, cluster=cluster, draft=draft, idempotency_key=idempotency_key
    )
