"""URL conf helper: routes that share a prefix (an object's `<kind>/<id>/`) write it once."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, include, path


def under(prefix: str, *patterns: URLPattern | URLResolver) -> URLResolver:
    """`patterns` with `prefix` in front of each route; names, namespaces and the order Django
    tries them in stay as if each route were written out in full."""
    return path(prefix, include(list(patterns)))
