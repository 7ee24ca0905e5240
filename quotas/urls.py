"""Web pages (namespace "quotas") and API routes (under /api/v1/) of clusters, allocations,
grant requests and the staff area (/manage/)."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, include, path

from quotas import api, staff_views, views

_pages: list[URLPattern | URLResolver] = [
    path("clusters/", views.cluster_list, name="cluster_list"),
    path("organizations/<uuid:uuid>/trial/", views.trial_start, name="trial_start"),
    path("allocations/", views.allocation_list, name="allocation_list"),
    path("allocations/<str:uuid>/", views.allocation_detail, name="allocation_detail"),
    path("allocations/<str:uuid>/history/", views.allocation_history, name="allocation_history"),
    path("allocation-requests/", views.allocation_request_list, name="allocation_request_list"),
    path(
        "allocation-requests/new/",
        views.allocation_request_create,
        name="allocation_request_create",
    ),
    path(
        "allocation-requests/<str:uuid>/",
        views.allocation_request_detail,
        name="allocation_request_detail",
    ),
    path(
        "allocation-requests/<str:uuid>/edit/",
        views.allocation_request_edit,
        name="allocation_request_edit",
    ),
    path(
        "allocation-requests/<str:uuid>/submit/",
        views.allocation_request_submit,
        name="allocation_request_submit",
    ),
    path(
        "allocation-requests/<str:uuid>/review/",
        views.allocation_request_review,
        name="allocation_request_review",
    ),
    path(
        "allocation-requests/<str:uuid>/document/",
        views.allocation_request_document,
        name="allocation_request_document",
    ),
    path(
        "allocation-requests/<str:uuid>/history/",
        views.allocation_request_history,
        name="allocation_request_history",
    ),
    path("review/", views.allocation_review_queue, name="allocation_review_queue"),
    path("manage/", staff_views.manage_home, name="manage_home"),
    path(
        "manage/organizations/<str:uuid>/",
        staff_views.manage_organization,
        name="manage_organization",
    ),
    path("manage/projects/<str:uuid>/", staff_views.manage_project, name="manage_project"),
    path(
        "manage/projects/<str:uuid>/storage/",
        staff_views.manage_project_storage,
        name="manage_project_storage",
    ),
    path(
        "manage/allocations/<str:uuid>/",
        staff_views.manage_allocation,
        name="manage_allocation",
    ),
    path(
        "manage/allocations/<str:uuid>/adjust/",
        staff_views.manage_allocation_adjust,
        name="manage_allocation_adjust",
    ),
    path(
        "manage/allocations/<str:uuid>/extend/",
        staff_views.manage_allocation_extend,
        name="manage_allocation_extend",
    ),
    path(
        "manage/allocations/<str:uuid>/suspend/",
        staff_views.manage_allocation_suspend,
        name="manage_allocation_suspend",
    ),
    path(
        "manage/allocations/<str:uuid>/resume/",
        staff_views.manage_allocation_resume,
        name="manage_allocation_resume",
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
    path(
        "allocations/<str:uuid>/",
        api.AllocationDetailView.as_view(),
        name="api-allocation-detail",
    ),
    path(
        "allocations/<str:uuid>/ledger/",
        api.AllocationLedgerView.as_view(),
        name="api-allocation-ledger",
    ),
    path(
        "allocation-requests/",
        api.AllocationRequestListView.as_view(),
        name="api-allocation-request-list",
    ),
    path(
        "allocation-requests/<str:uuid>/",
        api.AllocationRequestDetailView.as_view(),
        name="api-allocation-request-detail",
    ),
    path(
        "allocation-requests/<str:uuid>/document/",
        api.AllocationRequestDocumentView.as_view(),
        name="api-allocation-request-document",
    ),
    path(
        "allocation-requests/<str:uuid>/submit/",
        api.AllocationRequestSubmitView.as_view(),
        name="api-allocation-request-submit",
    ),
    path(
        "allocation-requests/<str:uuid>/approve/",
        api.AllocationRequestApproveView.as_view(),
        name="api-allocation-request-approve",
    ),
    path(
        "allocation-requests/<str:uuid>/reject/",
        api.AllocationRequestRejectView.as_view(),
        name="api-allocation-request-reject",
    ),
    path(
        "allocation-requests/<str:uuid>/request-changes/",
        api.AllocationRequestChangesView.as_view(),
        name="api-allocation-request-changes",
    ),
]
