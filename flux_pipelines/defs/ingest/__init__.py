"""Ingest: the per-agency ingest assets and step, their jobs and the landing sensors."""
