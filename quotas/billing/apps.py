from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "quotas.billing"
    label = "billing"
    verbose_name = "Billing (Stripe)"
