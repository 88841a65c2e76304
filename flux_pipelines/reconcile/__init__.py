"""Reconciliation between sources: agency totals and record-level links."""
