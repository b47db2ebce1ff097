// Events are refused before anything is sent, with the field named.
import assert from "node:assert/strict";
import { test } from "node:test";

import { InvalidEventError } from "../src/errors.js";
import { newEvent, PhaseEventPublisher } from "../src/publisher.js";
import { checkEvent } from "../src/validate.js";

const USER = "0b7e4d2c-1a3f-4e5d-8c6b-9a0f1e2d3c4b";

test("a new event passes the contract: a fresh UUID, an RFC 3339 time", () => {
  const event = newEvent("wf-1", USER, 3, "started");
  assert.deepEqual(checkEvent(event), event);
  assert.match(event.event_id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.ok(Math.abs(Date.parse(event.timestamp) - Date.now()) < 5_000);
});

const refusals: [string, Record<string, unknown>][] = [
  ["phase_number", { phase_number: 8 }],
  ["workflow_id", { workflow_id: "" }],
  ["user_id", { user_id: "user-42" }],
  ["status", { status: "done" }],
  ["timestamp", { timestamp: "2026-02-30T12:00:00Z" }],
  ["duration_ms", { duration_ms: -1 }],
  ["error_message", { error_message: "a\u0000b" }],
  ["metadata.note", { metadata: { note: "a\u0000b" } }],
  ["priority", { priority: "high" }],
];

for (const [field, change] of refusals) {
  test(`publish() refuses a bad ${field} before connecting or sending`, async () => {
    // Never connected: a refusal that reached the producer would fail differently.
    const publisher = new PhaseEventPublisher("127.0.0.1:1");
    const bad = { ...newEvent("wf-1", USER, 3, "started"), ...change };
    await assert.rejects(publisher.publish(bad as never), (error: unknown) => {
      assert.ok(error instanceof InvalidEventError);
      assert.equal(error.field, field);
      return true;
    });
  });
}
