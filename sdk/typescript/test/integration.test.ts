// Against the real broker and the projector (audit + rollback commander) that the Python
// suite starts: tests/integration/test_typescript_sdk.py runs `npm test` with their
// addresses in the environment.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, test } from "node:test";

import { Kafka, logLevel, Partitioners } from "kafkajs";
import pg from "pg";

import { InvalidEventError } from "../src/errors.js";
import { CommandSubscriber, type CommandDelivery } from "../src/subscriber.js";
import { newEvent, PhaseEventPublisher } from "../src/publisher.js";

function setting(name: string): string {
  const value = process.env[`PHASESTREAM_${name}`];
  if (!value) {
    throw new Error(`PHASESTREAM_${name} is not set: these tests run inside the Python suite ` +
                    "(tests/integration/test_typescript_sdk.py, part of `make test`)");
  }
  return value;
}

const brokers = setting("KAFKA_BOOTSTRAP_SERVERS");
const eventsTopic = setting("PHASE_EVENTS_TOPIC");
const commandsTopic = setting("ROLLBACK_COMMANDS_TOPIC");
const USER = "0b7e4d2c-1a3f-4e5d-8c6b-9a0f1e2d3c4b";
const db = new pg.Pool({ connectionString: setting("DATABASE_URL"), max: 2 });
const publisher = new PhaseEventPublisher(brokers, { topic: eventsTopic });

before(async () => { await publisher.connect(); });
after(async () => { await publisher.disconnect(); await db.end(); });

interface Row { status: string; phase_number: number; duration_ms: number | null;
                error_message: string | null; error_stack: string | null;
                metadata: Record<string, unknown>; event_id: string }

async function eventually<T>(probe: () => Promise<T>, done: (value: T) => boolean,
                             what: string, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (done(value)) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not reached; last ${JSON.stringify(value)}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function rows(workflowId: string): Promise<Row[]> {
  const result = await db.query<Row>(
    "SELECT status, phase_number, duration_ms, error_message, error_stack, metadata, " +
    "id::text AS event_id FROM workflow_phase_logs WHERE workflow_id = $1 ORDER BY timestamp, status",
    [workflowId]);
  return result.rows;
}

test("phase() that succeeds gives a started and a completed row", async () => {
  const workflow = `ts-ok-${randomUUID()}`;
  const result = await publisher.phase(workflow, USER, 2, async (run) => {
    run.metadata["artifact"] = "s3://bucket/x";
    await new Promise((resolve) => setTimeout(resolve, 30));
    return 42;
  }, { metadata: { build: 7 } });
  assert.equal(result, 42);
  const found = await eventually(() => rows(workflow), (r) => r.length === 2, "two rows");
  const [started, completed] = found as [Row, Row];
  assert.deepEqual([started.status, started.phase_number, started.duration_ms],
                   ["started", 2, null]);
  assert.deepEqual(started.metadata, { build: 7 });
  assert.equal(completed.status, "completed");
  // A 30 ms timer can fire a millisecond early on the wall clock the SDK measures with.
  assert.ok(completed.duration_ms !== null && completed.duration_ms >= 25,
            `duration_ms ${completed.duration_ms}`);
  assert.deepEqual(completed.metadata, { build: 7, artifact: "s3://bucket/x" });
  assert.equal(completed.error_message, null);
});

test("phase() that throws gives a failed row with message and stack, and re-throws",
     async () => {
  const workflow = `ts-fail-${randomUUID()}`;
  await assert.rejects(publisher.phase(workflow, USER, 1, async () => {
    throw new Error("disk full");
  }), /disk full/);
  const found = await eventually(() => rows(workflow), (r) => r.length === 2, "two rows");
  const failed = found.find((r) => r.status === "failed");
  assert.ok(failed);
  assert.equal(failed.error_message, "disk full");
  assert.match(failed.error_stack ?? "", /^Error: disk full\n\s+at /);
  assert.ok(failed.duration_ms !== null && failed.duration_ms >= 0);
});

test("a failed phase 3 gives one rollback command, handled once per command id",
     async () => {
  const workflow = `ts-rollback-${randomUUID()}`;
  const seen: CommandDelivery[] = [];
  const subscriber = new CommandSubscriber(brokers, {
    groupId: `ts-engine-${randomUUID()}`, topic: commandsTopic,
    dlqTopic: `${commandsTopic}.ts-dlq`, sessionTimeoutMs: 6_000 });
  await subscriber.run(async (delivery) => {
    if (delivery.command.workflow_id === workflow) seen.push(delivery);
  });
  try {
    await assert.rejects(publisher.phase(workflow, USER, 3, async () => {
      throw new Error("deploy failed");
    }));
    await eventually(async () => seen.length, (n) => n === 1, "the rollback command");
    const command = seen[0]!.command;
    assert.deepEqual([command.kind, command.failed_phase, command.rollback_to_phase,
                      command.reason], ["rollback", 3, 2, "deploy failed"]);
    // The same command again (a redelivery, as after a crash of the commander's relay):
    // the subscriber's store absorbs it.
    const copy = new Kafka({ brokers: brokers.split(","), logLevel: logLevel.WARN })
      .producer({ createPartitioner: Partitioners.DefaultPartitioner });
    await copy.connect();
    await copy.send({ topic: commandsTopic, acks: -1, messages: [
      { key: workflow, value: JSON.stringify(command) }] });
    await copy.disconnect();
    await eventually(async () => subscriber.stats.duplicates, (n) => n === 1, "the duplicate");
    assert.equal(seen.length, 1);
    const rolledBack = await eventually(() => rows(workflow),
                                        (r) => r.some((row) => row.status === "rolled_back"),
                                        "the rolled_back row");
    assert.deepEqual(rolledBack.map((r) => r.status).sort(),
                     ["failed", "rolled_back", "started"]);
  } finally {
    await subscriber.stop();
  }
});

test("an invalid event is refused before sending: it never reaches the topic", async () => {
  const workflow = `ts-invalid-${randomUUID()}`;
  const bad = newEvent(workflow, USER, 9, "started");
  await assert.rejects(publisher.publish(bad), (error: unknown) =>
    error instanceof InvalidEventError && error.field === "phase_number");
  const marker = newEvent(workflow, USER, 1, "started");
  await publisher.publish(marker);
  const found = await eventually(() => rows(workflow), (r) => r.length === 1, "the marker row");
  assert.deepEqual(found.map((r) => r.event_id), [marker.event_id]);
  // Same key, same partition: had the bad event been sent, it would sit before the marker.
  const reader = new Kafka({ brokers: brokers.split(","), logLevel: logLevel.WARN })
    .consumer({ groupId: `ts-reader-${randomUUID()}`, sessionTimeout: 6_000,
                heartbeatInterval: 1_000 });
  const ids: string[] = [];
  await reader.connect();
  await reader.subscribe({ topic: eventsTopic, fromBeginning: true });
  await reader.run({ eachMessage: async ({ message }) => {
    if (message.key?.toString() === workflow) {
      ids.push((JSON.parse(message.value?.toString() ?? "{}") as { event_id: string }).event_id);
    }
  } });
  try {
    await eventually(async () => ids, (i) => i.includes(marker.event_id), "the marker record");
    assert.deepEqual(ids, [marker.event_id]);
  } finally {
    await reader.disconnect();
  }
});
