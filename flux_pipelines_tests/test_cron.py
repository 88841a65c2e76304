"""Delivery-deadline crons: validated and fired as Dagster does, through croniter itself.

The expected values were produced by Dagster 1.13's own ``is_valid_cron_string`` and
``cron_string_iterator`` (its vendored croniter); the last test pins where this module
deliberately differs (Dagster skips a Feb 29 tick when the search starts on Feb 29).
"""

from __future__ import annotations

import datetime as dt

import pydantic
import pytest

from flux_pipelines.contracts.registry import Agency, load_registry
from flux_pipelines.cron import first_tick_at_or_after, is_valid_cron
from flux_pipelines.quality.scorecard import deadline_for

VALID = [
    "0 9 * * *", "0 9 * * 1-5", "0 9 * * MON-FRI", "*/15 * * * *", "30 17 L * *",
    "0 9 * * 5#2", "0 0 29 2 *", "0 9 1,15 * *", "@daily", "@weekly", "@monthly",
    "0 9 31 4 *",  # April 31 never comes, but Dagster's rule accepts it
]  # fmt: skip
INVALID = [
    "", "0 9 * *", "0 9 * * * 0", "60 9 * * *", "0 24 * * *", "0 9 32 * *", "0 9 * 13 *",
    "0 0 30 2 *", "0 0 31 2 *", "0 9 15W * *", "H 9 * * *", "every day at nine", "@reboot",
]  # fmt: skip


@pytest.mark.parametrize("expression", VALID)
def test_dagsters_valid_crons_are_valid(expression: str) -> None:
    assert is_valid_cron(expression)


@pytest.mark.parametrize("expression", INVALID)
def test_dagsters_invalid_crons_are_refused_with_the_registrys_message(expression: str) -> None:
    assert not is_valid_cron(expression)
    nasa = load_registry().agency("nasa").model_dump()
    with pytest.raises(pydantic.ValidationError, match="is not a cron expression"):
        Agency.model_validate({**nasa, "delivery_deadline": expression})


@pytest.mark.parametrize(
    ("cron", "day", "deadline"),
    [
        ("0 9 * * *", dt.date(2026, 3, 2), dt.datetime(2026, 3, 2, 9, 0)),
        ("0 0 * * *", dt.date(2026, 3, 2), dt.datetime(2026, 3, 2, 0, 0)),  # the day's start
        ("0 9 * * 1-5", dt.date(2026, 3, 7), dt.datetime(2026, 3, 9, 9, 0)),  # Sat -> Mon
        ("0 9 * * 1-5", dt.date(2026, 3, 6), dt.datetime(2026, 3, 6, 9, 0)),  # Friday
        ("*/15 * * * *", dt.date(2026, 1, 1), dt.datetime(2026, 1, 1, 0, 0)),
        ("30 17 L * *", dt.date(2026, 2, 3), dt.datetime(2026, 2, 28, 17, 30)),
        ("0 9 * * 5#2", dt.date(2026, 3, 1), dt.datetime(2026, 3, 13, 9, 0)),
        ("0 9 1,15 * *", dt.date(2026, 3, 2), dt.datetime(2026, 3, 15, 9, 0)),
        ("@weekly", dt.date(2026, 3, 2), dt.datetime(2026, 3, 8, 0, 0)),  # Sunday midnight
        ("0 9 29 * sun", dt.date(2026, 3, 2), dt.datetime(2026, 3, 8, 9, 0)),  # day OR weekday
        ("0 0 29 2 *", dt.date(2025, 3, 1), dt.datetime(2028, 2, 29, 0, 0)),  # next leap day
    ],
)
def test_deadline_is_the_first_tick_on_or_after_the_days_start(
    cron: str, day: dt.date, deadline: dt.datetime
) -> None:
    assert deadline_for(cron, day) == deadline


def test_a_leap_day_deadline_falls_on_the_leap_day() -> None:
    """Dagster's iterator answers 2028-02-29 here (it searches Feb 28 from the start and
    shifts, so a start on Feb 29 itself misses that day); the deadline is that very day."""
    assert deadline_for("0 9 29 2 *", dt.date(2024, 2, 29)) == dt.datetime(2024, 2, 29, 9, 0)


def test_first_tick_needs_an_aware_start() -> None:
    assert first_tick_at_or_after("0 9 * * *", dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC)) == (
        dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC)
    )
    with pytest.raises(ValueError, match="aware"):
        first_tick_at_or_after("0 9 * * *", dt.datetime(2026, 3, 2))
