"""Tells the quotas reconciler which open holds belong to jobs that no longer need them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta

from django.utils import timezone

from jobs.models import Job
from quotas.models import Hold

# A hold and its job are created in one transaction; a hold without a job this old is orphaned.
JOBLESS_GRACE = timedelta(hours=1)


def orphaned_job_holds(holds: Sequence[Hold]) -> Mapping[int, str]:
    """{hold.pk: reason} for open job holds whose job is finalised or missing."""
    by_uuid = {hold.job_uuid: hold for hold in holds if hold.job_uuid is not None}
    if not by_uuid:
        return {}
    jobs = {
        job_uuid: (state, finalized_at)
        for job_uuid, state, finalized_at in Job.objects.filter(uuid__in=list(by_uuid)).values_list(
            "uuid", "state", "finalized_at"
        )
    }
    now = timezone.now()
    orphans: dict[int, str] = {}
    for job_uuid, hold in by_uuid.items():
        found = jobs.get(job_uuid)
        if found is None:
            if hold.key.startswith("job:") and now - hold.created_at > JOBLESS_GRACE:
                orphans[hold.pk] = f"no job {job_uuid} exists for this hold"
        elif found[1] is not None:
            orphans[hold.pk] = f"job {job_uuid} was finalised ({found[0]}) but its hold is open"
    return orphans
