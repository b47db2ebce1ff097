// The Kafka client settings every phasestream producer and consumer in TypeScript shares.
import { Kafka, logLevel, type KafkaConfig } from "kafkajs";

export const PHASE_EVENTS_TOPIC = "workflow.phase-events";
export const ROLLBACK_COMMANDS_TOPIC = "workflow.rollback-commands";

/** A kafkajs client; `overrides` carry SSL/SASL settings for a secured cluster. */
export function kafkaClient(brokers: string | string[], clientId: string,
                            overrides: Partial<KafkaConfig> = {}): Kafka {
  const list = typeof brokers === "string" ? brokers.split(",").map((b) => b.trim()) : brokers;
  return new Kafka({ clientId, brokers: list, logLevel: logLevel.WARN, ...overrides });
}
