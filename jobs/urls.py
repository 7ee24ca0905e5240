from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from jobs import access_api, access_views, api, session_api, session_views, staff_views, views
from jobs.storage import api as storage_api
from jobs.storage import views as storage_views
from portal.routing import under

urlpatterns: list[URLPattern | URLResolver] = [
    under(
        "projects/<uuid:uuid>/files/",
        path("", storage_views.project_files, name="project-files"),
        path(
            "copy-results/<uuid:job_uuid>/",
            storage_views.project_files_copy_results,
            name="project-files-copy-results",
        ),
    ),
    path("access/", access_views.access_list, name="access-list"),
    path("manage/access/", access_views.access_manage, name="access-manage"),
    under(
        "manage/access/<uuid:request_uuid>/",
        path("approve/", access_views.access_approve, name="access-approve"),
        path("reject/", access_views.access_reject, name="access-reject"),
    ),
    path(
        "projects/<uuid:uuid>/session-idle-limit/",
        session_views.project_idle_limit,
        name="project-session-idle-limit",
    ),
    path("interactive/", session_views.session_list, name="session-list"),
    path("sessions-auth/", session_views.session_auth, name="session-auth"),
    under(
        "sessions/<uuid:job_uuid>/",
        path("", session_views.session_page, name="session-page"),
        path("<path:path>", session_views.session_page),
    ),
    path("jobs/", views.job_list, name="job-list"),
    path("jobs/new/", views.job_submit_view, name="job-submit"),
    path("jobs/estimate/", views.job_estimate_partial, name="job-estimate"),
    under(
        "jobs/<uuid:job_uuid>/",
        path("", views.job_detail, name="job-detail"),
        path("cancel/", views.job_cancel_view, name="job-cancel"),
        path("log/", views.job_log_partial, name="job-log"),
        path("status/", views.job_status_partial, name="job-status"),
        path("session-clock/", session_views.session_clock_partial, name="session-clock"),
        path("results/", views.job_results_partial, name="job-results"),
        path("results/<path:path>", views.job_result_download, name="job-result-download"),
    ),
    path("manage/users/<str:username>/", staff_views.manage_user, name="manage-user"),
    path("manage/jobs/", staff_views.manage_job_list, name="manage-job-list"),
    under(
        "manage/jobs/<uuid:job_uuid>/",
        path("", staff_views.manage_job_detail, name="manage-job-detail"),
        path("cancel/", staff_views.manage_job_cancel, name="manage-job-cancel"),
    ),
    path(
        "manage/accounts/",
        staff_views.manage_scheduler_accounts,
        name="manage-scheduler-accounts",
    ),
    path(
        "manage/accounts/cap/<int:account_id>/",
        staff_views.manage_scheduler_account_cap,
        name="manage-scheduler-account-cap",
    ),
    path(
        "manage/accounts/<uuid:uuid>/repair/",
        staff_views.manage_scheduler_accounts_repair,
        name="manage-scheduler-accounts-repair",
    ),
]

api_urlpatterns: list[URLPattern | URLResolver] = [
    under(
        "projects/<str:uuid>/files/",
        path("", storage_api.FileListView.as_view(), name="api-files"),
        path("download/", storage_api.FileDownloadView.as_view(), name="api-files-download"),
        path("upload/", storage_api.FileUploadView.as_view(), name="api-files-upload"),
        path("mkdir/", storage_api.FileMkdirView.as_view(), name="api-files-mkdir"),
        path("rename/", storage_api.FileRenameView.as_view(), name="api-files-rename"),
        path("delete/", storage_api.FileDeleteView.as_view(), name="api-files-delete"),
        path(
            "copy-results/",
            storage_api.FileCopyResultsView.as_view(),
            name="api-files-copy-results",
        ),
    ),
    path("jobs/", api.JobListView.as_view(), name="api-job-list"),
    path("jobs/estimate/", api.JobEstimateView.as_view(), name="api-job-estimate"),
    path("jobs/batch/", api.JobBatchView.as_view(), name="api-job-batch"),
    under(
        "jobs/<uuid:job_uuid>/",
        path("", api.JobDetailView.as_view(), name="api-job-detail"),
        path("cancel/", api.JobCancelView.as_view(), name="api-job-cancel"),
        path("log/", api.JobLogView.as_view(), name="api-job-log"),
        path("results/", api.JobResultsView.as_view(), name="api-job-results"),
        path(
            "results/<path:path>",
            api.JobResultDownloadView.as_view(),
            name="api-job-result-download",
        ),
    ),
    path(
        "projects/<str:uuid>/session-settings/",
        session_api.ProjectSessionSettingsView.as_view(),
        name="api-project-session-settings",
    ),
    path("sessions/", session_api.SessionListView.as_view(), name="api-session-list"),
    path("sessions/apps/", session_api.SessionAppListView.as_view(), name="api-session-apps"),
    under(
        "sessions/<uuid:job_uuid>/",
        path("", session_api.SessionDetailView.as_view(), name="api-session"),
        path("share/", session_api.SessionShareView.as_view(), name="api-session-share"),
    ),
    path("job-templates/", api.JobTemplateListView.as_view(), name="api-job-templates"),
    path(
        "cluster-access-requests/",
        access_api.AccessRequestListView.as_view(),
        name="api-access-requests",
    ),
    under(
        "cluster-access-requests/<uuid:request_uuid>/",
        path("", access_api.AccessRequestDetailView.as_view(), name="api-access-request"),
        path(
            "approve/",
            access_api.AccessRequestApproveView.as_view(),
            name="api-access-request-approve",
        ),
        path(
            "reject/",
            access_api.AccessRequestRejectView.as_view(),
            name="api-access-request-reject",
        ),
    ),
]
