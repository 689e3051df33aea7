// gateway/web/static/js/decision.js: decisions and operator commands made and
// signed in JavaScript with the operator's imported (non-extractable) keys.
// tests/web/test_js_crypto.py writes the inputs to $BATON_JS_FIXTURES, runs this
// file and then verifies what it wrote to $BATON_JS_OUT with
// protocol/decision.py verify_decision_at and protocol/operator.py
// verify_command_at, comparing the canonical bytes with the Python's.
// Without the fixtures only the tests that need none run; the rest skip.
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import { VerificationError, openBundle } from "../../../gateway/web/static/js/bundle.js";
import {
  COMMAND_TYP,
  DECISION_TYP,
  decisionBody,
  makeCommand,
  makeDecision,
  randomNonce,
  signCommand,
  signDecision,
} from "../../../gateway/web/static/js/decision.js";
import { b64urlDecode } from "../../../gateway/web/static/js/b64.js";
import { canonicalDigest, canonicalize, parseStrict } from "../../../gateway/web/static/js/jcs.js";
import { importPublicJwks, verifyCompact } from "../../../gateway/web/static/js/jose.js";
import { importOperatorFiles } from "../../../gateway/web/static/js/keystore.js";

const FIXTURES = process.env.BATON_JS_FIXTURES;
const OUT = process.env.BATON_JS_OUT;
const fixtures = FIXTURES ? JSON.parse(readFileSync(join(FIXTURES, "fixtures.json"), "utf8")) : null;
const NEEDS = fixtures ? {} : { skip: "needs BATON_JS_FIXTURES: run .venv/bin/pytest tests/web/test_js_crypto.py" };

function save(name, value) {
  if (OUT) writeFileSync(join(OUT, `${name}.json`), JSON.stringify(value));
}

let context = null;
function setup() {
  context ??= (async () => {
    const own = await importOperatorFiles(fixtures.operator.signing_jwks, fixtures.operator.encryption_jwks);
    const gateway = await importPublicJwks(fixtures.gateway_jwks);
    const mine = await importPublicJwks(fixtures.operator_jwks[fixtures.operator.identity]);
    const opened = await openBundle(fixtures.sealed.jwe, own.encryption, gateway);
    return { own, mine, opened };
  })();
  return context;
}

async function codeOf(run) {
  try {
    await run();
  } catch (error) {
    assert.ok(error instanceof VerificationError, `not a VerificationError: ${error?.stack ?? error}`);
    return error.code;
  }
  return null;
}

/** A throwaway ES256 key, as keystore.js hands them out ({kid, alg, key}). */
async function throwawayKey() {
  const pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign", "verify"]);
  return { signer: { kid: "throwaway", alg: "ES256", key: pair.privateKey }, verifier: { kid: "throwaway", alg: "ES256", use: "sig", key: pair.publicKey } };
}

const BUNDLE = {
  bundle_id: "hb_0123456789abcdefgh",
  request: {
    allowed_decisions: ["approve", "edit", "reject", "respond", "reroute"],
    requested_action: { kind: "tool_call", target: "p/t", arguments: { a: 1 }, args_digest: "sha256:" + "1".repeat(64) },
    response_schema: { type: "object", required: ["ok"] },
  },
};
const BINDING = { bundleId: "hb_0123456789abcdefgh", bundleDigest: "sha256:" + "2".repeat(64), bundleVersion: 1, fencingToken: 3 };

// --------------------------------------------------------------------------- no fixtures needed

test("decisionBody writes every member, nulls included, as DecisionBody's JSON form", async () => {
  assert.deepEqual(await decisionBody("approve", BUNDLE), {
    type: "approve",
    commitment: "agreed",
    arguments: null,
    args_digest: "sha256:" + "1".repeat(64),
    response: null,
    reroute_queue: null,
    message: null,
  });
  const edit = await decisionBody("edit", BUNDLE, { arguments: { b: [1, 2.5] }, message: "" });
  assert.equal(edit.args_digest, await canonicalDigest({ b: [1, 2.5] }));
  assert.equal(edit.message, "", "an empty message is a message, as in the Python");
  assert.equal((await decisionBody("reject", BUNDLE)).commitment, "refused");
  assert.equal((await decisionBody("respond", BUNDLE, { response: { ok: true } })).response.ok, true);
  const error = await decisionBody("respond", BUNDLE, { response: {} }).catch((e) => e);
  assert.equal(error.code, "response_invalid");
  assert.deepEqual([error.pointer, error.keyword], ["", "required"]);
});

test("makeDecision and makeCommand follow the Python's iat, exp and nonce rules", () => {
  const body = { type: "approve", commitment: "agreed", arguments: null, args_digest: null, response: null, reroute_queue: null, message: null };
  const decision = makeDecision(BINDING, body, { operator: "operator:alice", now: 1000.9 });
  assert.deepEqual([decision.iat, decision.exp], [1000, 1900]);
  assert.match(decision.nonce, /^[A-Za-z0-9_-]{22}$/);
  assert.notEqual(decision.nonce, makeDecision(BINDING, body, { operator: "operator:alice", now: 1000 }).nonce);
  assert.equal(makeDecision(BINDING, body, { operator: "operator:alice", now: 5, ttlS: 86400 }).exp, 86405);
  assert.equal(Object.keys(decision).length, 10);
  assert.throws(() => makeDecision(BINDING, body, { operator: "alice", now: 5 }), { code: "invalid_artifact" });
  assert.throws(() => makeDecision({ ...BINDING, fencingToken: 0 }, body, { operator: "operator:a", now: 5 }), {
    code: "invalid_artifact",
  });
  const command = makeCommand("list", { operator: "operator:alice", audience: "spiffe://t/gateway/gw1", queue: "q", now: 7.5, nonce: "n".repeat(16) });
  assert.equal(
    canonicalize(command),
    '{"aud":"spiffe://t/gateway/gw1","bundle_id":null,"decision":null,"exp":67,"fencing_token":null,"iat":7,' +
      '"nonce":"nnnnnnnnnnnnnnnn","op":"list","operator":"operator:alice","paths":[],"queue":"q","reason":null,' +
      '"schema":"baton.operator-command/v1","status":null}',
  );
  assert.match(randomNonce(), /^[A-Za-z0-9_-]{22}$/);
});

test("signDecision and signCommand sign JCS with the pinned header; a bad edit digest is refused", async () => {
  const { signer, verifier } = await throwawayKey();
  const body = await decisionBody("edit", BUNDLE, { arguments: { a: 2 } });
  const decision = makeDecision(BINDING, body, { operator: "operator:alice", now: 10, nonce: "d".repeat(16) });
  const token = await signDecision(decision, signer);
  const verified = await verifyCompact(token, [verifier], { typ: DECISION_TYP });
  assert.deepEqual(verified.header, { alg: "ES256", kid: "throwaway", typ: DECISION_TYP });
  assert.equal(new TextDecoder().decode(verified.payload), canonicalize(decision));
  const forged = { ...decision, decision: { ...decision.decision, arguments: { a: 3 } } };
  assert.equal(await codeOf(() => signDecision(forged, signer)), "invalid_artifact");
  const command = makeCommand("claim", { operator: "operator:alice", audience: "spiffe://t/gateway/gw1", queue: "q", now: 1, bundleId: BINDING.bundleId });
  const commandToken = await signCommand(command, signer);
  const checked = await verifyCompact(commandToken, [verifier], { typ: COMMAND_TYP });
  assert.deepEqual(parseStrict(checked.payload), command);
});

// --------------------------------------------------------------------------- the real keys

test("importOperatorFiles: the keys of `baton operators add`, non-extractable", NEEDS, async () => {
  const { own } = await setup();
  assert.equal(own.signing.kid, fixtures.operator.signing_kid);
  assert.equal(own.signing.alg, "ES256");
  assert.equal(own.encryption.kid, fixtures.operator.encryption_kid);
  for (const key of [own.signing.key, own.encryption.key]) {
    assert.equal(key.extractable, false);
    await assert.rejects(crypto.subtle.exportKey("jwk", key));
  }
});

test("decisions signed here, for the Python to verify", NEEDS, async () => {
  const { own, mine, opened } = await setup();
  const { make } = fixtures;
  const made = [];
  for (const spec of make.decisions) {
    const body = await decisionBody(spec.kind, opened.bundle, spec.options);
    const decision = makeDecision(make.binding, body, { operator: fixtures.operator.identity, now: make.decision_now, nonce: spec.nonce });
    const token = await signDecision(decision, own.signing);
    const verified = await verifyCompact(token, mine, { typ: DECISION_TYP });
    assert.equal(verified.kid, own.signing.kid);
    made.push({ kind: spec.kind, token, canonical: canonicalize(decision) });
  }
  assert.equal(made.length, make.decisions.length);
  save("decisions", made);
});

test("operator commands signed here, for the Python to verify", NEEDS, async () => {
  const { own } = await setup();
  const { make } = fixtures;
  const made = [];
  for (const spec of make.commands) {
    const command = makeCommand(spec.op, {
      operator: fixtures.operator.identity,
      audience: fixtures.audience,
      now: make.command_now,
      nonce: spec.nonce,
      ...spec.options,
    });
    const token = await signCommand(command, own.signing);
    assert.deepEqual(parseStrict(b64urlDecode(token.split(".")[1])), command);
    made.push({ op: spec.op, token, canonical: canonicalize(command) });
  }
  save("commands", made);
});

test("what the Python refuses to sign, JavaScript refuses with the same code", NEEDS, async () => {
  const { opened } = await setup();
  const { make } = fixtures;
  const body = await decisionBody("approve", opened.bundle);
  const seen = {};
  for (const item of make.refusals) {
    const run = {
      decisionBody: () => decisionBody(item.kind, opened.bundle, item.options),
      makeDecision: () => makeDecision(make.binding, body, { operator: fixtures.operator.identity, now: fixtures.now, ttlS: item.ttlS }),
      makeCommand: () =>
        makeCommand(item.op, {
          operator: fixtures.operator.identity,
          audience: fixtures.audience,
          now: fixtures.now,
          nonce: "refused-command-nonce",
          ...item.options,
        }),
    }[item.call];
    seen[item.name] = await codeOf(run);
    assert.equal(seen[item.name], item.code, item.name);
  }
  save("refusals", seen);
});
