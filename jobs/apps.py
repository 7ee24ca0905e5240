from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Jobs and compute backends"

    def ready(self) -> None:
        from jobs.reconcile import orphaned_job_holds
        from quotas.reconcile import register_hold_owner_check

        register_hold_owner_check(orphaned_job_holds)
