"""GPU Commons settings: every value comes from the environment (see .env.example).

With nothing set, development defaults work: SQLite, an in-process/filesystem Celery
transport, the local compute backend and console email. Production (DJANGO_DEBUG=false)
refuses to start without a real SECRET_KEY.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import django_stubs_ext
import environ
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

# Lets the generic admin and form classes be subscripted at runtime (ModelAdmin[Project]), as
# the type checker sees them.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("GPUC_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()
# Secrets may come from files: SECRET_KEY_FILE=/run/secrets/key and so on (django-environ).
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DJANGO_DEBUG", default=True)
_DEV_SECRET = "dev-insecure-secret-key-never-use-in-production-0123456789abcdef"  # noqa: S105 (dev only; refused in production)
SECRET_KEY = env.str("SECRET_KEY", default=_DEV_SECRET if DEBUG else "")
if not DEBUG and (not SECRET_KEY or SECRET_KEY == _DEV_SECRET or len(SECRET_KEY) < 50):
    raise ImproperlyConfigured(
        "SECRET_KEY must be set to a random value of at least 50 characters when DJANGO_DEBUG=false"
    )

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# Every link in a mail is built from SITE_URL (`make run` sets it from its PORT); mails are
# signed with SITE_NAME.
SITE_URL = env.str("SITE_URL", default="http://127.0.0.1:8000")
SITE_NAME = env.str("SITE_NAME", default="GPU Commons")
# The shared secret nginx sends with its auth_request to /sessions-auth/ (deploy/sessions/):
# only the proxy learns where a session listens and its app's secret. Empty: no proxy, and
# sessions answer with a page saying so (`make run`).
SESSIONS_PROXY_SECRET = env.str("SESSIONS_PROXY_SECRET", default="")
# A running session with no request through the proxy (and no busy kernel) this long is
# stopped, charged for what it ran and the rest of its hold released; a cluster's option
# max_session_idle_minutes caps it.
SESSIONS_IDLE_MINUTES = env.int("SESSIONS_IDLE_MINUTES", default=30)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "simple_history",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.github",
    "allauth.socialaccount.providers.google",
    "allauth.socialaccount.providers.orcid",
    "allauth.socialaccount.providers.openid_connect",
    "allauth.socialaccount.providers.saml",
    "accounts",
    "quotas",
    "quotas.billing",
    "jobs",
    "portal",
]

# portal.middleware.X is Django's (or django-htmx's) X, skipped for bearer-token API calls.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "portal.security.SecurityHeadersMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "portal.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "portal.middleware.AuthenticationMiddleware",
    "portal.middleware.RejectNulCharactersMiddleware",  # after auth: the 400 page shows the user
    "portal.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "portal.middleware.HtmxMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"
ASGI_APPLICATION = "portal.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.context_processors.portal",
            ],
            # {{ x|su }}, {{ job|runtime }}, {% date_range %}: one way to show SU and periods
            "builtins": ["portal.templatetags.units"],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=0)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL + a busy timeout so the web server and the in-process worker can share the file.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "init_command": "PRAGMA journal_mode=WAL;"}
    )
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env.bool(
    "DB_SERVER_SIDE_BINDING", default=True
):
    # Parameters bound by the server, and a statement a connection runs a fifth time prepared
    # (psycopg's threshold; Django's default is never): the hot requests then skip PostgreSQL's
    # parse and plan, most of its CPU for a submission (3.3 -> 1.75 ms). Off for a pooler that
    # cannot keep prepared statements (PgBouncer before 1.21 in transaction mode).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        server_side_binding=True, prepare_threshold=5
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://gpuc")}

AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "dashboard"

# django-allauth
ACCOUNT_LOGIN_METHODS = {"email", "username"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "username*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = "mandatory"
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_RATE_LIMITS = {
    "login": "30/m/ip",
    "login_failed": "10/m/ip,5/5m/key",
    "signup": "20/m/ip",
    "confirm_email": "1/3m/key",
    "reset_password": "20/m/ip,5/m/key",
}
ACCOUNT_ADAPTER = "accounts.adapters.AccountAdapter"
SOCIALACCOUNT_ADAPTER = "accounts.adapters.SocialAccountAdapter"
ACCOUNT_DEFAULT_HTTP_PROTOCOL = "http" if DEBUG else "https"
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes", "webauthn"]
MFA_PASSKEY_LOGIN_ENABLED = True
MFA_WEBAUTHN_ALLOW_INSECURE_ORIGIN = DEBUG
MFA_TOTP_ISSUER = "GPU Commons"


def _social_providers() -> dict[str, dict[str, object]]:
    """Social login providers, each switched on only by its environment variables."""
    providers: dict[str, dict[str, object]] = {}
    for name, key in (("github", "GITHUB"), ("google", "GOOGLE"), ("orcid", "ORCID")):
        client_id = env.str(f"{key}_CLIENT_ID", default="")
        if client_id:
            providers[name] = {
                "APPS": [{"client_id": client_id, "secret": env.str(f"{key}_SECRET", default="")}],
            }
    if orcid := providers.get("orcid"):
        orcid["BASE_DOMAIN"] = env.str("ORCID_BASE_DOMAIN", default="orcid.org")
    if oidc_id := env.str("OIDC_CLIENT_ID", default=""):
        providers["openid_connect"] = {
            "APPS": [
                {
                    "provider_id": env.str("OIDC_PROVIDER_ID", default="institution"),
                    "name": env.str("OIDC_NAME", default="Institution login"),
                    "client_id": oidc_id,
                    "secret": env.str("OIDC_SECRET", default=""),
                    "settings": {"server_url": env.str("OIDC_SERVER_URL")},
                }
            ]
        }
    if saml_entity := env.str("SAML_IDP_ENTITY_ID", default=""):
        # The IdP is described by its metadata URL, or by its SSO URL and signing certificate.
        idp: dict[str, str] = {"entity_id": saml_entity}
        if metadata_url := env.str("SAML_IDP_METADATA_URL", default=""):
            idp["metadata_url"] = metadata_url
        elif env.str("SAML_IDP_SSO_URL", default="") and env.str("SAML_IDP_X509CERT", default=""):
            idp["sso_url"] = env.str("SAML_IDP_SSO_URL")
            idp["x509cert"] = env.str("SAML_IDP_X509CERT")
            if slo_url := env.str("SAML_IDP_SLO_URL", default=""):
                idp["slo_url"] = slo_url
        else:
            raise ImproperlyConfigured(
                "SAML_IDP_ENTITY_ID needs SAML_IDP_METADATA_URL, or SAML_IDP_SSO_URL and "
                "SAML_IDP_X509CERT"
            )
        providers["saml"] = {
            "APPS": [
                {
                    "provider_id": env.str("SAML_PROVIDER_ID", default="institution-saml"),
                    "name": env.str("SAML_NAME", default="Institution SSO"),
                    "client_id": env.str("SAML_CLIENT_ID", default="gpucommons"),
                    "settings": {
                        "attribute_mapping": {
                            # uid, then eduPersonPrincipalName; mail; givenName; sn
                            "uid": [
                                "urn:oid:0.9.2342.19200300.100.1.1",
                                "urn:oid:1.3.6.1.4.1.5923.1.1.1.6",
                            ],
                            "email": "urn:oid:0.9.2342.19200300.100.1.3",
                            "first_name": "urn:oid:2.5.4.42",
                            "last_name": "urn:oid:2.5.4.4",
                        },
                        "idp": idp,
                        "sp": {"entity_id": env.str("SAML_SP_ENTITY_ID", default="")},
                    },
                }
            ]
        }
    return providers


SOCIALACCOUNT_PROVIDERS = _social_providers()
SOCIALACCOUNT_EMAIL_VERIFICATION = "mandatory"

EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://")
vars().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="GPU Commons <noreply@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
ADMINS = [("Facility admins", a) for a in env.list("ADMIN_EMAILS", default=[])]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
# Uploads are private: no URL serves MEDIA_ROOT (quotas.documents streams them after checking
# the caller), and check portal.E110 refuses a MEDIA_ROOT inside the static folders.
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))
MEDIA_URL = "media/"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
DATA_UPLOAD_MAX_MEMORY_SIZE = 3 * 1024 * 1024

# Security: strict in production, relaxed for local development.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy (portal.security; Django 6.0's SECURE_CSP shape): scripts, styles and
# everything else from this site only, no inline script or style. No form-action: Stripe
# Checkout and social sign-in answer a form POST with a redirect to another host.
SECURE_CSP = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:"],  # data: for the TOTP QR code and Swagger UI's icons
    "font-src": ["'self'"],
    "connect-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "frame-ancestors": ["'none'"],
}
# Browser features no page uses are off; WebAuthn (passkeys, security keys) for this site only.
PERMISSIONS_POLICY: dict[str, list[str]] = {
    "accelerometer": [],
    "camera": [],
    "display-capture": [],
    "geolocation": [],
    "gyroscope": [],
    "magnetometer": [],
    "microphone": [],
    "midi": [],
    "payment": [],
    "usb": [],
    "publickey-credentials-get": ["self"],
    "publickey-credentials-create": ["self"],
}

# REST API
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "accounts.authentication.TokenScopePermission",
    ],
    "DEFAULT_PARSER_CLASSES": ["portal.api.JSONParser"],  # refuses NUL characters
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "portal.api.ContentNegotiation",
    "DEFAULT_SCHEMA_CLASS": "portal.schema.AutoSchema",  # documents every error answer
    "DEFAULT_PAGINATION_CLASS": "portal.api.CursorPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "portal.api.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": [
        "accounts.authentication.UserRateThrottle",  # one Redis round trip per request
        "rest_framework.throttling.AnonRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "user": env.str("API_THROTTLE_USER", default="100000/hour"),
        "anon": env.str("API_THROTTLE_ANON", default="600/hour"),
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "GPU Commons API",
    "DESCRIPTION": "Grants, quotas, jobs and billing for shared GPU clusters.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI is served from the vendored drf-spectacular-sidecar package: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # No badge from the public online validator: the page loads nothing from other hosts.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "OrganizationRoleEnum": "accounts.models.Membership.Role",
        "ProjectRoleEnum": "accounts.models.ProjectMember.Role",
        "OrganizationKindEnum": "accounts.models.Organization.Kind",
        # Several models have a `kind`, `state` or `status` field: name each choice set.
        "ClusterKindEnum": "quotas.models.Cluster.Kind",
        "AllocationKindEnum": "quotas.models.Allocation.Kind",
        "AllocationStatusEnum": "quotas.models.Allocation.Status",
        "AllocationRequestKindEnum": "quotas.models.AllocationRequest.Kind",
        "AllocationRequestStateEnum": "quotas.models.AllocationRequest.State",
        "LedgerEntryKindEnum": "quotas.models.LedgerEntry.Kind",
        "JobStateEnum": "jobs.models.Job.State",
    },
}

# Celery: no broker server needed by default (filesystem transport under var/).
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL == "filesystem://":
    _q = VAR_DIR / "celery"
    # The filesystem transport needs its folders before the first message is sent.
    for _folder in (_q / "queue", _q / "processed", _q / "control"):
        _folder.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_q / "queue"),
        "data_folder_out": str(_q / "queue"),
        "processed_folder": str(_q / "processed"),
        "control_folder": str(_q / "control"),
        "store_processed": False,
    }
elif CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # Messages a dead worker had taken (acks_late) come back only after this long; recovery
    # does not wait for them (the forwarding sweep below), and a redelivered forward is a
    # no-op (claim + uuid lookup). Every countdown we use stays far below it.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
# A job pending or submitting this long with no live forwarder (one renews its claim every
# quarter of it) lost its forward; the sweep looks for such jobs this often.
JOBS_LOST_FORWARD_SECONDS = env.int("JOBS_LOST_FORWARD_SECONDS", default=45)
JOBS_FORWARD_SWEEP_SECONDS = env.int("JOBS_FORWARD_SWEEP_SECONDS", default=10)
# A job the cluster refuses for an account the portal has just set up waits this long for the
# cluster to learn it (retried with backoff), then is rejected.
JOBS_ACCOUNT_WAIT_SECONDS = env.int("JOBS_ACCOUNT_WAIT_SECONDS", default=600)
if JOBS_LOST_FORWARD_SECONDS < 30 or JOBS_FORWARD_SWEEP_SECONDS < 1:
    # A job between two quick retries waits up to 16 s untouched: it must not look lost.
    raise ImproperlyConfigured(
        "JOBS_LOST_FORWARD_SECONDS must be at least 30 and JOBS_FORWARD_SWEEP_SECONDS at least 1"
    )
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 4
CELERY_TASK_IGNORE_RESULT = True
# Celery's Django fixup closes the worker's database connections around every task unless this
# is set; portal.celery.keep_usable_connections applies DB_CONN_MAX_AGE instead (0: closed
# after each task, as before).
CELERY_DB_REUSE_MAX = 2**62
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE = {
    "jobs-sync-all-clusters": {
        "task": "jobs.tasks.sync_all_clusters_task",
        "schedule": timedelta(seconds=env.int("JOBS_SYNC_INTERVAL_SECONDS", default=5)),
    },
    "jobs-accounts-sync-all-clusters": {
        "task": "jobs.tasks.accounts_sync_all_task",
        "schedule": timedelta(seconds=env.int("JOBS_ACCOUNTS_SYNC_INTERVAL_SECONDS", default=5)),
    },
    "jobs-sessions-stop-idle": {
        "task": "jobs.tasks.sessions_stop_idle_task",
        "schedule": timedelta(seconds=60),
    },
    "jobs-forward-pending": {
        "task": "jobs.tasks.forward_pending_task",
        "schedule": timedelta(seconds=JOBS_FORWARD_SWEEP_SECONDS),
    },
    "jobs-storage-recount": {
        "task": "jobs.storage.tasks.storage_recount_all_task",
        "schedule": timedelta(minutes=env.int("GPUC_STORAGE_RECOUNT_INTERVAL_MINUTES", default=60)),
    },
    "quotas-daily-expiry": {
        "task": "quotas.tasks.allocations_expire_task",
        "schedule": crontab(hour=0, minute=10),
    },
    "quotas-nightly-reconcile": {
        "task": "quotas.tasks.reconcile_ledger_task",
        "schedule": crontab(hour=2, minute=0),
    },
    "billing-report-meter-events": {
        "task": "quotas.billing.tasks.meter_events_report_task",
        "schedule": timedelta(minutes=5),
    },
    "billing-stripe-events-sweep": {
        "task": "quotas.billing.tasks.stripe_events_sweep_task",
        "schedule": timedelta(minutes=10),
    },
    "billing-daily-payment-grace": {
        "task": "quotas.billing.tasks.billing_daily_task",
        "schedule": crontab(hour=1, minute=0),
    },
}

# Compute: local backend (subprocesses in per-job directories) enabled by default in dev only.
GPUC_LOCAL_BACKEND_ENABLED = env.bool("GPUC_LOCAL_BACKEND_ENABLED", default=DEBUG)
GPUC_LOCAL_BACKEND_ROOT = Path(
    env.str("GPUC_LOCAL_BACKEND_ROOT", default=str(VAR_DIR / "local-jobs"))
)
GPUC_BACKENDS = {
    "local": "jobs.backends.local.LocalBackend",
    "slurm": "jobs.backends.slurm.SlurmBackend",
    "kubernetes": "jobs.backends.kubernetes.KubernetesBackend",
    "simulated": "jobs.backends.simulated.SimulatedBackend",
}
# Cluster-account provisioners by kind (Cluster.options["provisioner"]: a kind or a dotted path).
GPUC_PROVISIONERS = {
    "unix": "jobs.provisioning.unix.UnixProvisioner",
    "ldap": "jobs.provisioning.ldap.LdapProvisioner",
}
GPUC_DEMO_BACKEND = env.str("GPUC_DEMO_BACKEND", default="local")
# A queued/running job the cluster stops reporting is ended (failed, hold settled) this long
# after the first poll that left it out.
JOBS_MISSING_GRACE_SECONDS = env.int("JOBS_MISSING_GRACE_SECONDS", default=3600)
GPUC_MAX_SCRIPT_BYTES = 1024 * 1024
# Project storage (jobs.storage): the largest file one upload may hold, and the byte quota of a
# project's folder (on each cluster) until staff set one of its own.
GPUC_STORAGE_MAX_UPLOAD_BYTES = env.int("GPUC_STORAGE_MAX_UPLOAD_BYTES", default=10 * 1024**3)
GPUC_STORAGE_DEFAULT_QUOTA_BYTES = env.int(
    "GPUC_STORAGE_DEFAULT_QUOTA_BYTES", default=100 * 1024**3
)

# Stripe: billing is off unless keys are set.
STRIPE_SECRET_KEY = env.str("STRIPE_SECRET_KEY", default="")
STRIPE_WEBHOOK_SECRET = env.str("STRIPE_WEBHOOK_SECRET", default="")
STRIPE_API_BASE = env.str("STRIPE_API_BASE", default="")
STRIPE_WEBHOOK_TOLERANCE_SECONDS = env.int("STRIPE_WEBHOOK_TOLERANCE_SECONDS", default=300)
STRIPE_METER_EVENT_NAME = env.str("STRIPE_METER_EVENT_NAME", default="gpu_commons_su")
BILLING_PAYMENT_GRACE_DAYS = env.int("BILLING_PAYMENT_GRACE_DAYS", default=7)

# Quotas: reconcile_ledger reports open holds older than this when no hold owner check is
# registered; QUOTAS_HOLD_OWNER_CHECK is an optional dotted path to such a check.
QUOTAS_STALE_HOLD_DAYS = env.int("QUOTAS_STALE_HOLD_DAYS", default=14)
QUOTAS_HOLD_OWNER_CHECK = env.str("QUOTAS_HOLD_OWNER_CHECK", default="")
# Self-serve trials (company organizations, once each): SU credited, days it lasts, and the
# clusters it may be spent on (empty: every enabled cluster open to the organization).
# GPUC_TRIAL_SU=0 switches trials off.
GPUC_TRIAL_SU = env.int("GPUC_TRIAL_SU", default=100)
GPUC_TRIAL_DAYS = env.int("GPUC_TRIAL_DAYS", default=14)
GPUC_TRIAL_CLUSTERS = env.list("GPUC_TRIAL_CLUSTERS", default=[])

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
