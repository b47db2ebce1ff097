"""The notifier (`phasestream run notify`): rollback commands and SLA violations to each
user's WebSocket (``/ws``), and as alerts to Slack and e-mail."""
