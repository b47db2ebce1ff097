"""Tests that need a durable broker (Apache Kafka): marked durable_broker, see conftest."""
