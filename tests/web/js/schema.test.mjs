// gateway/web/static/js/schema.js against the shared cases (tests/web/schema_cases.json,
// which tests/protocol/test_schema.py runs against protocol/schema.py), plus what only
// JavaScript values can do. Run: node --test tests/web/js/schema.test.mjs
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import {
  INVALID_SCHEMA,
  MAX_INSTANCE_NODES,
  RESPONSE_INVALID,
  SchemaError,
  checkSchema,
  validate,
} from "../../../gateway/web/static/js/schema.js";

const CASES = JSON.parse(readFileSync(new URL("../schema_cases.json", import.meta.url), "utf8"));

function thrown(run) {
  try {
    run();
  } catch (error) {
    assert.ok(error instanceof SchemaError, `not a SchemaError: ${error}`);
    return error;
  }
  return null;
}

function assertFails(run, code, pointer, keyword) {
  const error = thrown(run);
  assert.ok(error !== null, `accepted, expected ${code} ${keyword} at "${pointer}"`);
  assert.deepEqual([error.code, error.pointer, error.keyword], [code, pointer, keyword]);
  assert.ok(error.message.includes(`"${pointer}"`) && error.message.includes(keyword));
}

test("the shared file holds at least 60 cases", () => {
  assert.ok(CASES.cases.length + CASES.refused.length >= 60);
  assert.ok(CASES.cases.some((c) => c.valid) && CASES.cases.some((c) => !c.valid));
});

for (const item of CASES.cases) {
  test(`case: ${item.description}`, () => {
    checkSchema(item.schema);
    if (item.valid) {
      assert.equal(thrown(() => validate(item.instance, item.schema)), null);
    } else {
      assertFails(() => validate(item.instance, item.schema), RESPONSE_INVALID, item.pointer,
        item.keyword);
    }
  });
}

for (const item of CASES.refused) {
  test(`refused: ${item.description}`, () => {
    assertFails(() => checkSchema(item.schema), INVALID_SCHEMA, item.pointer, item.keyword);
    // A refused schema validates nothing, not even a value that would "fit".
    assertFails(() => validate(null, item.schema), INVALID_SCHEMA, item.pointer, item.keyword);
  });
}

test("lone surrogates are not I-JSON, in strings and in member names", () => {
  assertFails(() => validate("a\uD800", {}), RESPONSE_INVALID, "", "i-json");
  assertFails(() => validate({ "\uDC00": 1 }, {}), RESPONSE_INVALID, "", "i-json");
  assertFails(() => validate(["ok", "\uDBFF"], {}), RESPONSE_INVALID, "/1", "i-json");
  assertFails(() => checkSchema({ const: "\uD83D" }), INVALID_SCHEMA, "/const", "i-json");
  assert.equal(thrown(() => validate("\uD83D\uDE00", { maxLength: 1 })), null);
});

test("values that are not JSON are refused", () => {
  for (const value of [undefined, () => 1, 1n, Symbol("s"), new Map(), new Date(0), [undefined]]) {
    const error = thrown(() => validate(value, {}));
    assert.ok(error !== null && error.code === RESPONSE_INVALID && error.keyword === "i-json");
  }
  for (const value of [NaN, Infinity, -Infinity]) {
    assertFails(() => validate({ n: value }, {}), RESPONSE_INVALID, "/n", "i-json");
  }
  assertFails(() => checkSchema({ minimum: NaN }), INVALID_SCHEMA, "/minimum", "i-json");
  assertFails(() => checkSchema(new Map()), INVALID_SCHEMA, "", "type");
});

test("objects without a prototype are objects; inherited members are not members", () => {
  const bare = Object.create(null);
  bare.amount = 3;
  assert.equal(thrown(() => validate(bare, { required: ["amount"], type: "object" })), null);
  const schema = Object.create(null);
  schema.type = "string";
  assert.equal(thrown(() => validate("x", schema)), null);
  assertFails(() => validate({}, { required: ["hasOwnProperty"] }), RESPONSE_INVALID, "",
    "required");
  assertFails(() => validate({ valueOf: 1 }, { additionalProperties: false }), RESPONSE_INVALID,
    "/valueOf", "additionalProperties");
});

test("an instance over the size limit", () => {
  const big = new Array(MAX_INSTANCE_NODES).fill(0);
  assertFails(() => validate(big, {}), RESPONSE_INVALID, `/${MAX_INSTANCE_NODES - 1}`, "size");
  assert.equal(thrown(() => validate(big.slice(1), {})), null);
});
