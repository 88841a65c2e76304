"""Use-case exports: every agency's records and content files that a use case of
``contracts/use_cases.yaml`` may use, from certified days only (``build.py``), checked by
re-deriving eligibility from what was exported (``verify.py``) and described by a datasheet
(``datasheet.py``)."""
