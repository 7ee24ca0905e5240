from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Jobs and compute backends"

    def ready(self) -> None:
        from accounts.departures import register_departure_callback
        from accounts.project_page import register_project_section
        from jobs.project_page import project_jobs_section, project_sessions_section
        from jobs.reconcile import orphaned_job_holds
        from quotas.reconcile import register_hold_owner_check

        register_hold_owner_check(orphaned_job_holds)
        register_departure_callback(queue_access_revocation)
        register_project_section(project_jobs_section)
        register_project_section(project_sessions_section)


def queue_access_revocation(user_id: int) -> None:
    """A member left a project: remove the cluster accounts they no longer have a project for
    (in a task: removal is a process or network call)."""
    from jobs import queue
    from jobs.models import ClusterAccount

    if ClusterAccount.objects.filter(user_id=user_id).exclude(provision_key="").exists():
        queue.access_revoke(user_id)
