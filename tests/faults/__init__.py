"""Fault-injection suite: bad input, zombies."""
