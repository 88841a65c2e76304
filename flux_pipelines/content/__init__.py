"""Content deliveries: the files (images, documents, text, audio, 3D) beside a metadata delivery.

A day folder ``landing/<agency>/<dataset>/<day>/`` may hold a reserved sub-folder
(``names.CONTENT_FOLDER``, ``content/``): a BagIt bag or a plain folder with a Flux content
manifest (``ingest/manifest.py``: path, sha256, media type, record). Flux

- lists it confined to the agency's landing folder (``package.py``: no link followed, no
  manifest path climbing out, every payload file accounted for, checksums verified);
- detects each file's type from its bytes, never from its name, and compares it with the
  declared type (``detect.py``); extracts per-type facts without reading a file whole
  (``facts.py``; PDFs in a bounded child process, ``pdf_probe.py``);
- links files to the day's records, finds orphans and records whose file is missing, and
  stores one row per good file in ``<dataset>_content`` and every problem in the dataset's
  quarantine (``load.py``: ``load_content``, the one entry point).

This package imports nothing heavy at import time: ``pdf_probe`` runs as a child process.
"""
