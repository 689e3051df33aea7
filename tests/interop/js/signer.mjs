// A fetch for the official JavaScript SDKs that calls the Baton gateway as an agent:
// a TLS 1.3 client certificate (undici Agent) and an RFC 9421 signature on every request.
//
// The profile is the one keys/httpsig.py verifies and adapters/agent/signer.py produces:
//
// * Content-Digest (RFC 9530 s2, sha-256) over the exact body bytes sent, when there is a body;
// * one signature labelled "baton" (RFC 9421 s4.1, s4.2) over "@method", "@target-uri",
//   "@authority" (s2.2.1-3), "content-digest" with a body, then each of mcp-method, mcp-name,
//   a2a-version that the request carries (the routing headers the gateway requires covered);
// * parameters in the order created, keyid (the key's RFC 7638 thumbprint), nonce (128 fresh
//   random bits, base64url), alg ("ed25519", or "ecdsa-p256-sha256" for a P-256 key) (s2.3);
// * sf-strings quoted per RFC 8941 s4.1.6; the signature as an sf-binary, standard base64.
//
// Invariants:
// * The target URI signed is the one on the wire: undici sends Host = url.host and the request
//   target url.pathname + url.search, and the gateway rebuilds https://{Host}{raw path}. So
//   only https URLs are signed (anything else would never verify).
// * A body is signed only when its bytes are known before sending: string, Uint8Array (any
//   ArrayBufferView), ArrayBuffer, Blob, URLSearchParams. Streams, async iterables and FormData
//   (whose multipart bytes fetch generates) are refused with a TypeError before anything is sent.
// * The bytes digested are the bytes sent: the body is handed to undici as that Uint8Array.
// * Signature, Signature-Input and Content-Digest given by the caller are replaced.

import { createHash, createPrivateKey, createPublicKey, randomBytes, sign } from "node:crypto";
import { Agent, fetch as undiciFetch, Headers } from "undici";

export const SIGNATURE_LABEL = "baton";
export const BASE_COMPONENTS = Object.freeze(["@method", "@target-uri", "@authority"]);
export const DEFAULT_COVER = Object.freeze(["mcp-method", "mcp-name", "a2a-version"]);

const OWN_FIELDS = ["content-digest", "signature", "signature-input"];
// Fetch spec "normalize a method": these six are uppercased, every other method kept as given.
const NORMALIZED_METHODS = new Set(["DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT"]);
// RFC 9110 s9.1 method = token.
const METHOD_TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// keys/httpsig.py _BAD_FIELD_CHAR: anything but HTAB and printable ASCII.
const BAD_FIELD_CHAR = /[^\t\x20-\x7e]/;
// RFC 7638 s3.2 required members, and RFC 9421 s3.3 algorithm names, per key type.
const KEY_PROFILES = {
  "OKP/Ed25519": { members: ["crv", "kty", "x"], alg: "ed25519", nodeAlg: null, dsa: undefined },
  "EC/P-256": {
    members: ["crv", "kty", "x", "y"],
    alg: "ecdsa-p256-sha256",
    nodeAlg: "sha256",
    dsa: "ieee-p1363", // RFC 9421 s3.3.4: 64-byte r||s
  },
};

/** RFC 7638 s3 SHA-256 thumbprint, base64url: what keys.material uses as kid. */
export function thumbprint(jwk) {
  const profile = KEY_PROFILES[`${jwk.kty}/${jwk.crv}`];
  if (!profile) throw new TypeError(`no thumbprint rule for kty ${jwk.kty} crv ${jwk.crv}`);
  const canonical = "{" + profile.members.map((m) => `${JSON.stringify(m)}:${JSON.stringify(jwk[m])}`).join(",") + "}";
  return createHash("sha256").update(canonical, "ascii").digest("base64url");
}

/** Import the agent's private signing JWK; check it is whole and its kid is its thumbprint. */
export function importSigningKey(jwk) {
  if (jwk === null || typeof jwk !== "object") throw new TypeError("signingJwk must be a JWK object");
  const profile = KEY_PROFILES[`${jwk.kty}/${jwk.crv}`];
  if (!profile) throw new TypeError(`unsupported signing key: kty ${jwk.kty} crv ${jwk.crv}`);
  if (typeof jwk.d !== "string") throw new TypeError("signingJwk is a public key: it has no 'd'");
  if (jwk.use !== undefined && jwk.use !== "sig") throw new TypeError("signingJwk is not a signing key");
  const privateKey = createPrivateKey({ key: jwk, format: "jwk" });
  const derived = createPublicKey(privateKey).export({ format: "jwk" });
  for (const member of profile.members) {
    if (derived[member] !== jwk[member]) {
      throw new TypeError(`signingJwk: public member ${member} does not match the private key`);
    }
  }
  const keyid = thumbprint(jwk);
  if (jwk.kid !== undefined && jwk.kid !== keyid) {
    throw new TypeError("signingJwk kid is not its RFC 7638 thumbprint");
  }
  return { privateKey, keyid, alg: profile.alg, nodeAlg: profile.nodeAlg, dsa: profile.dsa };
}

/** RFC 9530 s2 Content-Digest value for `bytes`. */
export function contentDigest(bytes) {
  return `sha-256=:${createHash("sha256").update(bytes).digest("base64")}:`;
}

/** RFC 8941 s4.1.6 sf-string: printable ASCII, with `"` and `\` escaped. */
function sfString(value) {
  if (typeof value !== "string" || !/^[\x20-\x7e]*$/.test(value)) {
    throw new TypeError(`signature parameter ${JSON.stringify(value)} is not printable ASCII`);
  }
  return `"${value.replace(/[\\"]/g, (c) => "\\" + c)}"`;
}

function isStreamLike(body) {
  return (
    (typeof ReadableStream !== "undefined" && body instanceof ReadableStream) ||
    typeof body.getReader === "function" ||
    typeof body.pipe === "function" ||
    typeof body[Symbol.asyncIterator] === "function"
  );
}

/**
 * The exact bytes fetch would send for `body`, and the Content-Type fetch would default to.
 * Refuses bodies whose bytes are unknown before sending (fetch spec "extract a body").
 */
async function bodyBytes(body) {
  if (body === undefined || body === null) return { bytes: null, type: null };
  if (typeof body === "string") {
    return { bytes: new TextEncoder().encode(body), type: "text/plain;charset=UTF-8" };
  }
  if (body instanceof ArrayBuffer) return { bytes: new Uint8Array(body.slice(0)), type: null };
  if (ArrayBuffer.isView(body)) {
    const view = new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
    return { bytes: new Uint8Array(view), type: null }; // a copy: what is digested is what is sent
  }
  if (body instanceof URLSearchParams) {
    return {
      bytes: new TextEncoder().encode(body.toString()),
      type: "application/x-www-form-urlencoded;charset=UTF-8",
    };
  }
  if (typeof Blob !== "undefined" && body instanceof Blob) {
    return { bytes: new Uint8Array(await body.arrayBuffer()), type: body.type || null };
  }
  if (typeof FormData !== "undefined" && body instanceof FormData) {
    throw new TypeError(
      "signed fetch: cannot sign a FormData body (fetch generates its multipart bytes); " +
        "encode it yourself and pass the bytes",
    );
  }
  if (isStreamLike(body)) {
    throw new TypeError(
      "signed fetch: cannot sign a streaming request body (its bytes are not known before " +
        "sending); pass the body as a string, Uint8Array or ArrayBuffer",
    );
  }
  throw new TypeError(`signed fetch: unsupported body type ${Object.prototype.toString.call(body)}`);
}

/** Method as fetch sends it (fetch spec "normalize"), checked to be an RFC 9110 token. */
function normalizeMethod(method) {
  const given = method === undefined ? "GET" : String(method);
  const upper = given.toUpperCase();
  const normalized = NORMALIZED_METHODS.has(upper) ? upper : given;
  if (!METHOD_TOKEN.test(normalized)) throw new TypeError(`method ${given} is not an HTTP token`);
  return normalized;
}

/**
 * RFC 9421 s2.5 signature base and the Signature-Input / Signature values (s3.1, s4).
 * `request` is {method, url: URL, headers: Headers}; `key` from importSigningKey.
 */
export function signRequest(request, key, { created, nonce, cover = DEFAULT_COVER } = {}) {
  const { method, url, headers } = request;
  const hasDigest = headers.has("content-digest");
  const extra = cover.filter((name) => headers.has(name));
  const components = [...BASE_COMPONENTS, ...(hasDigest ? ["content-digest"] : []), ...extra];
  const authority = url.host.toLowerCase(); // WHATWG URL drops the scheme's default port
  const values = {
    "@method": method,
    "@target-uri": `${url.protocol}//${authority}${url.pathname || "/"}${url.search}`,
    "@authority": authority,
  };
  const lines = components.map((name) => {
    let value = values[name];
    if (value === undefined) {
      value = headers.get(name); // Headers already strips and joins lines with ", " (s2.1)
      if (BAD_FIELD_CHAR.test(value)) {
        throw new TypeError(`covered header ${name} holds control or non-ASCII characters`);
      }
    }
    return `"${name}": ${value}\n`;
  });
  const params =
    "(" + components.map((name) => `"${name}"`).join(" ") + ")" +
    `;created=${created}` +
    `;keyid=${sfString(key.keyid)}` +
    `;nonce=${sfString(nonce)}` +
    `;alg=${sfString(key.alg)}`;
  const base = lines.join("") + `"@signature-params": ${params}`;
  const signature = sign(key.nodeAlg, Buffer.from(base, "ascii"), {
    key: key.privateKey,
    dsaEncoding: key.dsa,
  });
  return {
    components,
    base,
    signatureInput: `${SIGNATURE_LABEL}=${params}`,
    signature: `${SIGNATURE_LABEL}=:${signature.toString("base64")}:`,
  };
}

function resolveInput(input) {
  if (typeof input === "string" || input instanceof URL) return { url: new URL(input), from: {} };
  if (input && typeof input === "object" && typeof input.url === "string") {
    // A Request: its body is a stream whose bytes we would have to drain; refuse it.
    if (input.body !== null && input.body !== undefined) {
      throw new TypeError(
        "signed fetch: a Request object with a body cannot be signed; call fetch(url, {body})",
      );
    }
    return {
      url: new URL(input.url),
      from: { method: input.method, headers: input.headers, signal: input.signal },
    };
  }
  throw new TypeError("signed fetch: input must be a URL, a string or a Request");
}

/**
 * A fetch-compatible function for agent traffic to the gateway.
 *
 * @param {{certPem: string|Buffer, keyPem: string|Buffer, caPem: string|Buffer,
 *          signingJwk: object, clock?: () => number, nonce?: () => string,
 *          cover?: string[]}} options
 * @returns {typeof fetch & {dispatcher: Agent, keyid: string, close: () => Promise<void>}}
 */
export function makeSignedFetch({ certPem, keyPem, caPem, signingJwk, clock, nonce, cover }) {
  if (!certPem || !keyPem || !caPem) throw new TypeError("certPem, keyPem and caPem are required");
  const key = importSigningKey(signingJwk);
  const now = clock ?? (() => Date.now() / 1000);
  const freshNonce = nonce ?? (() => randomBytes(16).toString("base64url"));
  const covered = [...(cover ?? DEFAULT_COVER)];
  const dispatcher = new Agent({
    connect: { cert: certPem, key: keyPem, ca: caPem, minVersion: "TLSv1.3", ALPNProtocols: ["http/1.1"] },
  });

  async function signedFetch(input, init = {}) {
    const { url, from } = resolveInput(input);
    if (url.protocol !== "https:") {
      throw new TypeError(`signed fetch: ${url.protocol} URL; the gateway verifies https://{Host}{path}`);
    }
    url.hash = "";
    const method = normalizeMethod(init.method ?? from.method);
    const headers = new Headers(init.headers ?? from.headers);
    for (const name of OWN_FIELDS) headers.delete(name);
    const { bytes, type } = await bodyBytes(init.body);
    if (bytes !== null && type !== null && !headers.has("content-type")) {
      headers.set("content-type", type);
    }
    if (bytes !== null && bytes.byteLength > 0) headers.set("content-digest", contentDigest(bytes));
    const signed = signRequest({ method, url, headers }, key, {
      created: Math.floor(now()),
      nonce: freshNonce(),
      cover: covered,
    });
    headers.set("signature-input", signed.signatureInput);
    headers.set("signature", signed.signature);
    const { body: _ignored, dispatcher: _theirs, ...rest } = init;
    return undiciFetch(url, {
      ...rest,
      signal: init.signal ?? from.signal,
      method,
      headers,
      body: bytes,
      // A redirect would not be re-signed and the gateway never redirects: never follow one.
      redirect: init.redirect === "error" ? "error" : "manual",
      dispatcher,
    });
  }

  signedFetch.dispatcher = dispatcher;
  signedFetch.keyid = key.keyid;
  signedFetch.close = () => dispatcher.close();
  return signedFetch;
}

/**
 * The agent's material from files named by environment variables, as the interop tests pass it:
 * BATON_CERT, BATON_KEY, BATON_CA (PEM) and BATON_SIGNING_JWK (one private JWK, JSON).
 */
export async function signedFetchFromEnv(env = process.env) {
  const { readFile } = await import("node:fs/promises");
  const names = ["BATON_CERT", "BATON_KEY", "BATON_CA", "BATON_SIGNING_JWK"];
  const missing = names.filter((name) => !env[name]);
  if (missing.length) throw new Error(`missing environment variables: ${missing.join(", ")}`);
  const [certPem, keyPem, caPem, jwkText] = await Promise.all(
    names.map((name) => readFile(env[name], "utf8")),
  );
  return makeSignedFetch({ certPem, keyPem, caPem, signingJwk: JSON.parse(jwkText) });
}
