// The operator's private keys in this browser: import the two files
// `baton operators add NAME` writes (.baton/operators/NAME/signing.jwks and
// encryption.jwks, private JWKS, RFC 7517 s5) as non-extractable WebCrypto
// keys, and keep those CryptoKey objects in IndexedDB.
//
// Invariants:
// - each file is checked as keys/keyset.py PrivateKeySet.from_jwks checks it
//   (keys/material.py PrivateKey.from_jwk): exactly {"keys": [...]}, 1..64
//   private JWKs of one use, unique kids, each kid (if stated) the RFC 7638
//   thumbprint; signing.jwks holds signing keys (ES256 or Ed25519),
//   encryption.jwks ECDH-ES+A256KW keys; anything else is "invalid_key";
// - the public members must belong to "d": each signing key signs a probe
//   that its public half verifies, each encryption key agrees on the same
//   secret with a fresh ephemeral key both ways;
// - private keys are imported with extractable = false, from only the members
//   WebCrypto needs (kty, crv, x, y, d): no script, ours included, can read
//   them back; they can only sign (signing) or deriveBits (encryption);
// - the first key of each file is the active one (PrivateKeySet.active);
// - IndexedDB (database "baton-inbox", store "operator-keys", key = operator
//   identity) holds only CryptoKey objects, kids and algs, never JWK text.
// importOperatorFiles keeps no state; saveKeys/loadKeys/forgetKeys are the
// only functions here with an effect (the browser's IndexedDB).

import { b64urlDecode } from "./b64.js";
import { VerificationError } from "./errors.js";
import { parseStrictObject } from "./jcs.js";
import { ENCRYPTION_ALG, bareJwk, checkJwkShape, importParams, thumbprint } from "./jose.js";

export const DATABASE = "baton-inbox";
export const STORE = "operator-keys";
const MAX_KEY_FILE = 1 << 20; // keys/files.py _MAX_KEY_FILE
const MAX_KEYS = 64;
const subtle = () => globalThis.crypto.subtle;
const PROBE = new TextEncoder().encode("baton key import probe");

function invalidKey(message, cause) {
  return new VerificationError("invalid_key", message, cause === undefined ? {} : { cause });
}

function parseJwks(text, file) {
  let jwks;
  try {
    jwks = typeof text === "string" ? parseStrictObject(text, { maxBytes: MAX_KEY_FILE }) : text;
  } catch (error) {
    throw invalidKey(`${file} is not a JSON object: ${error.message}`, error);
  }
  if (jwks === null || typeof jwks !== "object" || Object.keys(jwks).join() !== "keys") {
    throw invalidKey(`${file}: a JWKS must be an object with exactly one member, 'keys'`);
  }
  const list = jwks.keys;
  if (!Array.isArray(list) || list.length === 0) throw invalidKey(`${file}: 'keys' must be a non-empty array`);
  if (list.length > MAX_KEYS) throw invalidKey(`${file} holds more than ${MAX_KEYS} keys`);
  return list;
}

async function consistentSigning(alg, privateKey, publicKey) {
  const [params] = importParams(alg, { private: false });
  const algorithm = params.name === "ECDSA" ? { name: "ECDSA", hash: "SHA-256" } : params;
  const signature = await subtle().sign(algorithm, privateKey, PROBE);
  return subtle().verify(algorithm, publicKey, signature, PROBE);
}

async function consistentAgreement(privateKey, publicKey) {
  const curve = { name: "ECDH", namedCurve: "P-256" };
  const ephemeral = await subtle().generateKey(curve, false, ["deriveBits"]);
  const derive = async (publicHalf, privateHalf) =>
    new Uint8Array(await subtle().deriveBits({ name: "ECDH", public: publicHalf }, privateHalf, 256));
  const ours = await derive(ephemeral.publicKey, privateKey);
  const theirs = await derive(publicKey, ephemeral.privateKey);
  return ours.length === theirs.length && ours.every((byte, i) => byte === theirs[i]);
}

async function importPrivate(jwk, file, wantUse) {
  const { alg, use } = checkJwkShape(jwk);
  if (use !== wantUse) {
    throw invalidKey(`${file} holds a key for ${alg}, not for ${wantUse === "sig" ? "signing" : "encryption"}`);
  }
  if (typeof jwk.d !== "string") throw invalidKey(`${file}: private JWK without 'd'`);
  let d;
  try {
    d = b64urlDecode(jwk.d);
  } catch (error) {
    throw invalidKey(`${file}: JWK member d is not canonical base64url`, error);
  }
  if (d.length !== 32) throw invalidKey(`${file}: JWK member d has ${d.length} bytes, expected 32`);
  const kid = await thumbprint(jwk);
  if (Object.hasOwn(jwk, "kid") && jwk.kid !== kid) {
    throw invalidKey(`${file}: private JWK kid is not the RFC 7638 thumbprint`);
  }
  const [params, privateUsages] = importParams(alg, { private: true });
  const [, publicUsages] = importParams(alg, { private: false });
  let key;
  let publicKey;
  try {
    key = await subtle().importKey("jwk", bareJwk(jwk, { private: true }), params, false, privateUsages);
    publicKey = await subtle().importKey("jwk", bareJwk(jwk, { private: false }), params, true, publicUsages);
  } catch (error) {
    throw invalidKey(`${file}: the key does not import`, error);
  }
  const consistent =
    use === "sig" ? await consistentSigning(alg, key, publicKey) : await consistentAgreement(key, publicKey);
  if (!consistent) throw invalidKey(`${file}: the public members do not match the private key`);
  return Object.freeze({ kid, alg, key });
}

async function importFile(text, file, wantUse) {
  const keys = [];
  for (const jwk of parseJwks(text, file)) {
    const key = await importPrivate(jwk, file, wantUse);
    if (keys.some((other) => other.kid === key.kid)) throw invalidKey(`${file}: duplicate kid in private key set`);
    keys.push(key);
  }
  return keys;
}

/**
 * Import signing.jwks and encryption.jwks (their text, as read from the
 * files) as non-extractable keys. `signing` and `encryption` are the active
 * keys; `signingKeys` and `encryptionKeys` every key, active first (retired
 * encryption keys still open older bundles: pass the list to decryptGeneral).
 * @returns {Promise<{signing: {kid, alg, key}, encryption: {kid, alg, key},
 *   signingKeys: Array<{kid, alg, key}>, encryptionKeys: Array<{kid, alg, key}>}>}
 */
export async function importOperatorFiles(signingJwksText, encryptionJwksText) {
  const signingKeys = await importFile(signingJwksText, "signing.jwks", "sig");
  const encryptionKeys = await importFile(encryptionJwksText, "encryption.jwks", "enc");
  if (encryptionKeys.some((key) => key.alg !== ENCRYPTION_ALG)) throw invalidKey("encryption.jwks: not ECDH-ES+A256KW");
  return Object.freeze({
    signing: signingKeys[0],
    encryption: encryptionKeys[0],
    signingKeys: Object.freeze(signingKeys),
    encryptionKeys: Object.freeze(encryptionKeys),
  });
}

// --------------------------------------------------------------------------- IndexedDB
// Browser only (IndexedDB does not exist in Node): the Node tests do not call these.

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function openDatabase() {
  const req = globalThis.indexedDB.open(DATABASE, 1);
  req.onupgradeneeded = () => {
    if (!req.result.objectStoreNames.contains(STORE)) req.result.createObjectStore(STORE);
  };
  return request(req);
}

async function withStore(mode, run) {
  const db = await openDatabase();
  try {
    const tx = db.transaction(STORE, mode);
    const done = new Promise((resolve, reject) => {
      tx.oncomplete = resolve;
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error ?? new Error("IndexedDB transaction aborted"));
    });
    const result = await request(run(tx.objectStore(STORE)));
    await done;
    return result;
  } finally {
    db.close();
  }
}

function record(entry) {
  return { kid: entry.kid, alg: entry.alg, key: entry.key };
}

/** Keep `keys` (importOperatorFiles' answer) for `identity` ("operator:<name>"). */
export async function saveKeys(identity, keys) {
  if (!(keys.signing?.key instanceof CryptoKey) || !(keys.encryption?.key instanceof CryptoKey)) {
    throw new TypeError("saveKeys stores imported CryptoKeys only");
  }
  if (keys.signing.key.extractable || keys.encryption.key.extractable) {
    throw new TypeError("saveKeys stores non-extractable keys only");
  }
  const value = {
    identity,
    signing: record(keys.signing),
    encryption: record(keys.encryption),
    signingKeys: (keys.signingKeys ?? [keys.signing]).map(record),
    encryptionKeys: (keys.encryptionKeys ?? [keys.encryption]).map(record),
  };
  await withStore("readwrite", (store) => store.put(value, identity));
}

/** The keys kept for `identity`, or null. */
export async function loadKeys(identity) {
  const value = await withStore("readonly", (store) => store.get(identity));
  if (!value || value.identity !== identity) return null;
  return value;
}

/** Remove the keys kept for `identity` (nothing if there are none). */
export async function forgetKeys(identity) {
  await withStore("readwrite", (store) => store.delete(identity));
}
