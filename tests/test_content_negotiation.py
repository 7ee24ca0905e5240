"""portal.api.ContentNegotiation picks the renderer and media type DRF's own negotiation picks,
for every Accept header, format override and renderer order, answering the scripts' common
headers without parsing them."""

from __future__ import annotations

from typing import Any

import pytest
from django.http import Http404
from rest_framework import exceptions
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.test import APIRequestFactory

from portal.api import ContentNegotiation

ACCEPTS = [
    None, "*/*", "application/json", "text/html", "application/json; indent=4", "*/*;q=0.8",
    "application/*", "text/html,application/json", "application/xml", "", "APPLICATION/JSON",
]  # fmt: skip
ORDERS = [
    [JSONRenderer(), BrowsableAPIRenderer()],
    [BrowsableAPIRenderer(), JSONRenderer()],
    [JSONRenderer()],
]


def _choice(negotiator: Any, accept: str | None, query: str, renderers: list[Any]) -> Any:
    headers = {} if accept is None else {"HTTP_ACCEPT": accept}
    request = Request(APIRequestFactory().get(f"/api/v1/me/{query}", **headers))
    try:
        renderer, media_type = negotiator.select_renderer(request, renderers)
    except (exceptions.NotAcceptable, Http404) as exc:
        return type(exc).__name__
    return type(renderer).__name__, media_type


@pytest.mark.parametrize("accept", ACCEPTS)
@pytest.mark.parametrize("query", ["", "?format=json", "?format=api", "?format=xml", "?x=1"])
@pytest.mark.parametrize("order", range(len(ORDERS)))
def test_the_choice_is_drfs(accept, query, order):
    renderers = ORDERS[order]

    ours = _choice(ContentNegotiation(), accept, query, renderers)

    assert ours == _choice(DefaultContentNegotiation(), accept, query, renderers)


def test_the_api_answers_json_to_a_script_and_the_browsable_page_to_a_browser(client, alice):
    assert api_settings.DEFAULT_CONTENT_NEGOTIATION_CLASS is ContentNegotiation  # the one in use
    client.force_login(alice)

    script = client.get("/api/v1/me/")
    browser = client.get("/api/v1/me/", HTTP_ACCEPT="text/html,application/xhtml+xml,*/*;q=0.8")

    assert script["Content-Type"] == "application/json"
    assert browser["Content-Type"].startswith("text/html")
