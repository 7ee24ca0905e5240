from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts and tenancy"

    def ready(self) -> None:
        from allauth.account.signals import user_signed_up

        from accounts import schema  # noqa: F401 (registers the OpenAPI bearer scheme)
        from accounts.signals import accept_invitation_on_signup

        user_signed_up.connect(accept_invitation_on_signup, dispatch_uid="accounts-invitation")
