// The contract's validators: the shipped JSON Schemas (compiled by Ajv) plus the rules a
// JSON Schema cannot state, as phasestream's Python validator enforces them (the schema's
// description lists them). Every rejection is an InvalidEventError naming the field, the
// same field the Python validator names (tests/corpus/phase-events.json holds them to it).
import { Ajv2020, type ErrorObject, type ValidateFunction } from "ajv/dist/2020.js";

import { InvalidEventError } from "./errors.js";
import {
  phaseEventSchema, rollbackCommandSchema, type PhaseEvent, type RollbackCommand,
} from "./generated/contract.js";

export const DEFAULT_MAX_EVENT_BYTES = 1_048_576;
export const MAX_METADATA_DEPTH = 32;
const NUL_REASON = "must not contain NUL characters (PostgreSQL cannot store them)";
const EVENT_FIELDS = Object.keys(phaseEventSchema.properties);
const EVENT_REQUIRED: readonly string[] = phaseEventSchema.required;
const COMMAND_FIELDS = Object.keys(rollbackCommandSchema.properties);

const ajv = new Ajv2020({ allErrors: true, strict: false });
const eventSchema = ajv.compile<PhaseEvent>(phaseEventSchema);
const commandSchema = ajv.compile<RollbackCommand>(rollbackCommandSchema);

/** A phase event as a value (what a producer is about to send), or InvalidEventError. */
export function checkEvent(value: unknown): PhaseEvent {
  const event = checkShape(value, eventSchema, EVENT_REQUIRED, EVENT_FIELDS);
  for (const name of ["workflow_id", "error_message", "error_stack"] as const) {
    if (event[name]?.includes("\u0000")) throw new InvalidEventError(name, NUL_REASON);
  }
  checkCalendar("timestamp", event.timestamp);
  if (event.metadata !== undefined && event.metadata !== null) {
    const problem = findProblem(event.metadata, 1);
    if (problem !== null) throw new InvalidEventError(`metadata${problem.path}`, problem.reason);
  }
  return event;
}

/** A rollback command as a value, or InvalidEventError. */
export function checkCommand(value: unknown): RollbackCommand {
  const command = checkShape(value, commandSchema, rollbackCommandSchema.required,
                             COMMAND_FIELDS);
  for (const name of ["workflow_id", "reason"] as const) {
    if (command[name]?.includes("\u0000")) throw new InvalidEventError(name, NUL_REASON);
  }
  checkCalendar("issued_at", command.issued_at);
  return command;
}

/** A phase event from a record's value (UTF-8 JSON), as a consumer decodes it. */
export function decodeEvent(value: Uint8Array | null,
                            maxBytes: number = DEFAULT_MAX_EVENT_BYTES): PhaseEvent {
  if (value === null) {
    throw new InvalidEventError("$", "is a tombstone (null value); phase events are never deleted");
  }
  if (value.length > maxBytes) {
    throw new InvalidEventError("$", `is ${value.length} bytes, over the limit of ${maxBytes}`);
  }
  return checkEvent(parseJson(value));
}

/** A phase event from a Kafka record: its key must be the workflow id. */
export function decodeRecord(key: Uint8Array | null, value: Uint8Array | null,
                             maxBytes: number = DEFAULT_MAX_EVENT_BYTES): PhaseEvent {
  const event = decodeEvent(value, maxBytes);
  checkKey(key, event.workflow_id);
  return event;
}

/** A rollback command from a Kafka record. */
export function decodeCommand(key: Uint8Array | null, value: Uint8Array | null): RollbackCommand {
  if (value === null) throw new InvalidEventError("$", "is a tombstone (null value)");
  const command = checkCommand(parseJson(value));
  checkKey(key, command.workflow_id);
  return command;
}

function parseJson(value: Uint8Array): unknown {
  if (value.length === 0) throw new InvalidEventError("$", "is empty");
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(value);
  } catch {
    throw new InvalidEventError("$", "is not valid UTF-8");
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw new InvalidEventError("$", `is not valid JSON: ${(error as Error).message}`);
  }
}

function checkKey(key: Uint8Array | null, workflowId: string): void {
  if (key !== null && Buffer.compare(Buffer.from(key), Buffer.from(workflowId, "utf8")) !== 0) {
    throw new InvalidEventError(
      "workflow_id", "does not match the record key (the key must be the workflow id)");
  }
}

/** Schema errors reported in the Python validator's order: required fields, unknown fields,
 * schema_version, then the fields in contract order. */
function checkShape<T>(value: unknown, validate: ValidateFunction<T>, required: readonly string[],
                       fields: readonly string[]): T {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new InvalidEventError("$", `must be a JSON object, got ${jsonType(value)}`);
  }
  if (validate(value)) return value;
  const blamed = new Map<string, string>();
  for (const error of validate.errors ?? []) {
    const [field, reason] = blame(error);
    if (!blamed.has(field)) blamed.set(field, reason);
  }
  const unknown = [...blamed.keys()].filter((f) => !fields.includes(f)).sort();
  const order = [...required.filter((f) => blamed.get(f) === "is required"), ...unknown,
                 "schema_version", ...fields];
  const first = order.find((f) => blamed.has(f)) ?? [...blamed.keys()][0] ?? "$";
  throw new InvalidEventError(first, blamed.get(first) ?? "is invalid");
}

function blame(error: ErrorObject): [string, string] {
  const params = error.params as Record<string, unknown>;
  if (error.keyword === "required") return [String(params["missingProperty"]), "is required"];
  if (error.keyword === "additionalProperties") {
    return [String(params["additionalProperty"]), "is not a field of the contract"];
  }
  const field = error.instancePath.split("/")[1] ?? "$";
  return [field === "" ? "$" : field, error.message ?? "is invalid"];
}

function checkCalendar(field: string, text: string): void {
  // The pattern bounds each part; whether the day exists in that month it cannot say.
  const [year, month, day] = text.slice(0, 10).split("-").map(Number) as [number, number, number];
  const days = new Date(Date.UTC(year, month, 0)).getUTCDate();
  if (day > days) throw new InvalidEventError(field, `is not a real date: ${text.slice(0, 10)}`);
}

interface Problem { path: string; reason: string }

function findProblem(value: unknown, depth: number): Problem | null {
  if (depth > MAX_METADATA_DEPTH) {
    return { path: "", reason: `nests deeper than ${MAX_METADATA_DEPTH} levels` };
  }
  if (typeof value === "string") {
    return value.includes("\u0000") ? { path: "", reason: NUL_REASON } : null;
  }
  const entries: [string, unknown][] = Array.isArray(value)
    ? value.map((item, index) => [`[${index}]`, item])
    : typeof value === "object" && value !== null
      ? Object.entries(value).map(([key, item]) => [`.${key}`, item]) : [];
  for (const [step, item] of entries) {
    if (!Array.isArray(value) && step.includes("\u0000")) {
      return { path: "", reason: "has a key with a NUL character" };
    }
    const problem = findProblem(item, depth + 1);
    if (problem !== null) return { path: step + problem.path, reason: problem.reason };
  }
  return null;
}

function jsonType(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  return typeof value === "number" && Number.isInteger(value) ? "integer" : typeof value;
}
