"""Improper-payment risk: rules, per-recipient history, the model and the blended score."""
