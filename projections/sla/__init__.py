"""The SLA monitor in Postgres: its state, thresholds and violations."""
