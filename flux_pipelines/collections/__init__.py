"""Collections: rights statements, use cases and who may use which record or file for what.

- ``rights``: a rights statement (free text, a rightsstatements.org or Creative Commons URI)
  normalised into Flux's small rights vocabulary, the original text kept beside it;
- ``use_cases``: ``contracts/use_cases.yaml`` and the per-record and per-file decision;
- ``eligibility``: the ``<dataset>_eligibility`` table of an agency file, one row per curated
  record and use case, written per delivery day.
"""
