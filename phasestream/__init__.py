"""The thin shell of phasestream: settings, CLI, the embedded local stack, wiring."""

__version__ = "0.1.0"
