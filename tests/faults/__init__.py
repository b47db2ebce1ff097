"""Fault-injection suite: bad input, zombies, kill storms and Postgres connection cuts, each
judged by a checker that compares what was published with every sink (tests/faults/checker.py)."""
