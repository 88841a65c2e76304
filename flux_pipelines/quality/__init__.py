"""Data-quality management: anomaly monitors, the scorecard, the certification gate."""
