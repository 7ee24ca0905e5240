from __future__ import annotations

from allauth.account.adapter import DefaultAccountAdapter
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter


class AccountAdapter(DefaultAccountAdapter):
    """Hook point for sign-up policy (open sign-up; email verification is mandatory)."""


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    """Hook point for institution logins (ORCID, GitHub, Google, OIDC, SAML)."""
