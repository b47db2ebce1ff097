// The contract's TypeScript types and embedded schemas are generated from
// models/schemas/*.json: a schema changed without `npm run generate` fails here.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { test } from "node:test";

test("src/generated/contract.ts is up to date with models/schemas", () => {
  const script = new URL("../../scripts/generate.mjs", import.meta.url);
  const run = spawnSync(process.execPath, [script.pathname, "--check"], { encoding: "utf8" });
  assert.equal(run.status, 0, run.stderr);
});
