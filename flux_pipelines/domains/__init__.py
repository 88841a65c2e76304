"""Each domain's own assets, beside the ingest every domain shares.

Every dataset is loaded by the same engine (``assets/ingest_factory.py``: one ingest step
per agency, whatever the domains of its datasets); a domain adds what only it needs: the
spending domain its risk scores and reconciliations (``spending.py``). Collections and
science have no assets of their own yet: a module per domain is added with its first.
"""
