"""The thin shell of phasestream: settings, CLI, the embedded local stack, wiring."""

from importlib.metadata import version

# Written once, in pyproject.toml.
__version__ = version("phasestream")
