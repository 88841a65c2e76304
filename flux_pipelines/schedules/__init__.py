"""Schedules: what runs on the clock (the daily refresh of published outputs)."""
