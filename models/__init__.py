"""The pure domain of phasestream: events, phases, statuses and the decisions over them.

Nothing here performs I/O; adapters in ``streams/`` and ``projections/`` do that.
"""
