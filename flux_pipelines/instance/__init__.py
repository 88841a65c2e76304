"""The Dagster instance Flux runs on: storage choice, DAGSTER_HOME, the run launcher."""
