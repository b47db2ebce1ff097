// CommandSubscriber: typed rollback commands for a workflow engine, with the Python
// subscriber's semantics. For each record, in order per partition:
//   1. decode and validate it; an invalid record goes to the dead-letter topic with the reason;
//   2. run the handler once per command id through the de-duplication store; a handler that
//      throws is retried with backoff, and after `maxAttempts` failures the record goes to
//      the dead-letter topic with the last error;
//   3. commit the position after the record (handled or dead-lettered) - at-least-once.
import {
  Partitioners, type Consumer, type IHeaders, type KafkaConfig, type KafkaMessage, type Producer,
} from "kafkajs";

import { MemoryHandledIds, type HandledIds } from "./dedup.js";
import { InvalidEventError } from "./errors.js";
import type { RollbackCommand } from "./generated/contract.js";
import { kafkaClient, ROLLBACK_COMMANDS_TOPIC } from "./kafka.js";
import { decodeCommand } from "./validate.js";

export interface CommandSubscriberOptions {
  groupId: string;
  dlqTopic: string;
  topic?: string;
  /** Default: in memory (de-duplicates within this process). */
  handled?: HandledIds;
  maxAttempts?: number;
  backoff?: { initialMs: number; maxMs: number };
  sessionTimeoutMs?: number;
  kafka?: Partial<KafkaConfig>;
}

export interface CommandDelivery {
  command: RollbackCommand;
  partition: number;
  offset: string;
  /** 1 on the first run for this record, 2 on the first retry, ... */
  attempt: number;
}

export type CommandHandler = (delivery: CommandDelivery) => Promise<void>;

export interface SubscriberStats { handled: number; duplicates: number; deadLettered: number;
                                   retries: number }

const HEADER = "phasestream.";

export class CommandSubscriber {
  readonly topic: string;
  readonly stats: SubscriberStats = { handled: 0, duplicates: 0, deadLettered: 0, retries: 0 };
  private readonly consumer: Consumer;
  private readonly letters: Producer;
  private readonly handled: HandledIds;
  private readonly maxAttempts: number;
  private readonly backoff: { initialMs: number; maxMs: number };
  private stopping = false;

  constructor(brokers: string | string[], private readonly options: CommandSubscriberOptions) {
    this.topic = options.topic ?? ROLLBACK_COMMANDS_TOPIC;
    this.handled = options.handled ?? new MemoryHandledIds();
    this.maxAttempts = options.maxAttempts ?? 5;
    this.backoff = options.backoff ?? { initialMs: 500, maxMs: 30_000 };
    const kafka = kafkaClient(brokers, options.groupId, options.kafka);
    const session = options.sessionTimeoutMs ?? 10_000;
    this.consumer = kafka.consumer({ groupId: options.groupId, sessionTimeout: session,
                                     heartbeatInterval: Math.max(100, Math.floor(session / 4)),
                                     rebalanceTimeout: Math.max(session, 10_000),
                                     allowAutoTopicCreation: false });
    this.letters = kafka.producer({ idempotent: false, allowAutoTopicCreation: false,
                                    createPartitioner: Partitioners.DefaultPartitioner });
  }

  /** Join the group and hand each command to `handler`; resolves once consuming. */
  async run(handler: CommandHandler): Promise<void> {
    await this.letters.connect();
    await this.consumer.connect();
    await this.consumer.subscribe({ topic: this.topic, fromBeginning: true });
    await this.consumer.run({
      autoCommit: false,
      eachMessage: async ({ partition, message }) => {
        await this.record(partition, message, handler);
        await this.consumer.commitOffsets([{ topic: this.topic, partition,
                                             offset: (BigInt(message.offset) + 1n).toString() }]);
      },
    });
  }

  /** Leave the group; the record in hand, if any, is not committed. Safe to call twice. */
  async stop(): Promise<void> {
    this.stopping = true;
    await this.consumer.disconnect();
    await this.letters.disconnect();
  }

  private async record(partition: number, message: KafkaMessage,
                       handler: CommandHandler): Promise<void> {
    let command: RollbackCommand;
    try {
      command = decodeCommand(message.key, message.value);
    } catch (error) {
      if (!(error instanceof InvalidEventError)) throw error;
      await this.dead(partition, message, error.field, error.reason);
      return;
    }
    for (let attempt = 1; ; attempt += 1) {
      try {
        const ran = await this.handled.once(this.options.groupId, command.command_id,
          () => handler({ command, partition, offset: message.offset, attempt }));
        if (ran) this.stats.handled += 1; else this.stats.duplicates += 1;
        return;
      } catch (error) {
        if (this.stopping) throw error;  // leave it uncommitted for the next member
        if (attempt >= this.maxAttempts) {
          const why = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
          await this.dead(partition, message, "handler",
                          `failed ${attempt} times; last error: ${why}`);
          return;
        }
        this.stats.retries += 1;
        await sleep(this.delay(attempt));
      }
    }
  }

  private delay(attempt: number): number {
    // Equal jitter, as the Python SDK: between half and all of an exponential cap.
    const cap = Math.min(this.backoff.maxMs, this.backoff.initialMs * 2 ** (attempt - 1));
    return cap / 2 + Math.random() * cap / 2;
  }

  private async dead(partition: number, message: KafkaMessage, field: string,
                     reason: string): Promise<void> {
    const ours: Record<string, string> = {
      reason: `${field}: ${reason}`, field, "source.topic": this.topic,
      "source.partition": String(partition), "source.offset": message.offset,
      "source.timestamp": message.timestamp, consumer: this.options.groupId };
    const headers: IHeaders = {};
    for (const [name, value] of Object.entries(message.headers ?? {})) {
      if (!name.startsWith(HEADER) && value !== undefined) headers[name] = value;
    }
    for (const [name, value] of Object.entries(ours)) headers[HEADER + name] = value;
    await this.letters.send({ topic: this.options.dlqTopic, acks: -1,
                              messages: [{ key: message.key, value: message.value, headers }] });
    this.stats.deadLettered += 1;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
