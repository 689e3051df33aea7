// gateway/web/static/js/keystore.js importOperatorFiles on the files that
// gateway/devdata.py write_operator (what `baton operators add` runs)
// writes: non-extractable keys, the kids of public.jwks, a signature the
// Python verifies, a Python-sealed JWE opened, and refusals where
// keys/keyset.py PrivateKeySet.from_jwks refuses. The IndexedDB functions
// need a browser and are not called here.
// Run: node --test tests/web/js/keystore.test.mjs
import assert from "node:assert/strict";
import { before, test } from "node:test";

import { utf8 } from "../../../gateway/web/static/js/b64.js";
import { VerificationError } from "../../../gateway/web/static/js/errors.js";
import { decryptGeneral, signCompact } from "../../../gateway/web/static/js/jose.js";
import { importOperatorFiles } from "../../../gateway/web/static/js/keystore.js";
import { NO_PYTHON, runPython } from "./python.mjs";

const PYTHON_OPERATOR = `
import base64, datetime as dt, json, sys, tempfile
from pathlib import Path
from gateway.devdata import DataFolder, write_operator
from keys import strictjson
from keys.errors import KeysError
from keys.files import load_jwks
from keys.jose import encrypt_general, verify_compact
from keys.keyset import KeySet, PrivateKeySet

req = strictjson.loads(sys.stdin.read(), max_bytes=1 << 24)
if req["op"] == "make":
    with tempfile.TemporaryDirectory() as tmp:
        folder = DataFolder(Path(tmp))
        write_operator(folder, "alice", now=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
        where = folder.operator("alice")
        public = load_jwks(where / "public.jwks")
        out = {
            "signing": (where / "signing.jwks").read_text("utf-8"),
            "encryption": (where / "encryption.jwks").read_text("utf-8"),
            "public": public.to_jwks(),
            "jwe": encrypt_general(b"sealed for alice", [k for k in public if k.use == "enc"], typ="t+jwe"),
        }
        # A second operator's signing file: a mix of the two must be refused.
        write_operator(folder, "bob", now=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
        out["bob_signing"] = (folder.operator("bob") / "signing.jwks").read_text("utf-8")
elif req["op"] == "verify":
    try:
        verified = verify_compact(req["token"], KeySet.from_jwks(req["public"]), typ="t+jws")
        out = {"ok": base64.b64encode(verified.payload).decode(), "kid": verified.key.kid}
    except KeysError as exc:
        out = {"error": exc.code}
elif req["op"] == "import":
    out = []
    for text in req["cases"]:
        try:
            keyset = PrivateKeySet.from_jwks(strictjson.loads_object(text))
            out.append({"ok": [k.kid for k in (keyset.active, *keyset.retired)]})
        except KeysError as exc:
            out.append({"error": exc.code})
print(json.dumps(out))
`;

let made;
before(() => {
  if (!NO_PYTHON) made = runPython(PYTHON_OPERATOR, { op: "make" });
});

test("the files write_operator writes import as non-extractable keys with public.jwks' kids", { skip: NO_PYTHON }, async () => {
  const keys = await importOperatorFiles(made.signing, made.encryption);
  const byUse = Object.fromEntries(made.public.keys.map((k) => [k.use, k]));
  assert.equal(keys.signing.kid, byUse.sig.kid);
  assert.equal(keys.signing.alg, "ES256");
  assert.equal(keys.encryption.kid, byUse.enc.kid);
  assert.equal(keys.encryption.alg, "ECDH-ES+A256KW");
  assert.deepEqual(keys.signingKeys.map((k) => k.kid), [keys.signing.kid]);
  assert.deepEqual(keys.encryptionKeys.map((k) => k.kid), [keys.encryption.kid]);
  for (const { key } of [keys.signing, keys.encryption]) {
    assert.equal(key.type, "private");
    assert.equal(key.extractable, false);
    await assert.rejects(globalThis.crypto.subtle.exportKey("jwk", key));
    await assert.rejects(globalThis.crypto.subtle.exportKey("pkcs8", key));
  }
  assert.deepEqual(keys.signing.key.usages, ["sign"]);
  assert.deepEqual(keys.encryption.key.usages, ["deriveBits"]);
  assert.ok(Object.isFrozen(keys));
});

test("the imported keys sign what the Python verifies and open what it sealed", { skip: NO_PYTHON }, async () => {
  const keys = await importOperatorFiles(made.signing, made.encryption);
  const token = await signCompact(utf8("from the browser"), keys.signing, { typ: "t+jws" });
  const verified = runPython(PYTHON_OPERATOR, { op: "verify", token, public: made.public });
  assert.equal(Buffer.from(verified.ok, "base64").toString("utf8"), "from the browser");
  assert.equal(verified.kid, keys.signing.kid);
  const opened = await decryptGeneral(made.jwe, keys.encryption, { typ: "t+jwe" });
  assert.equal(Buffer.from(opened).toString("utf8"), "sealed for alice");
});

test("files the Python refuses are refused with invalid_key", { skip: NO_PYTHON }, async () => {
  const signing = JSON.parse(made.signing);
  const encryption = JSON.parse(made.encryption);
  const bob = JSON.parse(made.bob_signing);
  const [s] = signing.keys;
  const [e] = encryption.keys;
  const [b] = bob.keys;
  const variants = [
    // [signing text, encryption text, what]
    [JSON.stringify({ keys: [{ ...s, d: b.d }] }), made.encryption, "d of another key"],
    [JSON.stringify({ keys: [{ ...s, kid: b.kid }] }), made.encryption, "kid of another key"],
    [JSON.stringify({ keys: [{ ...s, x5c: ["MII"] }] }), made.encryption, "extra member"],
    [JSON.stringify({ keys: [{ ...s, d: s.d.slice(0, 42) }] }), made.encryption, "short d"],
    [JSON.stringify({ keys: [{ ...s, d: s.d + "=" }] }), made.encryption, "padded d"],
    [JSON.stringify({ keys: [{ ...s, use: "enc" }] }), made.encryption, "use contradicting alg"],
    [JSON.stringify({ keys: [s, s] }), made.encryption, "duplicate key"],
    [JSON.stringify({ keys: [] }), made.encryption, "no keys"],
    [JSON.stringify({ keys: [s], more: 1 }), made.encryption, "extra top-level member"],
    ['{"keys":[1],"keys":[2]}', made.encryption, "duplicate member name"],
    [JSON.stringify(made.public), made.encryption, "the public file"],
  ];
  const python = runPython(PYTHON_OPERATOR, { op: "import", cases: variants.map(([text]) => text) });
  for (const [index, [text, enc, what]] of variants.entries()) {
    const expected = python[index].error ?? "malformed-by-python";
    if (what === "duplicate member name") assert.equal(expected, "malformed_input", what);
    else assert.equal(expected, "invalid_key", `${what}: Python`);
    await assert.rejects(importOperatorFiles(text, enc), (error) => error instanceof VerificationError && error.code === "invalid_key", what);
  }
  // The Python accepts a set of two distinct keys; so does the import, active first.
  const two = JSON.stringify({ keys: [s, b] });
  const [pyTwo] = runPython(PYTHON_OPERATOR, { op: "import", cases: [two] });
  const keys = await importOperatorFiles(two, made.encryption);
  assert.deepEqual(keys.signingKeys.map((k) => k.kid), pyTwo.ok);
  assert.equal(keys.signing.kid, s.kid);
  // The files swapped: each holds keys of the wrong use.
  await assert.rejects(importOperatorFiles(made.encryption, made.signing), (error) => error.code === "invalid_key");
  await assert.rejects(importOperatorFiles(made.signing, JSON.stringify({ keys: [{ ...e, d: s.d }] })), (error) => error.code === "invalid_key");
  await assert.rejects(importOperatorFiles("not json", made.encryption), (error) => error.code === "invalid_key");
});
