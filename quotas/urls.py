"""Web pages (namespace "quotas") and API routes (under /api/v1/) of clusters, allocations,
grant requests and the staff area (/manage/)."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, include, path

from portal.routing import under
from quotas import api, staff_views, views

_pages: list[URLPattern | URLResolver] = [
    path("clusters/", views.cluster_list, name="cluster_list"),
    path("organizations/<uuid:uuid>/trial/", views.trial_start, name="trial_start"),
    path("allocations/", views.allocation_list, name="allocation_list"),
    under(
        "allocations/<str:uuid>/",
        path("", views.allocation_detail, name="allocation_detail"),
        path("history/", views.allocation_history, name="allocation_history"),
    ),
    path("allocation-requests/", views.allocation_request_list, name="allocation_request_list"),
    path(
        "allocation-requests/new/",
        views.allocation_request_create,
        name="allocation_request_create",
    ),
    under(
        "allocation-requests/<str:uuid>/",
        path("", views.allocation_request_detail, name="allocation_request_detail"),
        path("edit/", views.allocation_request_edit, name="allocation_request_edit"),
        path("submit/", views.allocation_request_submit, name="allocation_request_submit"),
        path("review/", views.allocation_request_review, name="allocation_request_review"),
        path("document/", views.allocation_request_document, name="allocation_request_document"),
        path("history/", views.allocation_request_history, name="allocation_request_history"),
    ),
    path("review/", views.allocation_review_queue, name="allocation_review_queue"),
    path("manage/", staff_views.manage_home, name="manage_home"),
    path(
        "manage/organizations/<str:uuid>/",
        staff_views.manage_organization,
        name="manage_organization",
    ),
    under(
        "manage/projects/<str:uuid>/",
        path("", staff_views.manage_project, name="manage_project"),
        path("storage/", staff_views.manage_project_storage, name="manage_project_storage"),
    ),
    under(
        "manage/allocations/<str:uuid>/",
        path("", staff_views.manage_allocation, name="manage_allocation"),
        path("adjust/", staff_views.manage_allocation_adjust, name="manage_allocation_adjust"),
        path("extend/", staff_views.manage_allocation_extend, name="manage_allocation_extend"),
        path("suspend/", staff_views.manage_allocation_suspend, name="manage_allocation_suspend"),
        path("resume/", staff_views.manage_allocation_resume, name="manage_allocation_resume"),
    ),
    path("manage/clusters/", staff_views.manage_clusters, name="manage_clusters"),
    path(
        "manage/clusters/<str:uuid>/history/",
        staff_views.manage_cluster_history,
        name="manage_cluster_history",
    ),
    path("manage/usage/", staff_views.manage_usage, name="manage_usage"),
]

urlpatterns: list[URLPattern | URLResolver] = [path("", include((_pages, "quotas")))]

api_urlpatterns: list[URLPattern | URLResolver] = [
    path("clusters/", api.ClusterListView.as_view(), name="api-cluster-list"),
    path(
        "organizations/<str:uuid>/trial/",
        api.TrialStartView.as_view(),
        name="api-organization-trial",
    ),
    path("allocations/", api.AllocationListView.as_view(), name="api-allocation-list"),
    under(
        "allocations/<str:uuid>/",
        path("", api.AllocationDetailView.as_view(), name="api-allocation-detail"),
        path("ledger/", api.AllocationLedgerView.as_view(), name="api-allocation-ledger"),
    ),
    path(
        "allocation-requests/",
        api.AllocationRequestListView.as_view(),
        name="api-allocation-request-list",
    ),
    under(
        "allocation-requests/<str:uuid>/",
        path("", api.AllocationRequestDetailView.as_view(), name="api-allocation-request-detail"),
        path(
            "document/",
            api.AllocationRequestDocumentView.as_view(),
            name="api-allocation-request-document",
        ),
        path(
            "submit/",
            api.AllocationRequestSubmitView.as_view(),
            name="api-allocation-request-submit",
        ),
        path(
            "approve/",
            api.AllocationRequestApproveView.as_view(),
            name="api-allocation-request-approve",
        ),
        path(
            "reject/",
            api.AllocationRequestRejectView.as_view(),
            name="api-allocation-request-reject",
        ),
        path(
            "request-changes/",
            api.AllocationRequestChangesView.as_view(),
            name="api-allocation-request-changes",
        ),
    ),
]
