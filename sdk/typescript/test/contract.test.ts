// One contract, three languages: the shared corpus (tests/corpus/phase-events.json, the
// Python tests' cases) through the TypeScript validator, which must name the same field
// as the Python decoder on every case it can see.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { InvalidEventError } from "../src/errors.js";
import { decodeEvent } from "../src/validate.js";

interface Case {
  name: string;
  payload_base64: string | null;
  field: string | null;
  validator_only: string | null;
  number_as_written: boolean;
  max_bytes: number;
}

const corpus = new URL("../../../../tests/corpus/phase-events.json", import.meta.url);
const cases = (JSON.parse(readFileSync(corpus, "utf8")) as { cases: Case[] }).cases;

function verdict(item: Case): string | null {
  const payload = item.payload_base64 === null ? null : Buffer.from(item.payload_base64, "base64");
  try {
    decodeEvent(payload, item.max_bytes);
    return null;
  } catch (error) {
    if (error instanceof InvalidEventError) return error.field;
    throw error;
  }
}

test("the corpus is the Python one, with good and bad cases", () => {
  assert.ok(cases.length > 100);
  assert.ok(cases.some((c) => c.field === null) && cases.some((c) => c.field !== null));
});

test("the TypeScript validator names the Python decoder's field on every case", () => {
  const seen = cases.filter((c) => !c.number_as_written);
  const disagreements = seen
    .map((c) => ({ name: c.name, python: c.field, typescript: verdict(c) }))
    .filter((d) => d.python !== d.typescript);
  assert.deepEqual(disagreements, []);
  // Only the cases about how a number is written (3.0 against 3) are out of its sight.
  assert.deepEqual(cases.filter((c) => c.number_as_written).map((c) => c.name).sort(),
                   ["duration-integral-float", "phase-integral-float", "schema-version-float"]);
});
