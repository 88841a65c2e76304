"""The authenticated intake service (``flux serve``): agencies upload deliveries over HTTPS.

The agency of an upload comes from the verified token (``access/identity.py``), never from
the request; a file lands in ``landing/<agency>/<dataset>/<day>/`` atomically (streamed to a
name the landing sensor ignores, flushed, renamed), so the sensor never sees half a file.
FastAPI is imported only by ``app.py``, so ``flux --help`` stays fast.
"""
