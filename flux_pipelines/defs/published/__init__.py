"""Published: agency catalogs, cross-agency outputs, delivery status, the daily refresh."""
