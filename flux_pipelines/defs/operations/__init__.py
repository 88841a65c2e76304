"""Operations: the alert sensors and the scheduled purge."""
