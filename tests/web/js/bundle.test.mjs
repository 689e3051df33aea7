// gateway/web/static/js/bundle.js (and the RFC 8785 of js/jcs.js it relies on)
// against artifacts the Python made: tests/web/test_js_crypto.py writes them to
// $BATON_JS_FIXTURES/fixtures.json (a real `baton init` folder's keys, a bundle
// sealed by protocol/bundle.py seal_bundle, its reveals, a gateway-signed
// lifecycle, a decision, tampered variants with the Python's refusal code),
// runs this file, and checks what it writes to $BATON_JS_OUT.
// Without the fixtures only the tests that need none run; the rest skip.
// Run: .venv/bin/pytest tests/web/test_js_crypto.py (or node --test with the env set).
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import {
  VerificationError,
  agentViews,
  openBundle,
  openReveals,
  resolve,
  verifyDecision,
  verifyEvents,
  verifyReveal,
} from "../../../gateway/web/static/js/bundle.js";
import { buildExport } from "../../../gateway/web/static/js/export.js";
import { canonicalDigest, canonicalize, parseStrict } from "../../../gateway/web/static/js/jcs.js";
import { importPublicJwks } from "../../../gateway/web/static/js/jose.js";
import { importOperatorFiles } from "../../../gateway/web/static/js/keystore.js";

const FIXTURES = process.env.BATON_JS_FIXTURES;
const OUT = process.env.BATON_JS_OUT;
const fixtures = FIXTURES ? JSON.parse(readFileSync(join(FIXTURES, "fixtures.json"), "utf8")) : null;
const NEEDS = fixtures ? {} : { skip: "needs BATON_JS_FIXTURES: run .venv/bin/pytest tests/web/test_js_crypto.py" };

/** Hand a result to the Python side (tests/web/test_js_crypto.py). */
function save(name, value) {
  if (OUT) writeFileSync(join(OUT, `${name}.json`), JSON.stringify(value));
}

let context = null;
/** The operator's keys (from the files `baton operators add` writes), the verification keys. */
function keys() {
  context ??= (async () => {
    const { operator } = fixtures;
    const own = await importOperatorFiles(operator.signing_jwks, operator.encryption_jwks);
    const operators = {};
    for (const [identity, jwks] of Object.entries(fixtures.operator_jwks)) operators[identity] = await importPublicJwks(jwks);
    return { own, gateway: await importPublicJwks(fixtures.gateway_jwks), operators, queueOperators: fixtures.queue_operators };
  })();
  return context;
}

let openedOnce = null;
function opened() {
  openedOnce ??= keys().then((k) => openBundle(fixtures.sealed.jwe, k.own.encryption, k.gateway));
  return openedOnce;
}

/** The code of the VerificationError `run` throws, or null if it resolves. */
async function codeOf(run) {
  try {
    await run();
  } catch (error) {
    assert.ok(error instanceof VerificationError, `not a VerificationError: ${error?.stack ?? error}`);
    assert.equal(typeof error.message, "string");
    return error.code;
  }
  return null;
}

/** What gateway/inbox_client.py InboxClient.reveal shows: every masked field's original. */
async function revealAll(jwe, opened, encryption, bundleId) {
  const reveals = await openReveals(jwe, encryption, bundleId);
  const shown = [];
  for (const field of opened.bundle.masked) {
    const original = reveals.items.find((item) => item.path === field.path);
    if (!original) throw new VerificationError("binding_mismatch", `the reveal set has no original for ${field.path}`);
    shown.push([field.path, await verifyReveal(field, original)]);
  }
  return shown;
}

// --------------------------------------------------------------------------- no fixtures needed

test("resolve: RFC 6901 pointers with * segments, as protocol/pii.py resolve", () => {
  const doc = { a: [{ e: 1 }, { e: 2 }, { f: 3 }], "b/c": { "~": 4 }, n: null, "": 5 };
  assert.deepEqual(resolve(doc, "/a/*/e"), [["/a/0/e", 1], ["/a/1/e", 2]]);
  assert.deepEqual(resolve(doc, "/b~1c/~0"), [["/b~1c/~0", 4]]);
  assert.deepEqual(resolve(doc, "/*"), [["/a", doc.a], ["/b~1c", doc["b/c"]], ["/n", null], ["/", 5]]);
  assert.deepEqual(resolve(doc, "/a/01"), [], "a leading zero is no index");
  assert.deepEqual(resolve(doc, "/a/3"), []);
  assert.deepEqual(resolve(doc, "/n/x"), []);
  assert.deepEqual(resolve(doc, "/"), [["/", 5]]);
  assert.deepEqual(resolve(doc, ""), [["", doc]]);
  assert.deepEqual(resolve({ __proto__: null, toString: 1 }, "/constructor"), []);
});

test("agentViews: each participant's last entry, sorted by code point (Python's order)", () => {
  const h = (n) => "sha256:" + String(n).repeat(64).slice(0, 64);
  const transcript = [
    { seq: 0, hash: h(1), from: "spiffe://t/agent/\uff61", to: "spiffe://t/agent/\u{1f600}" },
    { seq: 1, hash: h(2), from: "spiffe://t/agent/b", to: "spiffe://t/agent/\uff61" },
  ];
  // UTF-16 order would put U+1F600 (D83D DE00) before U+FF61; code points do not.
  assert.deepEqual(agentViews(transcript), [
    { agent: "spiffe://t/agent/b", saw_through_seq: 1, head: h(2) },
    { agent: "spiffe://t/agent/\uff61", saw_through_seq: 1, head: h(2) },
    { agent: "spiffe://t/agent/\u{1f600}", saw_through_seq: 0, head: h(1) },
  ]);
});

test("verifyReveal refuses another field's reveal and a bad salt with digest_invalid", async () => {
  const field = { path: "/a", token: "<PII_1>", commitment: "sha256:" + "0".repeat(64), entity: null };
  assert.equal(await codeOf(() => verifyReveal(field, { path: "/b", salt: "AA", value: 1 })), "digest_invalid");
  assert.equal(await codeOf(() => verifyReveal(field, { path: "/a", salt: "A=", value: 1 })), "digest_invalid");
  assert.equal(await codeOf(() => verifyReveal(field, { path: "/a", salt: "AAAA", value: 1 })), "digest_invalid");
});

// --------------------------------------------------------------------------- the real handoff

test("the Python-sealed bundle opens and verifies, with its lifecycle, decision and reveals", NEEDS, async () => {
  const k = await keys();
  const bundle = await opened();
  // Compared by digest: a failure must not print bundle plaintext.
  const same = async (a, b) => (await canonicalDigest(a)) === (await canonicalDigest(b));
  assert.ok(await same(bundle.bundle, fixtures.sealed.bundle), "the bundle is not the model's JSON form");
  assert.equal(bundle.bundleDigest, fixtures.sealed.bundle_digest);
  assert.equal(bundle.signerKid, fixtures.sealed.signer_kid);
  assert.equal(bundle.jws, fixtures.sealed.jws);
  assert.ok(bundle.payload instanceof Uint8Array && bundle.payload.length > 1000);
  assert.ok(bundle.checks.length >= 5);
  const events = await verifyEvents(fixtures.events, k.gateway, fixtures.bundle_id);
  assert.deepEqual(events, fixtures.python_events);
  const decision = await verifyDecision(fixtures.decision, bundle, events, k.operators, k.queueOperators);
  assert.deepEqual(decision, JSON.parse(fixtures.python_decision));
  const reveals = await revealAll(fixtures.sealed.reveals_jwe, bundle, k.own.encryption, fixtures.bundle_id);
  assert.equal(reveals.length, fixtures.reveals.length);
  assert.ok(await same(reveals, fixtures.reveals), "the revealed originals are not the Python's");
  save("opened", {
    bundle: bundle.bundle,
    bundle_digest: bundle.bundleDigest,
    signer_kid: bundle.signerKid,
    jws: bundle.jws,
    events,
    decision,
    reveals,
  });
});

test("openBundle does not modify its inputs and needs this operator's key", NEEDS, async () => {
  const k = await keys();
  const jwe = structuredClone(fixtures.sealed.jwe);
  await openBundle(jwe, k.own.encryption, k.gateway);
  assert.deepEqual(jwe, fixtures.sealed.jwe);
  const gatewayOnly = k.gateway.filter((key) => key.kid === fixtures.sealed.signer_kid);
  assert.equal((await openBundle(jwe, k.own.encryption, gatewayOnly)).signerKid, fixtures.sealed.signer_kid);
  assert.equal(await codeOf(() => openBundle(jwe, k.own.encryption, [])), "unknown_kid");
});

const seen = {};
for (const item of fixtures?.tamper ?? []) {
  test(`tampered ${item.kind}: ${item.name} is refused with ${item.code}`, async () => {
    const k = await keys();
    const run = {
      bundle: () => openBundle(item.jwe, k.own.encryption, k.gateway),
      events: () => verifyEvents(item.events, k.gateway, fixtures.bundle_id),
      decision: async () => {
        const events = await verifyEvents(item.events, k.gateway, fixtures.bundle_id);
        return verifyDecision(item.token, await opened(), events, k.operators, k.queueOperators);
      },
      reveals: async () => revealAll(item.jwe, await opened(), k.own.encryption, fixtures.bundle_id),
    }[item.kind];
    seen[item.name] = await codeOf(run);
    assert.equal(seen[item.name], item.code);
  });
}

test("every tamper case ran", NEEDS, () => {
  assert.equal(Object.keys(seen).length, fixtures.tamper.length);
  save("tamper", seen);
});

test("buildExport of the opened handoff", NEEDS, async () => {
  const bundle = await opened();
  const exports = {};
  for (const [name, spec] of Object.entries(fixtures.exports)) {
    exports[name] = buildExport({
      bundle: fixtures.sealed.jwe,
      events: spec.events,
      decision: spec.decision,
      queue: bundle.bundle.queue,
      conversation: bundle.bundle.conversation,
    });
    assert.ok(exports[name].endsWith("}\n"));
  }
  save("exports", exports);
});

// --------------------------------------------------------------------------- RFC 8785

function double(bits) {
  const view = new DataView(new ArrayBuffer(8));
  view.setBigUint64(0, BigInt(`0x${bits}`));
  return view.getFloat64(0);
}

test("RFC 8785 through js/jcs.js: random values, Appendix B, the s3.2.2/s3.2.3 examples", NEEDS, () => {
  const { jcs } = fixtures;
  const random = jcs.random.map((item) => canonicalize(parseStrict(item.text)));
  random.forEach((text, i) => assert.equal(text, jcs.random[i].canonical, `random value ${i}: ${jcs.random[i].text}`));
  const appendixB = jcs.appendix_b.map((item) => canonicalize(double(item.bits)));
  appendixB.forEach((text, i) => {
    assert.equal(text, jcs.appendix_b[i].expected, jcs.appendix_b[i].bits);
    assert.equal(canonicalize([double(jcs.appendix_b[i].bits)]), `[${text}]`);
  });
  const examples = jcs.examples.map((item) => canonicalize(parseStrict(item.text)));
  examples.forEach((text, i) => assert.equal(text, jcs.examples[i].expected));
  const vectors = jcs.vectors.map((item) => canonicalize(parseStrict(item.text)));
  vectors.forEach((text, i) => assert.equal(text, jcs.vectors[i].expected, jcs.vectors[i].name));
  const suite = {};
  for (const item of jcs.json_test_suite) {
    try {
      parseStrict(new Uint8Array(Buffer.from(item.data, "base64")));
      suite[item.name] = true;
    } catch (error) {
      assert.ok(error instanceof VerificationError, `${item.name}: ${error}`);
      suite[item.name] = false;
    }
    assert.equal(suite[item.name], item.js, item.name);
  }
  save("jcs", { random, appendix_b: appendixB, examples, vectors, json_test_suite: suite });
});
