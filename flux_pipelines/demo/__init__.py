"""Seeded demo deliveries with planted defects; ``generator.py`` is the public face.

Importing the package registers the dataset plug-ins (``realism.py``), so every entry
point's deliveries carry them whichever demo module it imports first.
"""

from flux_pipelines.demo import spending

__all__ = ["spending"]
