// PhaseEventPublisher: phase events to Kafka, keyed by workflow id, acks=all, validated
// against the shipped contract before anything is sent. The same flow as the Python SDK.
import { randomUUID } from "node:crypto";

import { Partitioners, type KafkaConfig, type Producer } from "kafkajs";

import type { PhaseEvent } from "./generated/contract.js";
import { kafkaClient, PHASE_EVENTS_TOPIC } from "./kafka.js";
import { DEFAULT_MAX_EVENT_BYTES, decodeRecord } from "./validate.js";

export interface PublisherOptions {
  topic?: string;
  clientId?: string;
  maxEventBytes?: number;
  /** Extra kafkajs client settings (ssl, sasl, ...). */
  kafka?: Partial<KafkaConfig>;
}

/** Where an event landed in the log. */
export interface Published { partition: number; offset: string }

/** What `phase()` hands its function: the started event, and metadata for the outcome. */
export interface PhaseRun { started: PhaseEvent; metadata: Record<string, unknown> }

export interface PhaseOptions {
  metadata?: Record<string, unknown>;
  previousPhase?: number | null;
}

export type PhaseStatus = PhaseEvent["status"];

/** A new event with a fresh id and the current time as its event time. */
export function newEvent(workflowId: string, userId: string, phaseNumber: number,
                         status: PhaseStatus, fields: Partial<PhaseEvent> = {}): PhaseEvent {
  return { schema_version: 1, event_id: randomUUID(), workflow_id: workflowId, user_id: userId,
           phase_number: phaseNumber, status, timestamp: new Date().toISOString(), ...fields };
}

export class PhaseEventPublisher {
  readonly topic: string;
  private readonly producer: Producer;
  private readonly maxBytes: number;

  constructor(brokers: string | string[], options: PublisherOptions = {}) {
    this.topic = options.topic ?? PHASE_EVENTS_TOPIC;
    this.maxBytes = options.maxEventBytes ?? DEFAULT_MAX_EVENT_BYTES;
    const kafka = kafkaClient(brokers, options.clientId ?? "phasestream-publisher", options.kafka);
    // No idempotent producer: the embedded broker has no InitProducerId. The default
    // partitioner is Java's murmur2, as aiokafka's: one workflow, one partition, any SDK.
    this.producer = kafka.producer({ idempotent: false, allowAutoTopicCreation: false,
                                     createPartitioner: Partitioners.DefaultPartitioner });
  }

  async connect(): Promise<void> { await this.producer.connect(); }

  /** Flushes what is pending; safe to call twice. */
  async disconnect(): Promise<void> { await this.producer.disconnect(); }

  /** Validate, send and wait for the broker's acknowledgement (acks=all). A bad event is
   * an InvalidEventError naming the field, and nothing is sent. */
  async publish(event: PhaseEvent): Promise<Published> {
    const key = Buffer.from(event.workflow_id ?? "", "utf8");
    const value = Buffer.from(JSON.stringify(event), "utf8");
    decodeRecord(key, value, this.maxBytes);  // what a consumer would refuse is never sent
    const [meta] = await this.producer.send({ topic: this.topic, acks: -1,
                                              messages: [{ key, value }] });
    return { partition: meta?.partition ?? -1, offset: meta?.baseOffset ?? "-1" };
  }

  /** Publish `started`, run `fn`, then `completed` with `duration_ms`; if `fn` throws,
   * `failed` with `error_message` and `error_stack`, and re-throw. */
  async phase<T>(workflowId: string, userId: string, phaseNumber: number,
                 fn: (run: PhaseRun) => Promise<T>, options: PhaseOptions = {}): Promise<T> {
    const started = newEvent(workflowId, userId, phaseNumber, "started", {
      metadata: { ...options.metadata }, previous_phase: options.previousPhase ?? null });
    await this.publish(started);
    const run: PhaseRun = { started, metadata: { ...options.metadata } };
    const began = performance.now();
    let result: T;
    try {
      result = await fn(run);
    } catch (error) {
      await this.finish(run, began, "failed", error);
      throw error;
    }
    await this.finish(run, began, "completed", undefined);
    return result;
  }

  private async finish(run: PhaseRun, began: number, status: PhaseStatus,
                       error: unknown): Promise<void> {
    const failure = status === "failed"
      ? { error_message: noNul(message(error)), error_stack: noNul(stack(error)) }
      : { error_message: null, error_stack: null };
    await this.publish({ ...run.started, event_id: randomUUID(), status,
                         timestamp: new Date().toISOString(),
                         duration_ms: Math.round(performance.now() - began),
                         metadata: run.metadata, ...failure });
  }
}

function message(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}

function stack(error: unknown): string {
  return error instanceof Error && error.stack ? error.stack : message(error);
}

// The contract refuses NUL characters (Postgres text cannot hold them); escape them.
function noNul(text: string): string { return text.replaceAll("\u0000", "\\x00"); }
