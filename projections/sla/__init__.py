"""The SLA's Postgres side."""
