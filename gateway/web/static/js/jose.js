// Strict JOSE in the browser, mirroring keys/jose.py, keys/material.py and
// keys/keyset.py: compact JWS sign (ES256, Ed25519) and verify; public JWKS
// import; general-JSON JWE decrypt, ECDH-ES+A256KW + A256GCM only.
//
// RFCs: JWS RFC 7515 s3.1, s5.2, s7.1 (compact); JWE RFC 7516 s5.2 (decrypt),
// s7.2.1 (general JSON); JWA RFC 7518 s3.4 (ES256 signatures as 64-byte
// r||s, WebCrypto's own form), s4.6 (ECDH-ES, Concat KDF s4.6.2), s4.4
// (AES key wrap, RFC 3394), s5.3 (AES-GCM); Ed25519 per RFC 8037 / RFC 9864
// (the fully specified alg name "Ed25519"); RFC 7638 thumbprint kids; RFC
// 8725 s3.1/s3.11 (algorithm and type pinning).
//
// Invariants, checked in keys/jose.py's order, each failure a
// VerificationError with keys/errors.py's code:
// 1. size caps first ("payload_too_large"), then strict base64url for every
//    segment and strict JSON for every header ("malformed_jws");
// 2. header allow-list: "zip" -> "compression_not_allowed"; "crit"/"b64" ->
//    "unsupported_crit"; jku/x5u/x5c/jwk/x5t/x5t#S256 -> "untrusted_key";
//    anything else unknown -> "unsupported_header";
// 3. "alg" must be a registered signature algorithm ("alg_not_allowed": so
//    "none" and HMAC), "kid" must name one of the caller's keys
//    ("unknown_kid"), and "alg" must equal that key's pinned alg
//    ("alg_mismatch"); "typ" must be the expected one ("wrong_typ");
// 4. only then the signature ("bad_signature").
// JWE: every failure is "invalid_envelope" with one message (the cause in
// `detail`), but "zip" which is "compression_not_allowed"; the recipient
// entry is found by kid, alg and enc are pinned, the ephemeral key is
// checked to be a P-256 point before any ECDH, and the wrapped key must be
// a 256-bit key (40 bytes).
// No function here keeps state; keys are CryptoKey objects the caller owns.

import { ascii, b64urlDecode, b64urlEncode } from "./b64.js";
import { VerificationError } from "./errors.js";
import { parseStrictObject } from "./jcs.js";

export const DEFAULT_MAX_BYTES = 4 << 20;
export const ENCRYPTION_ALG = "ECDH-ES+A256KW";
export const CONTENT_ENCRYPTION = "A256GCM";
export const SIGNING_ALGS = Object.freeze(["Ed25519", "ES256"]);
const MAX_HEADER_B64 = 2048;
const MAX_SIG_B64 = 128;
const MAX_KID = 128;
const MAX_KEYS = 64;
const MAX_RECIPIENTS = 32;
const WRAPPED_KEY_BYTES = 40; // A256KW of a 32-byte CEK (RFC 3394)
const IV_BYTES = 12;
const TAG_BYTES = 16;
const REGISTERED_SIGNATURE_ALGS = new Set([
  "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
  "ES256", "ES384", "ES512", "ES256K", "EdDSA", "Ed25519", "Ed448",
]);
const UNTRUSTED_KEY_HEADERS = new Set(["jku", "x5u", "x5c", "jwk", "x5t", "x5t#S256"]);
const JWS_ALLOWED = new Set(["alg", "kid", "typ", "cty"]);
const JWE_PROTECTED_ALLOWED = new Set(["enc", "typ", "cty"]);
const JWE_RECIPIENT_ALLOWED = new Set(["alg", "kid", "epk"]);
const JWE_MEMBERS = ["ciphertext", "iv", "protected", "recipients", "tag"];
const JWK_MEMBERS = new Set(["kty", "crv", "x", "y", "d", "kid", "alg", "use", "key_ops"]);
const PUBLIC_MEMBERS = { OKP: ["crv", "kty", "x"], EC: ["crv", "kty", "x", "y"] };
const KEY_OPS = {
  sig: ["sign", "verify"],
  enc: ["deriveKey", "deriveBits", "unwrapKey", "wrapKey"],
};
const SIGN_PARAMS = {
  ES256: { name: "ECDSA", hash: "SHA-256" },
  Ed25519: { name: "Ed25519" },
};

const subtle = () => globalThis.crypto.subtle;
const UTF8 = new TextEncoder();

function own(object, name) {
  return Object.hasOwn(object, name);
}

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/** Re-throw a malformed part as `code`, keeping too-large as it is (keys/jose.py). */
function as(code, what, run) {
  try {
    return run();
  } catch (error) {
    if (error instanceof VerificationError && error.code !== code) {
      throw new VerificationError(code, `${what}: ${error.message}`, { cause: error });
    }
    throw error;
  }
}

function decodeHeader(segment, code) {
  return as(code, "header", () =>
    parseStrictObject(b64urlDecode(segment, { maxLength: MAX_HEADER_B64 }), { maxBytes: MAX_HEADER_B64, maxDepth: 4 }),
  );
}

function decodeSegment(segment, name, code, maxLength) {
  if (typeof segment !== "string") throw new VerificationError(code, `${name}: not a string`);
  return as(code, name, () => b64urlDecode(segment, { maxLength }));
}

/** keys/jose.py check_header_names: step 2 of the header comment (pure). */
export function checkHeaderNames(header, allowed) {
  const names = Object.keys(header);
  if (names.includes("zip")) throw new VerificationError("compression_not_allowed", "zip header present");
  if (names.includes("crit") || names.includes("b64")) {
    throw new VerificationError("unsupported_crit", "crit/b64 present: no JOSE extensions are implemented");
  }
  const untrusted = names.filter((name) => UNTRUSTED_KEY_HEADERS.has(name));
  if (untrusted.length > 0) {
    throw new VerificationError("untrusted_key", `header names a key source: ${untrusted.sort()}`);
  }
  const unknown = names.filter((name) => !allowed.has(name));
  if (unknown.length > 0) {
    throw new VerificationError("unsupported_header", `header parameters not allowed: ${unknown.sort()}`);
  }
}

function useOf(alg) {
  return alg === ENCRYPTION_ALG ? "enc" : "sig";
}

function pinnedKey(header, keys) {
  const alg = header.alg;
  if (typeof alg !== "string" || !REGISTERED_SIGNATURE_ALGS.has(alg)) {
    throw new VerificationError("alg_not_allowed", `JWS alg ${JSON.stringify(alg)} is not allowed`);
  }
  const kid = header.kid;
  if (typeof kid !== "string" || kid.length === 0 || kid.length > MAX_KID) {
    throw new VerificationError("unknown_kid", "kid missing, not a string, or too long");
  }
  const key = keys.find((candidate) => candidate.kid === kid);
  if (key === undefined) throw new VerificationError("unknown_kid", "kid not in key set");
  if ((key.use ?? useOf(key.alg)) !== "sig") throw new VerificationError("alg_mismatch", "kid names an encryption key");
  if (alg !== key.alg) throw new VerificationError("alg_mismatch", `JWS alg ${alg} but key is pinned to ${key.alg}`);
  return key;
}

function checkTyp(header, typ, code) {
  if (typ === undefined) throw new TypeError("say which typ to expect (null skips the check)");
  if (typ !== null && header.typ !== typ) {
    throw new VerificationError(code, `typ is ${JSON.stringify(header.typ)}, expected ${JSON.stringify(typ)}`);
  }
}

/**
 * Verify a compact JWS (RFC 7515 s5.2) under the rules of the header comment.
 * @param {string} token
 * @param {Array<{kid: string, alg: string, use?: string, key: CryptoKey}>} keys
 * @param {{typ: string | null, maxBytes?: number}} options typ null skips the type check
 * @returns {Promise<{header: object, payload: Uint8Array, kid: string, alg: string}>}
 */
export async function verifyCompact(token, keys, { typ, maxBytes = DEFAULT_MAX_BYTES } = {}) {
  if (typeof token !== "string") throw new VerificationError("malformed_jws", "compact JWS is not a string");
  if (token.length > maxBytes) {
    throw new VerificationError("payload_too_large", `JOSE object of ${token.length} bytes exceeds cap ${maxBytes}`);
  }
  const parts = token.split(".");
  if (parts.length !== 3) {
    throw new VerificationError("malformed_jws", `compact JWS has ${parts.length} segments, expected 3`);
  }
  const [headerB64, payloadB64, signatureB64] = parts;
  const header = decodeHeader(headerB64, "malformed_jws");
  checkHeaderNames(header, JWS_ALLOWED);
  const key = pinnedKey(header, keys);
  checkTyp(header, typ, "wrong_typ");
  const payload = decodeSegment(payloadB64, "payload", "malformed_jws", maxBytes);
  const signature = decodeSegment(signatureB64, "signature", "malformed_jws", MAX_SIG_B64);
  let valid;
  try {
    // Both segments decoded as base64url: ASCII, whose UTF-8 is itself.
    const input = UTF8.encode(`${headerB64}.${payloadB64}`);
    valid = await subtle().verify(SIGN_PARAMS[key.alg], key.key, signature, input);
  } catch {
    valid = false;
  }
  if (!valid) throw new VerificationError("bad_signature", "JWS signature does not verify");
  return { header, payload, kid: key.kid, alg: key.alg };
}

/** Compact JSON as Python's json.dumps(ensure_ascii=True, separators=(",", ":")) (pure). */
export function asciiJson(value) {
  return JSON.stringify(value).replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/**
 * A compact JWS (RFC 7515 s7.1) with the header keys/jose.py sign_compact
 * writes: {"alg","kid","typ"[,"cty"]}, compact ASCII JSON, in that order.
 * @param {Uint8Array} payload
 * @param {{kid: string, alg: string, key: CryptoKey}} signer a private signing key
 * @param {{typ: string, cty?: string}} options
 */
export async function signCompact(payload, signer, { typ, cty } = {}) {
  if (!(payload instanceof Uint8Array)) throw new TypeError("signCompact signs a Uint8Array");
  if (!SIGNING_ALGS.includes(signer.alg)) throw new VerificationError("invalid_key", "encryption key used to sign");
  if (typeof typ !== "string") throw new TypeError("signCompact needs a typ");
  const header = { alg: signer.alg, kid: signer.kid, typ };
  if (cty !== undefined && cty !== null) header.cty = cty;
  const input = `${b64urlEncode(ascii(asciiJson(header)))}.${b64urlEncode(payload)}`;
  const signature = new Uint8Array(await subtle().sign(SIGN_PARAMS[signer.alg], signer.key, UTF8.encode(input)));
  return `${input}.${b64urlEncode(signature)}`;
}

// --------------------------------------------------------------------------- keys

const P256_P = 2n ** 256n - 2n ** 224n + 2n ** 192n + 2n ** 96n - 1n;
const P256_B = 0x5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604bn;

function bigFrom(bytes) {
  let n = 0n;
  for (const byte of bytes) n = (n << 8n) | BigInt(byte);
  return n;
}

/** True if (x, y) is an affine point of P-256 (SEC 1 s3.2.3.1; invalid-curve defence, pure). */
export function onP256(xBytes, yBytes) {
  const x = bigFrom(xBytes);
  const y = bigFrom(yBytes);
  if (x >= P256_P || y >= P256_P) return false;
  const rhs = (((x * x * x - 3n * x + P256_B) % P256_P) + P256_P) % P256_P;
  return (y * y) % P256_P === rhs;
}

function invalidKey(detail) {
  return new VerificationError("invalid_key", detail);
}

function coordinate(jwk, name) {
  let raw;
  try {
    raw = b64urlDecode(jwk[name]);
  } catch {
    throw invalidKey(`JWK member ${name} is not canonical base64url`);
  }
  if (raw.length !== 32) throw invalidKey(`JWK member ${name} has ${raw.length} bytes, expected 32`);
  return raw;
}

/**
 * keys/material.py _check_shape: the members of a JWK, its type and pinned
 * alg; returns {kty, alg, use} (pure, "invalid_key" otherwise). Point
 * coordinates are decoded and, for P-256, checked to be on the curve.
 */
export function checkJwkShape(jwk) {
  if (!isObject(jwk)) throw invalidKey("JWK is not an object");
  const extra = Object.keys(jwk).filter((name) => !JWK_MEMBERS.has(name));
  if (extra.length > 0) throw invalidKey(`JWK members not allowed: ${extra.sort()}`);
  let kty;
  if (jwk.kty === "OKP" && jwk.crv === "Ed25519") kty = "OKP";
  else if (jwk.kty === "EC" && jwk.crv === "P-256") kty = "EC";
  else throw invalidKey("unsupported key type: only Ed25519 and P-256");
  for (const name of PUBLIC_MEMBERS[kty]) {
    if (typeof jwk[name] !== "string") throw invalidKey(`JWK member ${name} missing or not a string`);
  }
  const { use } = jwk;
  let { alg } = jwk;
  if (own(jwk, "use") && use !== "sig" && use !== "enc") throw invalidKey("JWK use is neither sig nor enc");
  if (own(jwk, "alg") && !SIGNING_ALGS.includes(alg) && alg !== ENCRYPTION_ALG) {
    throw invalidKey(`JWK alg ${alg} is not allowed`);
  }
  if (!own(jwk, "alg") && !own(jwk, "use") && kty === "EC") {
    throw invalidKey("P-256 JWK must state alg or use: it could sign or encrypt");
  }
  if (!own(jwk, "alg")) alg = kty === "OKP" ? "Ed25519" : (use ?? "sig") === "sig" ? "ES256" : ENCRYPTION_ALG;
  if (kty === "OKP" && alg !== "Ed25519") throw invalidKey(`Ed25519 key cannot be used with alg ${alg}`);
  if (kty === "EC" && alg !== "ES256" && alg !== ENCRYPTION_ALG) {
    throw invalidKey(`P-256 key cannot be used with alg ${alg}`);
  }
  const pinnedUse = useOf(alg);
  if (own(jwk, "use") && use !== pinnedUse) throw invalidKey(`JWK use ${use} contradicts alg ${alg}`);
  if (own(jwk, "key_ops")) {
    const ops = jwk.key_ops;
    if (
      !Array.isArray(ops) ||
      ops.length === 0 ||
      new Set(ops).size !== ops.length ||
      !ops.every((op) => KEY_OPS[pinnedUse].includes(op))
    ) {
      throw invalidKey(`JWK key_ops contradict use ${pinnedUse}`);
    }
  }
  const x = coordinate(jwk, "x");
  if (kty === "EC" && !onP256(x, coordinate(jwk, "y"))) throw invalidKey("EC point is not on P-256");
  return { kty, alg, use: pinnedUse };
}

/** RFC 7638 s3 SHA-256 thumbprint of a JWK's required public members, base64url. */
export async function thumbprint(jwk) {
  const members = { crv: jwk.crv, kty: jwk.kty, x: jwk.x }; // RFC 7638 s3.2: in lexicographic order
  if (jwk.kty === "EC") members.y = jwk.y;
  return b64urlEncode(new Uint8Array(await subtle().digest("SHA-256", ascii(asciiJson(members)))));
}

/** The WebCrypto import parameters and usages for a key pinned to `alg`. */
export function importParams(alg, { private: isPrivate }) {
  if (alg === "Ed25519") return [{ name: "Ed25519" }, isPrivate ? ["sign"] : ["verify"]];
  if (alg === "ES256") return [{ name: "ECDSA", namedCurve: "P-256" }, isPrivate ? ["sign"] : ["verify"]];
  return [{ name: "ECDH", namedCurve: "P-256" }, isPrivate ? ["deriveBits"] : []];
}

/** Only the members WebCrypto needs (it refuses some alg/use/key_ops it does not know). */
export function bareJwk(jwk, { private: isPrivate }) {
  const bare = { kty: jwk.kty, crv: jwk.crv, x: jwk.x };
  if (jwk.kty === "EC") bare.y = jwk.y;
  if (isPrivate) bare.d = jwk.d;
  return bare;
}

/**
 * keys/keyset.py KeySet.from_jwks: a JWKS (object or JSON text) of public
 * keys, each checked as keys/material.py PublicKey.from_jwk does (kid, if
 * given, must be the RFC 7638 thumbprint; no private member), imported as
 * WebCrypto keys pinned to their alg. Encryption (ECDH-ES+A256KW) keys come
 * back too, with use "enc" and no usages: they verify nothing.
 * @returns {Promise<Array<{kid: string, alg: string, use: string, key: CryptoKey}>>}
 */
export async function importPublicJwks(jwks) {
  const set = typeof jwks === "string" ? as("invalid_key", "JWKS", () => parseStrictObject(jwks)) : jwks;
  if (!isObject(set) || Object.keys(set).length !== 1 || !own(set, "keys")) {
    throw invalidKey("JWKS must be an object with exactly one member, 'keys'");
  }
  const list = set.keys;
  if (!Array.isArray(list) || list.length === 0) throw invalidKey("JWKS 'keys' must be a non-empty array");
  if (list.length > MAX_KEYS) throw invalidKey(`JWKS holds more than ${MAX_KEYS} keys`);
  const out = [];
  for (const jwk of list) {
    if (!isObject(jwk)) throw invalidKey("JWKS members must be objects");
    if (own(jwk, "d")) throw invalidKey("private key material where a public key was expected");
    const { alg, use } = checkJwkShape(jwk);
    const kid = await thumbprint(jwk);
    if (own(jwk, "kid") && jwk.kid !== kid) throw invalidKey("JWK kid is not the RFC 7638 thumbprint of the key");
    if (out.some((key) => key.kid === kid)) throw invalidKey(`duplicate kid ${kid} in key set`);
    const [params, usages] = importParams(alg, { private: false });
    let key;
    try {
      key = await subtle().importKey("jwk", bareJwk(jwk, { private: false }), params, true, usages);
    } catch (error) {
      throw new VerificationError("invalid_key", "the key does not import", { cause: error });
    }
    out.push(Object.freeze({ kid, alg, use, key }));
  }
  return out;
}

// --------------------------------------------------------------------------- JWE

function envelope(detail, cause) {
  return new VerificationError("invalid_envelope", "the encrypted object could not be opened", { detail, cause });
}

function u32(n) {
  return new Uint8Array([(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255]);
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/**
 * RFC 7518 s4.6.2 Concat KDF (NIST SP 800-56A s5.8.1, SHA-256) of the shared
 * secret `z`: OtherInfo = AlgorithmID || PartyUInfo || PartyVInfo ||
 * SuppPubInfo, each of the first three a 32-bit big-endian length and its
 * octets. For key agreement with key wrapping AlgorithmID is the "alg" value
 * (s4.6.2; what joserfc uses), not the wrap algorithm's name.
 * @param {Uint8Array} z
 * @param {{algorithmId: string, apu?: Uint8Array, apv?: Uint8Array, keyBits: number}} info
 * @returns {Promise<Uint8Array>} keyBits/8 bytes
 */
export async function concatKdf(z, { algorithmId, apu = new Uint8Array(), apv = new Uint8Array(), keyBits }) {
  const id = ascii(algorithmId);
  const otherInfo = concat(u32(id.length), id, u32(apu.length), apu, u32(apv.length), apv, u32(keyBits));
  const rounds = Math.ceil(keyBits / 256);
  const blocks = [];
  for (let counter = 1; counter <= rounds; counter += 1) {
    blocks.push(new Uint8Array(await subtle().digest("SHA-256", concat(u32(counter), z, otherInfo))));
  }
  return concat(...blocks).slice(0, keyBits / 8);
}

function checkEpk(epk) {
  if (!isObject(epk)) throw envelope("epk must be a public P-256 JWK");
  const names = Object.keys(epk).sort();
  if (names.join() !== "crv,kty,x,y") throw envelope("epk must be a public P-256 JWK");
  if (epk.kty !== "EC" || epk.crv !== "P-256") throw envelope("epk is not on P-256");
  if (typeof epk.x !== "string" || typeof epk.y !== "string") throw envelope("epk is not a valid P-256 point");
  let x;
  let y;
  try {
    x = b64urlDecode(epk.x);
    y = b64urlDecode(epk.y);
  } catch (error) {
    throw envelope("epk is not a valid P-256 point", error);
  }
  if (x.length !== 32 || y.length !== 32 || !onP256(x, y)) throw envelope("epk is not a valid P-256 point");
}

/** The structural checks of keys/jose.py _to_flattened; returns our entry and the parts. */
function flatten(obj, recipients, maxBytes) {
  if (own(obj, "unprotected") || own(obj, "aad")) throw envelope("unprotected header or aad present");
  if (Object.keys(obj).sort().join() !== JWE_MEMBERS.join()) {
    throw envelope("general JWE members are not exactly the expected ones");
  }
  if (typeof obj.protected !== "string") throw envelope("protected header is not a string");
  const header = decodeHeader(obj.protected, "invalid_envelope");
  checkHeaderNames(header, JWE_PROTECTED_ALLOWED);
  if (header.enc !== CONTENT_ENCRYPTION) throw envelope("enc is not A256GCM");
  const entries = obj.recipients;
  if (!Array.isArray(entries) || entries.length < 1 || entries.length > MAX_RECIPIENTS) {
    throw envelope("bad recipients array");
  }
  const kids = new Set(recipients.map((key) => key.kid));
  const found = new Map();
  for (const entry of entries) {
    if (!isObject(entry) || Object.keys(entry).sort().join() !== "encrypted_key,header") {
      throw envelope("recipient entry must have 'header' and 'encrypted_key'");
    }
    if (!isObject(entry.header)) throw envelope("recipient header is not an object");
    checkHeaderNames(entry.header, JWE_RECIPIENT_ALLOWED);
    const kid = entry.header.kid;
    if (typeof kid === "string" && kids.has(kid)) {
      if (found.has(kid)) throw envelope("two recipient entries for one key");
      found.set(kid, entry);
    }
  }
  // Our key named in the JWE: the first of `recipients` (active, then retired).
  const recipient = recipients.find((key) => found.has(key.kid));
  if (recipient === undefined) throw envelope("no recipient entry for this key");
  const mine = found.get(recipient.kid);
  if (mine.header.alg !== ENCRYPTION_ALG) throw envelope("recipient alg is not ECDH-ES+A256KW");
  checkEpk(mine.header.epk);
  const parts = {
    encryptedKey: decodeSegment(mine.encrypted_key, "encrypted_key", "invalid_envelope", 64),
    iv: decodeSegment(obj.iv, "iv", "invalid_envelope", 16),
    tag: decodeSegment(obj.tag, "tag", "invalid_envelope", 22),
    ciphertext: decodeSegment(obj.ciphertext, "ciphertext", "invalid_envelope", maxBytes),
  };
  return { protectedB64: obj.protected, header, recipient, epk: mine.header.epk, parts };
}

/**
 * Decrypt a general-JSON JWE (RFC 7516 s5.2, s7.2.1) addressed to
 * `recipient` (one {kid, key} or a list, active key first; key: an ECDH
 * P-256 private CryptoKey with usage deriveBits), as keys/jose.py decrypt:
 * per-recipient alg ECDH-ES+A256KW with a P-256 epk, protected enc A256GCM
 * and typ `typ`, no aad or unprotected header; AAD = ASCII(protected).
 * @param {object | string} jwe
 * @param {{kid: string, key: CryptoKey} | Array<{kid: string, key: CryptoKey}>} recipient
 * @param {{typ: string | null, maxBytes?: number}} options
 * @returns {Promise<Uint8Array>} the plaintext
 */
export async function decryptGeneral(jwe, recipient, { typ, maxBytes = DEFAULT_MAX_BYTES } = {}) {
  if (typ === undefined) throw new TypeError("say which typ to expect (null skips the check)");
  const recipients = Array.isArray(recipient) ? recipient : [recipient];
  let flat;
  try {
    let obj = jwe;
    if (typeof jwe === "string") {
      if (jwe.length > maxBytes) throw new VerificationError("payload_too_large", "JWE over size cap");
      obj = parseStrictObject(jwe, { maxBytes, maxDepth: 8 });
    }
    if (!isObject(obj)) throw envelope("not a general-JSON JWE");
    flat = flatten(obj, recipients, maxBytes);
    checkTyp(flat.header, typ, "invalid_envelope");
  } catch (error) {
    if (error instanceof VerificationError && error.code === "compression_not_allowed") throw error;
    if (error instanceof VerificationError && error.code === "invalid_envelope") throw error;
    if (error instanceof VerificationError) throw envelope(error.detail, error);
    throw error;
  }
  const { parts } = flat;
  if (parts.encryptedKey.length !== WRAPPED_KEY_BYTES) throw envelope("wrapped key is not a 256-bit key");
  if (parts.iv.length !== IV_BYTES || parts.tag.length !== TAG_BYTES) throw envelope("iv or tag of the wrong size");
  try {
    const curve = { name: "ECDH", namedCurve: "P-256" };
    const epkJwk = { kty: "EC", crv: "P-256", x: flat.epk.x, y: flat.epk.y };
    const epk = await subtle().importKey("jwk", epkJwk, curve, true, []);
    const z = new Uint8Array(await subtle().deriveBits({ name: "ECDH", public: epk }, flat.recipient.key, 256));
    const kekBytes = await concatKdf(z, { algorithmId: ENCRYPTION_ALG, keyBits: 256 });
    const kek = await subtle().importKey("raw", kekBytes, "AES-KW", false, ["unwrapKey"]);
    const cek = await subtle().unwrapKey("raw", parts.encryptedKey, kek, "AES-KW", "AES-GCM", false, ["decrypt"]);
    const plaintext = await subtle().decrypt(
      { name: "AES-GCM", iv: parts.iv, additionalData: ascii(flat.protectedB64), tagLength: 128 },
      cek,
      concat(parts.ciphertext, parts.tag),
    );
    return new Uint8Array(plaintext);
  } catch (error) {
    throw envelope(`decryption failed: ${error?.name ?? "error"}`, error);
  }
}
