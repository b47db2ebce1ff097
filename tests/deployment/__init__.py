"""Checks of what ships beside the code, no servers needed: docker-compose.yml, deploy/
(Prometheus, its alerts, Alertmanager, Grafana), the declared dependencies, the README and
the docs' links and settings table."""
