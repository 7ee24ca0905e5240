"""The two staff groups: "allocation reviewers" and "facility admins", with their permissions."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

REVIEWERS = "allocation reviewers"
FACILITY_ADMINS = "facility admins"

REVIEWER_PERMS = [
    ("quotas", "review_allocationrequest"),
    ("quotas", "view_allocationrequest"),
    ("quotas", "view_allocationrequestevent"),
    ("quotas", "view_allocation"),
    ("quotas", "view_cluster"),
    ("quotas", "view_rate"),
]
ADMIN_MODELS = ["cluster", "rate", "allocation", "allocationrequest", "allocationrequestevent"]
ADMIN_READ_ONLY = ["hold", "ledgerentry"]


def create_groups(apps, schema_editor):
    # Permissions are normally created after all migrations; make sure ours exist now.
    app_config = apps.get_app_config("quotas")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")

    def perms(pairs):
        return [
            Permission.objects.get(content_type__app_label=app, codename=codename)
            for app, codename in pairs
        ]

    reviewers, _ = Group.objects.get_or_create(name=REVIEWERS)
    reviewers.permissions.add(*perms(REVIEWER_PERMS))
    admins, _ = Group.objects.get_or_create(name=FACILITY_ADMINS)
    admin_pairs = [("quotas", "manage_allocation"), ("quotas", "review_allocationrequest")]
    for model in ADMIN_MODELS:
        admin_pairs += [("quotas", f"{action}_{model}") for action in ("view", "add", "change")]
    admin_pairs += [("quotas", f"view_{model}") for model in ADMIN_READ_ONLY]
    admins.permissions.add(*perms(admin_pairs))


def remove_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=[REVIEWERS, FACILITY_ADMINS]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("quotas", "0002_ledger_cluster_status_reason"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_groups, remove_groups)]
