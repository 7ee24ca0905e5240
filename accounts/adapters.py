"""allauth hooks: links in allauth's mails come from SITE_URL and are signed with SITE_NAME;
an invitation opened before signing up rides through sign-up (its address counts as verified:
the invitation code reached it) and is accepted once the account exists."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from allauth.account.adapter import DefaultAccountAdapter
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from django.conf import settings
from django.http import HttpRequest
from django.urls import reverse

from accounts.selectors import invitation_get_by_token
from portal import mail
from portal.errors import NotFound

# The session key under which accounts.views keeps an opened invitation's code.
INVITATION_SESSION_KEY = "accounts_invitation_token"


@dataclass(frozen=True)
class MailSite:
    """What allauth's mail templates call `current_site`: our name and address."""

    name: str
    domain: str


def on_site(url: str) -> str:
    """`url` with its scheme and host replaced by SITE_URL's (the path and query kept)."""
    site = urlsplit(mail.site_url("/"))
    parts = urlsplit(url)
    prefix = site.path.rstrip("/")
    return urlunsplit((site.scheme, site.netloc, prefix + parts.path, parts.query, parts.fragment))


class AccountAdapter(DefaultAccountAdapter):
    """Open sign-up; email verification is mandatory (an invitation's address counts)."""

    def format_email_subject(self, subject: str) -> str:
        return mail.subject(subject)

    def send_mail(self, template_prefix: str, email: str, context: dict[str, Any]) -> None:
        site = MailSite(name=settings.SITE_NAME, domain=mail.site_url("/"))
        super().send_mail(template_prefix, email, {**context, "current_site": site})

    def get_email_confirmation_url(self, request: HttpRequest, emailconfirmation: Any) -> str:
        return on_site(super().get_email_confirmation_url(request, emailconfirmation))

    def get_reset_password_from_key_url(self, key: str) -> str:
        return on_site(super().get_reset_password_from_key_url(key))

    def is_email_verified(self, request: HttpRequest, email: str) -> bool:
        """Also verified: the address of the invitation opened in this session (its code was
        mailed there), so the invitee signs up without a second round trip and joins."""
        if super().is_email_verified(request, email):
            return True
        token = request.session.get(INVITATION_SESSION_KEY) if request is not None else None
        if not token:
            return False
        try:
            invitation = invitation_get_by_token(token)
        except NotFound:
            return False
        return invitation.is_usable and invitation.email.lower() == email.lower()

    def get_login_redirect_url(self, request: HttpRequest) -> str:
        if request.session.get(INVITATION_SESSION_KEY):
            return reverse("accounts:invitation_accept")
        return super().get_login_redirect_url(request)

    def get_signup_redirect_url(self, request: HttpRequest) -> str:
        if request.session.get(INVITATION_SESSION_KEY):
            return reverse("accounts:invitation_accept")
        return super().get_signup_redirect_url(request)


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    """Hook point for institution logins (ORCID, GitHub, Google, OIDC, SAML)."""
