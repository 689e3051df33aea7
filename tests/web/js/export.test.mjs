// gateway/web/static/js/export.js buildExport against gateway/verify.py
// build_export: the same bytes for the same parts, and the same refusals.
// (tests/web/test_js_crypto.py runs the full `baton verify` checks on an
// export of a real bundle.) Run: node --test tests/web/js/export.test.mjs
import assert from "node:assert/strict";
import { before, test } from "node:test";

import { VerificationError } from "../../../gateway/web/static/js/errors.js";
import { buildExport } from "../../../gateway/web/static/js/export.js";
import { NO_PYTHON, runPython } from "./python.mjs";

const PYTHON_EXPORT = `
import base64, json, sys
from gateway.verify import build_export
from keys import strictjson
from keys.jose import encrypt_general
from keys.keyset import PrivateKeySet
from protocol.errors import BatonError

req = strictjson.loads(sys.stdin.read(), max_bytes=1 << 26)
if req["op"] == "jwe":
    key = PrivateKeySet.generate("ECDH-ES+A256KW").active.public
    out = encrypt_general(b"x" * 5000, [key], typ="baton-handoff+jwe", cty="baton-handoff+jws")
else:
    out = []
    for parts in req["cases"]:
        try:
            out.append({"ok": base64.b64encode(build_export(**parts)).decode()})
        except BatonError as exc:
            out.append({"error": exc.code})
print(json.dumps(out))
`;

let jwe;
before(() => {
  if (!NO_PYTHON) jwe = runPython(PYTHON_EXPORT, { op: "jwe" });
});

function jsVerdict(parts) {
  try {
    return { ok: Buffer.from(buildExport(parts), "utf8").toString("base64") };
  } catch (error) {
    assert.ok(error instanceof VerificationError, String(error));
    return { error: error.code };
  }
}

test("the same bytes as build_export, and the same refusals", { skip: NO_PYTHON }, () => {
  const good = {
    bundle: jwe,
    events: ["eyJhbGciOiJFZDI1NTE5In0.e30.c2ln", "second.event.token"],
    decision: "eyJ0eXAiOiJiYXRvbi1kZWNpc2lvbitqd3MifQ.e30.c2ln",
    queue: "payments-approvals",
    conversation: "conv-\u00e9\ud83d\ude00",
  };
  const cases = [
    good,
    { ...good, decision: null },
    { ...good, bundle: "header.payload.signature" },
    { ...good, events: Array.from({ length: 1024 }, (_, i) => `e${i}`) },
    { ...good, conversation: "\ud83d\ude00".repeat(256) },
    { ...good, conversation: "" },
    { ...good, queue: "a".repeat(63) },
    { ...good, bundle: { ciphertext: "AA", "\ue000": 1, "\ud83d\ude00": 2 } },
    { ...good, events: [] },
    { ...good, events: Array.from({ length: 1025 }, (_, i) => `e${i}`) },
    { ...good, events: ["ok", 5] },
    { ...good, decision: 5 },
    { ...good, queue: "Payments" },
    { ...good, queue: "a".repeat(64) },
    { ...good, queue: "-q" },
    { ...good, conversation: "c".repeat(257) },
  ];
  const python = runPython(PYTHON_EXPORT, { op: "export", cases });
  for (const [index, parts] of cases.entries()) {
    assert.deepEqual(jsVerdict(parts), python[index], `case ${index}`);
  }
  const text = buildExport(good);
  assert.ok(text.endsWith("}\n") && text.startsWith('{"bundle":{"ciphertext":'));
  assert.ok(python.filter((v) => "ok" in v).length === 8 && python.filter((v) => "error" in v).length === 8);
});

test("a bundle that is neither a token nor a JSON object is refused (build_export's type)", () => {
  for (const bundle of [["not", "an", "object"], 7, null, new Map()]) {
    assert.throws(
      () => buildExport({ bundle, events: ["e"], decision: null, queue: "q", conversation: "c" }),
      (error) => error instanceof VerificationError && error.code === "invalid_artifact",
    );
  }
});

test("decision must be given: undefined is not null", () => {
  assert.throws(
    () => buildExport({ bundle: "a.b.c", events: ["e"], decision: undefined, queue: "q", conversation: "c" }),
    (error) => error instanceof VerificationError && error.code === "invalid_artifact",
  );
  assert.equal(
    buildExport({ bundle: "a.b.c", events: ["e"], decision: null, queue: "q", conversation: "c" }),
    '{"bundle":"a.b.c","conversation":"c","decision":null,"events":["e"],"queue":"q","type":"baton-handoff-export"}\n',
  );
});
