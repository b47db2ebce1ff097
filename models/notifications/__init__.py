"""Notifications, the pure side: what a user or an operator is told about a rollback command
or an SLA violation (``value``, ``wording``), and the decisions around telling them:
redelivery and one alert per incident (``dedup``), the alert rate (``rate_limit``), and
the order they are applied in before an alert is queued (``suppression``).

Every decision takes the time as an argument (``now``, seconds of a monotonic clock), so it
is a plain function of its inputs and is tested without a clock or a server. Delivery (the
queue per sink, Slack, e-mail, the WebSocket hub) is the shell's.
"""
