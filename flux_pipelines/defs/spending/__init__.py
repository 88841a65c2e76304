"""Spending: risk scores and models, reconciliations, risk jobs and their automation."""
