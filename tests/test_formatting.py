"""One way to show SU, rates, runtimes and periods (portal.formatting and its template filters)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.template import Context, Template

from portal.formatting import (
    format_date_range,
    format_duration,
    format_su,
    format_su_rate,
    last_day,
    su_csv,
)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (Decimal("12345.6789"), "12,345.68"),
        (Decimal("100000"), "100,000.00"),
        (Decimal("0.0042"), "0.0042"),
        (Decimal("0.0050"), "0.01"),
        (Decimal("0.0040"), "0.004"),
        (Decimal("-0.0001"), "-0.0001"),
        (Decimal("0"), "0.00"),
        (Decimal("-0.00001"), "0.00"),
        ("2.5000", "2.50"),
        (0.1 + 0.2, "0.30"),
        (None, "—"),
        ("not a number", "—"),
    ],
)
def test_su_amounts_show_two_places_but_never_zero_for_a_non_zero_charge(value, shown):
    assert format_su(value) == shown


def test_rates_keep_their_six_places_but_show_at_least_two():
    assert format_su_rate(Decimal("2.000000")) == "2.00"
    assert format_su_rate("0.100000") == "0.10"
    assert format_su_rate(Decimal("0.000278")) == "0.000278"
    assert format_su_rate(Decimal("3600")) == "3,600.00"


def test_csv_cells_hold_the_ledger_precision_without_float_noise():
    assert su_csv(Decimal("15")) == "15.0000"
    assert su_csv(0.1 + 0.2) == "0.3000"
    assert su_csv(Decimal("1E+3")) == "1000.0000"
    assert su_csv(None) == ""


def test_runtimes_read_in_the_largest_sensible_units():
    assert format_duration(45) == "45 s"
    assert format_duration(12 * 60 + 5) == "12 min 5 s"
    assert format_duration(timedelta(hours=3, minutes=4)) == "3 h 04 min"
    assert format_duration(timedelta(days=2, hours=3)) == "2 d 03 h"
    assert format_duration(None) == "—"


def test_an_exclusive_end_instant_reads_as_the_inclusive_last_day():
    end = datetime(2027, 1, 1, tzinfo=UTC)
    assert last_day(end) == date(2026, 12, 31)
    assert last_day(datetime(2027, 1, 1, 12, 30, tzinfo=UTC)) == date(2027, 1, 1)
    assert format_date_range(datetime(2026, 1, 1, tzinfo=UTC), end) == "2026-01-01 – 2026-12-31"
    # a request's dates are already inclusive days
    assert format_date_range(date(2026, 1, 1), date(2026, 6, 30)) == "2026-01-01 – 2026-06-30"


def test_templates_use_the_same_filters_without_loading_anything():
    template = Template(
        "{{ a|su }} {{ r|su_rate }} {{ code|rate_name }} {{ line|rate_name }} "
        "{% date_range start end %} {{ end|last_day|date:'Y-m-d' }}"
    )
    text = template.render(
        Context(
            {
                "a": Decimal("0.0042"),
                "r": Decimal("7200.000000"),
                "code": "gpu_hour",
                "line": "gpu_hour:a100",
                "start": datetime(2026, 1, 1, tzinfo=UTC),
                "end": datetime(2026, 2, 1, tzinfo=UTC),
            }
        )
    )
    assert text == "0.0042 7,200.00 GPU-hour GPU-hour (a100) 2026-01-01 – 2026-01-31 2026-01-31"


def test_no_template_formats_su_with_floatformat():
    from pathlib import Path

    from django.conf import settings

    offenders = [
        f"{path}:{number}"
        for path in Path(settings.BASE_DIR, "templates").rglob("*.html")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "floatformat" in line and "percent" not in line and '"2u"' not in line
    ]
    assert offenders == []


def test_the_cli_names_rates_with_the_models_own_words():
    from portal.formatting import RESOURCE_WORDS
    from quotas.models import Rate

    assert dict(Rate.Resource.choices) == RESOURCE_WORDS
