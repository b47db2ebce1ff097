"""The notification delivery adapters: each user's WebSocket (``hub``, ``/ws``), Slack
(``slack``) and e-mail (``email``), each alert sink's bounded queue and retries (``sink``),
the fan-out of one notification to them (``dispatch``) and their metrics. The composition
root (``phasestream/consumers.py``) wires them to the notifier (``streams/notifier.py``)."""
