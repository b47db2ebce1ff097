"""Numbered plain SQL migrations, applied in order by ``phasestream migrate``."""
