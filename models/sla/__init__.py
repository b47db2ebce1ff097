"""SLA, the pure side: the violation (the value published to ``workflow.sla-violations``)
and its codec, the policy (``judge_*``: late, overdue with grace) and the state fold over a
partition's open phases. The Postgres side is ``projections/sla/``, the timer
``streams/timers.py``.
"""
