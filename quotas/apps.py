from django.apps import AppConfig


class QuotasConfig(AppConfig):
    name = "quotas"
    verbose_name = "Quotas, allocations and the ledger"

    def ready(self) -> None:
        from accounts.project_page import register_project_section
        from quotas.project_page import project_funding_section

        register_project_section(project_funding_section)
