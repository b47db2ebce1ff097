"""The Kafka side: topics, the publisher SDK, the consumers and stream processors."""

from streams.publisher import PhaseEventPublisher

__all__ = ["PhaseEventPublisher"]
