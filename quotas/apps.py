from django.apps import AppConfig
from django.db import models


class QuotasConfig(AppConfig):
    name = "quotas"
    verbose_name = "Quotas, allocations and the ledger"

    def ready(self) -> None:
        from accounts.project_page import register_project_section
        from quotas.project_page import project_funding_section
        from quotas.services.batch import AnyOf

        register_project_section(project_funding_section)
        models.IntegerField.register_lookup(AnyOf)
