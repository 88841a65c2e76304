"""Cron expressions (agencies' delivery deadlines), read the way Dagster reads them.

Dagster's schedules, freshness policies and automation conditions parse cron with a
vendored copy of croniter; this module uses croniter itself, with Dagster's extra rules, so
a deadline Flux accepts is one Dagster accepts and fires when Dagster would fire it.
"""

from __future__ import annotations

import datetime as dt

from croniter import croniter

# A day-of-month mark newer croniter reads but Dagster's copy does not ("15W": the weekday
# nearest the 15th): rejected, or a deadline would pass here and fail in Dagster.
NEAREST_WEEKDAY = "W"


def is_valid_cron(expression: str) -> bool:
    """Dagster's rule: croniter parses it, five fields (no seconds), and not on Feb 30/31."""
    parts = expression.split()
    if len(parts) == 5 and NEAREST_WEEKDAY in parts[2].upper():
        return False
    if not croniter.is_valid(expression):
        return False
    fields = croniter.expand(expression)[0]
    if len(fields) != 5:
        return False
    days, months = fields[2], fields[3]
    return not (months == [2] and len(days) == 1 and days[0] in (30, 31))


def first_tick_at_or_after(expression: str, start: dt.datetime) -> dt.datetime:
    """The first time ``expression`` fires at or after ``start`` (an aware datetime), in
    start's time zone. Cron fires on whole minutes, so starting the search one second
    earlier makes ``start`` itself count."""
    if start.tzinfo is None:
        raise ValueError("first_tick_at_or_after needs an aware datetime")  # a caller's bug
    tick: dt.datetime = croniter(expression, start - dt.timedelta(seconds=1)).get_next(dt.datetime)
    return tick
