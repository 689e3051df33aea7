// gateway/web/static/js/jose.js against keys/jose.py: tokens and JWEs the
// Python makes are opened here, tokens signed here verify in the Python, and
// every tampered variant gets the same error code from both. Also RFC 7518
// appendix C (Concat KDF) and the RFC 7520 s5.4 cookbook example (ECDH-ES +
// AES key wrap + AES-GCM) from ../shared/vectors.
// Run: node --test tests/web/js/jose.test.mjs
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { before, test } from "node:test";

import { ascii, b64urlDecode, b64urlEncode, fromUtf8, utf8 } from "../../../gateway/web/static/js/b64.js";
import { VerificationError } from "../../../gateway/web/static/js/errors.js";
import {
  asciiJson,
  concatKdf,
  decryptGeneral,
  importPublicJwks,
  onP256,
  signCompact,
  thumbprint,
  verifyCompact,
} from "../../../gateway/web/static/js/jose.js";
import { NO_PYTHON, REPO, runPython } from "./python.mjs";

const subtle = globalThis.crypto.subtle;
const VECTORS = process.env.BATON_VECTORS ?? `${REPO}../shared/vectors`;
const JWS_TYP = "baton-handoff+jws";
const JWE_TYP = "baton-handoff+jwe";

const PYTHON_JOSE = `
import base64, json, sys
from keys import strictjson
from keys.errors import KeysError
from keys.jose import decrypt, encrypt_general, sign_compact, verify_compact
from keys.keyset import KeySet, PrivateKeySet

def b64(data): return base64.b64encode(data).decode()
req = strictjson.loads(sys.stdin.read(), max_bytes=1 << 26)
out = {}
if req["op"] == "make":
    gateway = PrivateKeySet.generate("Ed25519")
    other_gateway = PrivateKeySet.generate("Ed25519")
    operator = PrivateKeySet.generate("ES256")
    enc = PrivateKeySet.generate("ECDH-ES+A256KW")
    other_enc = PrivateKeySet.generate("ECDH-ES+A256KW")
    payload = base64.b64decode(req["payload"])
    out = {
        "gateway_public": gateway.public().to_jwks(),
        "operator_private": operator.to_private_jwks(),
        "other_gateway_private": other_gateway.to_private_jwks(),
        "all_public": gateway.public().merged(operator.public()).merged(enc.public()).to_jwks(),
        "enc_private": enc.to_private_jwks(),
        "other_enc_private": other_enc.to_private_jwks(),
        "ed_token": sign_compact(payload, gateway.active, typ="${JWS_TYP}"),
        "es_token": sign_compact(payload, operator.active, typ="baton-decision+jws", cty="json"),
        "jwe": encrypt_general(payload, [other_enc.active.public, enc.active.public], typ="${JWE_TYP}", cty="${JWS_TYP}"),
    }
elif req["op"] == "verify":
    keys = KeySet.from_jwks(req["jwks"])
    results = []
    for case in req["cases"]:
        try:
            verified = verify_compact(case["token"], keys, typ=case["typ"], max_bytes=case.get("max_bytes", 4 << 20))
            results.append({"ok": b64(verified.payload), "kid": verified.key.kid})
        except KeysError as exc:
            results.append({"error": exc.code})
    out = results
elif req["op"] == "decrypt":
    key = PrivateKeySet.from_jwks(req["jwks"]).active
    results = []
    for case in req["cases"]:
        try:
            results.append({"ok": b64(decrypt(case["jwe"], key, typ=case["typ"]).plaintext)})
        except KeysError as exc:
            results.append({"error": exc.code})
    out = results
elif req["op"] == "jwks":
    results = []
    for jwks in req["cases"]:
        try:
            results.append({"ok": [key.kid for key in KeySet.from_jwks(jwks)]})
        except KeysError as exc:
            results.append({"error": exc.code})
    out = results
print(json.dumps(out))
`;

const PAYLOAD = utf8('{"bundle":"\u00e9\ud83d\ude00","n":1}');
let made;
let allKeys;
let enc;
let otherEnc;

async function importPrivate(jwk, params, usages) {
  const bare = { kty: jwk.kty, crv: jwk.crv, x: jwk.x, d: jwk.d, ...(jwk.y ? { y: jwk.y } : {}) };
  return subtle.importKey("jwk", bare, params, false, usages);
}

const ECDH = { name: "ECDH", namedCurve: "P-256" };

before(async () => {
  if (NO_PYTHON) return;
  made = runPython(PYTHON_JOSE, { op: "make", payload: Buffer.from(PAYLOAD).toString("base64") });
  allKeys = await importPublicJwks(made.all_public);
  const jwk = made.enc_private.keys[0];
  enc = { kid: jwk.kid, key: await importPrivate(jwk, ECDH, ["deriveBits"]) };
  const otherJwk = made.other_enc_private.keys[0];
  otherEnc = { kid: otherJwk.kid, key: await importPrivate(otherJwk, ECDH, ["deriveBits"]) };
});

async function codeOf(promise) {
  try {
    const value = await promise;
    return { ok: value };
  } catch (error) {
    assert.ok(error instanceof VerificationError, `not a VerificationError: ${error?.stack ?? error}`);
    return { error: error.code };
  }
}

function segment(value) {
  return b64urlEncode(utf8(typeof value === "string" ? value : JSON.stringify(value)));
}

function withHeader(token, header) {
  const [, payload, signature] = token.split(".");
  return `${segment(header)}.${payload}.${signature}`;
}

function flip(text, at) {
  // Swap one character for another of the alphabet whose low bits are the same
  // ("A" <-> "Q": both end in 0000), so the string stays canonical base64url.
  const c = text[at];
  const swapped = c === "A" ? "Q" : c === "Q" ? "A" : c === "g" ? "w" : "g";
  return text.slice(0, at) + swapped + text.slice(at + 1);
}

test("Python-signed Ed25519 and ES256 tokens verify, with the pinned key's kid", { skip: NO_PYTHON }, async () => {
  const ed = await verifyCompact(made.ed_token, allKeys, { typ: JWS_TYP });
  assert.deepEqual(ed.payload, PAYLOAD);
  assert.equal(ed.kid, made.gateway_public.keys[0].kid);
  assert.deepEqual(ed.header, { alg: "Ed25519", kid: ed.kid, typ: JWS_TYP });
  const es = await verifyCompact(made.es_token, allKeys, { typ: "baton-decision+jws" });
  assert.deepEqual(es.payload, PAYLOAD);
  assert.equal(es.alg, "ES256");
  assert.equal(es.header.cty, "json");
  await assert.rejects(verifyCompact(made.ed_token, allKeys, {}), TypeError); // typ must be stated
});

test("every tampered JWS gets keys/jose.py's code", { skip: NO_PYTHON }, async () => {
  const token = made.ed_token;
  const [h, p, s] = token.split(".");
  const header = JSON.parse(fromUtf8(b64urlDecode(h)));
  const encKid = made.all_public.keys.find((k) => k.alg === "ECDH-ES+A256KW").kid;
  const esKid = made.all_public.keys.find((k) => k.alg === "ES256").kid;
  const other = made.other_gateway_private.keys[0];
  const otherKey = await importPrivate(other, { name: "Ed25519" }, ["sign"]);
  const resigned = await signCompact(PAYLOAD, { kid: header.kid, alg: "Ed25519", key: otherKey }, { typ: JWS_TYP });
  const cases = [
    ["valid", token, JWS_TYP, "ok"],
    ["alg none", withHeader(token, { ...header, alg: "none" }), JWS_TYP, "alg_not_allowed"],
    ["alg none, no signature", `${segment({ alg: "none", typ: JWS_TYP })}.${p}.`, JWS_TYP, "alg_not_allowed"],
    ["alg HS256", withHeader(token, { ...header, alg: "HS256" }), JWS_TYP, "alg_not_allowed"],
    ["alg EdDSA for an Ed25519 key", withHeader(token, { ...header, alg: "EdDSA" }), JWS_TYP, "alg_mismatch"],
    ["alg ES256 for an Ed25519 key", withHeader(token, { ...header, alg: "ES256" }), JWS_TYP, "alg_mismatch"],
    ["alg Ed25519 for an ES256 key", withHeader(token, { ...header, kid: esKid }), JWS_TYP, "alg_mismatch"],
    ["kid of an encryption key", withHeader(token, { ...header, alg: "ES256", kid: encKid }), JWS_TYP, "alg_mismatch"],
    ["unknown kid", withHeader(token, { ...header, kid: "x".repeat(43) }), JWS_TYP, "unknown_kid"],
    ["no kid", withHeader(token, { alg: "Ed25519", typ: JWS_TYP }), JWS_TYP, "unknown_kid"],
    ["kid not a string", withHeader(token, { ...header, kid: 7 }), JWS_TYP, "unknown_kid"],
    ["crit", withHeader(token, { ...header, crit: ["exp"] }), JWS_TYP, "unsupported_crit"],
    ["b64 false", withHeader(token, { ...header, b64: false }), JWS_TYP, "unsupported_crit"],
    ["jwk", withHeader(token, { ...header, jwk: made.gateway_public.keys[0] }), JWS_TYP, "untrusted_key"],
    ["x5c", withHeader(token, { ...header, x5c: ["MII"] }), JWS_TYP, "untrusted_key"],
    ["zip", withHeader(token, { ...header, zip: "DEF" }), JWS_TYP, "compression_not_allowed"],
    ["unknown header", withHeader(token, { ...header, foo: 1 }), JWS_TYP, "unsupported_header"],
    ["wrong typ", token, "baton-decision+jws", "wrong_typ"],
    ["no typ", withHeader(token, { alg: "Ed25519", kid: header.kid }), JWS_TYP, "wrong_typ"],
    ["payload changed", `${h}.${flip(p, 5)}.${s}`, JWS_TYP, "bad_signature"],
    ["signature changed", `${h}.${p}.${flip(s, 3)}`, JWS_TYP, "bad_signature"],
    ["signature truncated", `${h}.${p}.${s.slice(0, 84)}`, JWS_TYP, "bad_signature"],
    ["no signature", `${h}.${p}.`, JWS_TYP, "bad_signature"],
    ["re-signed by another key under the same kid", resigned, JWS_TYP, "bad_signature"],
    ["signature over the cap", `${h}.${p}.${"A".repeat(132)}`, JWS_TYP, "malformed_jws"],
    ["padded payload", `${h}.${p}=.${s}`, JWS_TYP, "malformed_jws"],
    ["standard alphabet", `${h}.${p.replace(/[-_]/g, "+") || p}+.${s}`, JWS_TYP, "malformed_jws"],
    ["two segments", `${h}.${p}`, JWS_TYP, "malformed_jws"],
    ["four segments", `${token}.`, JWS_TYP, "malformed_jws"],
    ["header not base64url", `${h}!.${p}.${s}`, JWS_TYP, "malformed_jws"],
    ["header not JSON", `${segment("alg")}.${p}.${s}`, JWS_TYP, "malformed_jws"],
    ["header an array", `${segment([1])}.${p}.${s}`, JWS_TYP, "malformed_jws"],
    ["header with a duplicate name", `${segment('{"alg":"Ed25519","alg":"none"}')}.${p}.${s}`, JWS_TYP, "malformed_jws"],
    ["header with a lone surrogate", `${segment('{"alg":"Ed25519","kid":"\\ud800"}')}.${p}.${s}`, JWS_TYP, "malformed_jws"],
    ["header too deep", `${segment({ ...header, cty: [[[[1]]]] })}.${p}.${s}`, JWS_TYP, "malformed_jws"],
    ["non-ASCII", `${h}.${p}\u00e9.${s}`, JWS_TYP, "malformed_jws"],
  ];
  const python = runPython(PYTHON_JOSE, {
    op: "verify",
    jwks: made.all_public,
    cases: cases.map(([, t, typ]) => ({ token: t, typ })),
  });
  for (const [index, [name, t, typ, expected]] of cases.entries()) {
    const js = await codeOf(verifyCompact(t, allKeys, { typ }));
    const code = "ok" in js ? "ok" : js.error;
    assert.equal(code, expected, `${name}: JS`);
    assert.equal("ok" in python[index] ? "ok" : python[index].error, expected, `${name}: Python`);
  }
  const big = await codeOf(verifyCompact(token, allKeys, { typ: JWS_TYP, maxBytes: 100 }));
  const [pyBig] = runPython(PYTHON_JOSE, { op: "verify", jwks: made.all_public, cases: [{ token, typ: JWS_TYP, max_bytes: 100 }] });
  assert.equal(big.error, "payload_too_large");
  assert.equal(pyBig.error, "payload_too_large");
});

test("a JS-signed ES256 token has keys/jose.py's header bytes and verifies in the Python", { skip: NO_PYTHON }, async () => {
  const jwk = made.operator_private.keys[0];
  const key = await importPrivate(jwk, { name: "ECDSA", namedCurve: "P-256" }, ["sign"]);
  const signed = await signCompact(PAYLOAD, { kid: jwk.kid, alg: "ES256", key }, { typ: "baton-decision+jws", cty: "json" });
  assert.equal(signed.split(".")[0], made.es_token.split(".")[0]);
  assert.equal(signed.split(".")[1], made.es_token.split(".")[1]);
  const plain = await signCompact(PAYLOAD, { kid: jwk.kid, alg: "ES256", key }, { typ: "baton-decision+jws" });
  assert.equal(fromUtf8(b64urlDecode(plain.split(".")[0])), `{"alg":"ES256","kid":"${jwk.kid}","typ":"baton-decision+jws"}`);
  const [withCty, withoutCty, wrongTyp] = runPython(PYTHON_JOSE, {
    op: "verify",
    jwks: made.all_public,
    cases: [
      { token: signed, typ: "baton-decision+jws" },
      { token: plain, typ: "baton-decision+jws" },
      { token: plain, typ: JWS_TYP },
    ],
  });
  assert.equal(withCty.ok, Buffer.from(PAYLOAD).toString("base64"));
  assert.equal(withCty.kid, jwk.kid);
  assert.equal(withoutCty.ok, Buffer.from(PAYLOAD).toString("base64"));
  assert.equal(wrongTyp.error, "wrong_typ");
  assert.deepEqual((await verifyCompact(signed, allKeys, { typ: "baton-decision+jws" })).payload, PAYLOAD);
  await assert.rejects(signCompact(PAYLOAD, { kid: "k", alg: "ECDH-ES+A256KW", key }, { typ: "t" }), VerificationError);
});

test("asciiJson writes what Python's json.dumps(ensure_ascii=True) writes", () => {
  assert.equal(asciiJson({ a: "\u00e9\ud83d\ude00\u007f\n\"/", b: 1 }), '{"a":"\\u00e9\\ud83d\\ude00\\u007f\\n\\"/","b":1}');
});

test("a Python-sealed JWE to two recipients opens with either key, through a key list too", { skip: NO_PYTHON }, async () => {
  assert.deepEqual(await decryptGeneral(made.jwe, enc, { typ: JWE_TYP }), PAYLOAD);
  assert.deepEqual(await decryptGeneral(made.jwe, otherEnc, { typ: JWE_TYP }), PAYLOAD);
  assert.deepEqual(await decryptGeneral(JSON.stringify(made.jwe), [{ kid: "retired", key: enc.key }, enc], { typ: JWE_TYP }), PAYLOAD);
  await assert.rejects(decryptGeneral(made.jwe, enc, {}), TypeError);
});

function clone(value) {
  return JSON.parse(JSON.stringify(value));
}

function protectedWith(jwe, change) {
  const copy = clone(jwe);
  copy.protected = segment({ ...JSON.parse(fromUtf8(b64urlDecode(copy.protected))), ...change });
  return copy;
}

function mineOf(jwe) {
  return jwe.recipients.find((entry) => entry.header.kid === enc.kid);
}

test("every tampered JWE gets keys/jose.py's code", { skip: NO_PYTHON }, async () => {
  const jwe = made.jwe;
  const edit = (change) => {
    const copy = clone(jwe);
    change(copy);
    return copy;
  };
  const cases = [
    ["valid", jwe, JWE_TYP, "ok"],
    ["ciphertext byte flipped", edit((j) => (j.ciphertext = flip(j.ciphertext, 10))), JWE_TYP, "invalid_envelope"],
    ["tag flipped", edit((j) => (j.tag = flip(j.tag, 2))), JWE_TYP, "invalid_envelope"],
    ["iv flipped", edit((j) => (j.iv = flip(j.iv, 2))), JWE_TYP, "invalid_envelope"],
    ["wrapped key flipped", edit((j) => (mineOf(j).encrypted_key = flip(mineOf(j).encrypted_key, 4))), JWE_TYP, "invalid_envelope"],
    ["other recipient's wrapped key", edit((j) => (mineOf(j).encrypted_key = j.recipients.find((e) => e !== mineOf(j)).encrypted_key)), JWE_TYP, "invalid_envelope"],
    ["wrapped key truncated", edit((j) => (mineOf(j).encrypted_key = mineOf(j).encrypted_key.slice(0, 43))), JWE_TYP, "invalid_envelope"],
    ["enc A128GCM", protectedWith(jwe, { enc: "A128GCM" }), JWE_TYP, "invalid_envelope"],
    ["recipient alg ECDH-ES", edit((j) => (mineOf(j).header.alg = "ECDH-ES")), JWE_TYP, "invalid_envelope"],
    ["recipient alg RSA-OAEP", edit((j) => (mineOf(j).header.alg = "RSA-OAEP")), JWE_TYP, "invalid_envelope"],
    ["zip protected", protectedWith(jwe, { zip: "DEF" }), JWE_TYP, "compression_not_allowed"],
    ["zip per recipient", edit((j) => (mineOf(j).header.zip = "DEF")), JWE_TYP, "compression_not_allowed"],
    ["typ changed in the protected header", protectedWith(jwe, { typ: "other" }), "other", "invalid_envelope"],
    ["wrong typ expected", jwe, "baton-reveal+jwe", "invalid_envelope"],
    ["protected header with jku", protectedWith(jwe, { jku: "https://x" }), JWE_TYP, "invalid_envelope"],
    ["aad", edit((j) => (j.aad = "AAAA")), JWE_TYP, "invalid_envelope"],
    ["unprotected", edit((j) => (j.unprotected = { cty: "x" })), JWE_TYP, "invalid_envelope"],
    ["extra member", edit((j) => (j.extra = 1)), JWE_TYP, "invalid_envelope"],
    ["missing tag", edit((j) => delete j.tag), JWE_TYP, "invalid_envelope"],
    ["epk off the curve", edit((j) => (mineOf(j).header.epk.y = mineOf(j).header.epk.x)), JWE_TYP, "invalid_envelope"],
    ["epk with d", edit((j) => (mineOf(j).header.epk.d = mineOf(j).header.epk.x)), JWE_TYP, "invalid_envelope"],
    ["epk on P-384", edit((j) => (mineOf(j).header.epk.crv = "P-384")), JWE_TYP, "invalid_envelope"],
    ["not addressed to us", edit((j) => (j.recipients = j.recipients.filter((e) => e.header.kid !== enc.kid))), JWE_TYP, "invalid_envelope"],
    ["two entries for our key", edit((j) => j.recipients.push(clone(mineOf(j)))), JWE_TYP, "invalid_envelope"],
    ["no recipients", edit((j) => (j.recipients = [])), JWE_TYP, "invalid_envelope"],
    ["recipient with an extra member", edit((j) => (mineOf(j).extra = 1)), JWE_TYP, "invalid_envelope"],
    ["padded ciphertext", edit((j) => (j.ciphertext += "=")), JWE_TYP, "invalid_envelope"],
    ["iv of 16 bytes", edit((j) => (j.iv = "A".repeat(22))), JWE_TYP, "invalid_envelope"],
    ["protected not a string", edit((j) => (j.protected = {})), JWE_TYP, "invalid_envelope"],
  ];
  const python = runPython(PYTHON_JOSE, {
    op: "decrypt",
    jwks: made.enc_private,
    cases: cases.map(([, j, typ]) => ({ jwe: j, typ })),
  });
  for (const [index, [name, j, typ, expected]] of cases.entries()) {
    const js = await codeOf(decryptGeneral(j, enc, { typ }));
    assert.equal("ok" in js ? "ok" : js.error, expected, `${name}: JS`);
    assert.equal("ok" in python[index] ? "ok" : python[index].error, expected, `${name}: Python`);
    if ("ok" in js) assert.deepEqual(js.ok, PAYLOAD);
  }
});

test("public JWKS import accepts and refuses what keys/keyset.py does, with the same kids", { skip: NO_PYTHON }, async () => {
  const [ed, es, ecdh] = made.all_public.keys;
  const cases = [
    made.all_public,
    { keys: [{ ...ed, kid: undefined }].map(({ kid, ...rest }) => rest) },
    { keys: [{ kty: es.kty, crv: es.crv, x: es.x, y: es.y, use: "sig" }] },
    { keys: [{ kty: es.kty, crv: es.crv, x: es.x, y: es.y, use: "enc" }] },
    { keys: [{ ...es, d: es.x }] },
    { keys: [{ ...es, kid: "someone-else" }] },
    { keys: [{ ...es, use: "enc" }] },
    { keys: [{ ...es, alg: "RS256" }] },
    { keys: [{ ...ed, alg: "ES256" }] },
    { keys: [{ ...ecdh, alg: "ES256" }] }, // kid stays a thumbprint: the members decide
    { keys: [{ kty: es.kty, crv: es.crv, x: es.x, y: es.y }] },
    { keys: [{ ...es, key_ops: ["verify"] }] },
    { keys: [{ ...es, key_ops: ["encrypt"] }] },
    { keys: [{ ...es, key_ops: ["verify", "verify"] }] },
    { keys: [{ ...es, key_ops: [] }] },
    { keys: [{ ...es, x5c: ["MII"] }] },
    { keys: [{ ...es, y: es.x }] },
    { keys: [{ ...es, x: es.x.slice(0, 42) }] },
    { keys: [{ ...es, crv: "P-384" }] },
    { keys: [{ kty: "RSA", n: "AQAB", e: "AQAB" }] },
    { keys: [{ kty: "oct", k: "AAAA" }] },
    { keys: [es, es] },
    { keys: [] },
    { keys: [es], other: 1 },
    { keys: [1] },
  ];
  const python = runPython(PYTHON_JOSE, { op: "jwks", cases });
  for (const [index, jwks] of cases.entries()) {
    const js = await codeOf(importPublicJwks(jwks));
    const summary = "ok" in js ? { ok: js.ok.map((key) => key.kid) } : js;
    assert.deepEqual(summary, python[index], `case ${index}: ${JSON.stringify(jwks).slice(0, 120)}`);
  }
  const imported = await importPublicJwks(JSON.stringify(made.all_public));
  assert.deepEqual(imported.map((k) => [k.alg, k.use]), [["Ed25519", "sig"], ["ES256", "sig"], ["ECDH-ES+A256KW", "enc"]]);
  assert.equal(await thumbprint(es), es.kid);
});

test("onP256 accepts curve points and refuses others", async () => {
  const pair = await subtle.generateKey(ECDH, true, ["deriveBits"]);
  const jwk = await subtle.exportKey("jwk", pair.publicKey);
  const x = b64urlDecode(jwk.x);
  const y = b64urlDecode(jwk.y);
  assert.ok(onP256(x, y));
  const bad = y.slice();
  bad[31] ^= 1;
  assert.ok(!onP256(x, bad));
  assert.ok(!onP256(new Uint8Array(32).fill(255), y)); // x >= p
});

test("RFC 7518 appendix C: Concat KDF of the example's ECDH-ES agreement", async () => {
  const bob = { kty: "EC", crv: "P-256", x: "weNJy2HscCSM6AEDTDg04biOvhFhyyWvOHQfeF_PxMQ", y: "e8lnCO-AlStT-NJVX-crhB7QRYhiix03illJOVAOyck", d: "VEmDZpDXXK8p8N0Cndsxs924q6nS1RXFASRl6BfUqdw" };
  const epk = { kty: "EC", crv: "P-256", x: "gI0GAILBdu7T53akrFmMyGcsF3n5dO7MmwNBHKW5SV0", y: "SLW_xSffzlPWrHEVI30DHM_4egVwt3NQqeUD7nMFpps" };
  const priv = await subtle.importKey("jwk", bob, ECDH, false, ["deriveBits"]);
  const pub = await subtle.importKey("jwk", epk, ECDH, true, []);
  const z = new Uint8Array(await subtle.deriveBits({ name: "ECDH", public: pub }, priv, 256));
  assert.deepEqual(Array.from(z), [158, 86, 217, 29, 129, 113, 53, 211, 114, 131, 66, 131, 191, 132, 38, 156, 251, 49, 110, 163, 218, 128, 106, 72, 246, 218, 167, 121, 140, 254, 144, 196]);
  const key = await concatKdf(z, { algorithmId: "A128GCM", apu: ascii("Alice"), apv: ascii("Bob"), keyBits: 128 });
  assert.equal(b64urlEncode(key), "VqqN6vgjbSBcIijNcacQGg");
});

const COOKBOOK = `${VECTORS}/rfc7520_cookbook/jwe/5_4.key_agreement_with_key_wrapping_using_ecdh-es_and_aes-keywrap_with_aes-gcm.json`;

test("RFC 7520 s5.4: ECDH-ES+A128KW with A128GCM opens with the same steps (AlgorithmID = alg)", {
  skip: existsSync(COOKBOOK) ? false : `no cookbook example at ${COOKBOOK} (set BATON_VECTORS)`,
}, async () => {
  const example = JSON.parse(readFileSync(COOKBOOK, "utf8"));
  const curve = { name: "ECDH", namedCurve: "P-384" };
  const { key } = example.input;
  const priv = await subtle.importKey("jwk", { kty: key.kty, crv: key.crv, x: key.x, y: key.y, d: key.d }, curve, false, ["deriveBits"]);
  const { epk } = example.encrypting_content.protected;
  const pub = await subtle.importKey("jwk", epk, curve, true, []);
  const z = new Uint8Array(await subtle.deriveBits({ name: "ECDH", public: pub }, priv, 384));
  const kek = await concatKdf(z, { algorithmId: example.input.alg, keyBits: 128 });
  const wrapKey = await subtle.importKey("raw", kek, "AES-KW", false, ["unwrapKey"]);
  const cek = await subtle.unwrapKey("raw", b64urlDecode(example.encrypting_key.encrypted_key), wrapKey, "AES-KW", "AES-GCM", true, ["decrypt"]);
  assert.equal(b64urlEncode(new Uint8Array(await subtle.exportKey("raw", cek))), example.generated.cek);
  const content = example.encrypting_content;
  const plaintext = await subtle.decrypt(
    { name: "AES-GCM", iv: b64urlDecode(example.generated.iv), additionalData: ascii(content.protected_b64u), tagLength: 128 },
    cek,
    new Uint8Array([...b64urlDecode(content.ciphertext), ...b64urlDecode(content.tag)]),
  );
  assert.equal(fromUtf8(new Uint8Array(plaintext)), example.input.plaintext);
});
