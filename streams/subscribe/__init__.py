"""The subscriber SDK for downstream consumers: typed values, at-least-once, de-duplicated."""

from streams.subscribe.contracts import COMMANDS, PHASE_EVENTS, VIOLATIONS, Contract
from streams.subscribe.memory import MemoryHandledIds, NoDedup
from streams.subscribe.subscriber import Delivery, Subscriber

__all__ = [
    "COMMANDS",
    "PHASE_EVENTS",
    "VIOLATIONS",
    "Contract",
    "Delivery",
    "MemoryHandledIds",
    "NoDedup",
    "Subscriber",
]
