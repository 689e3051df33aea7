// RFC 8785 (JCS) canonical JSON, the digests Baton computes over it, and the
// strict JSON parser for text from outside: protocol/canonical.py and
// keys/strictjson.py, in the browser.
//
// canonicalize (RFC 8785 s3.2): object members sorted by the UTF-16 code
// units of their names (s3.2.3; JavaScript's default string order), no
// whitespace, strings with only the mandatory escapes (s3.2.2.2; what
// JSON.stringify writes for a well-formed string), numbers as ECMAScript
// Number.prototype.toString (s3.2.2.3; -0 is "0").
// Invariants, each "invalid_artifact" as protocol/canonical.py raises it:
// - only JSON values: null, booleans, finite numbers, strings, arrays, and
//   plain objects (prototype Object.prototype or null, string keys only, no
//   undefined members, no cycles); anything else is refused, never dropped;
// - numbers stay in I-JSON's exact range (RFC 7493 s2.2): an integral value
//   of magnitude above Number.MAX_SAFE_INTEGER and below 1e21 is refused (the
//   Python refuses such integers and such integral floats alike);
// - no lone surrogates in strings or member names (RFC 7493 s2.1).
//
// parseStrict (RFC 8259, I-JSON RFC 7493), as keys/strictjson.py: duplicate
// member names refused (s2.3), no NaN/Infinity or numbers overflowing to
// infinity, no lone surrogates (escaped or not), no byte-order mark, input
// size capped before parsing ("payload_too_large") and nesting depth capped
// ("too_deep"); everything else "malformed_input". One rule beyond the
// Python parser: an integer literal beyond Number.MAX_SAFE_INTEGER is refused
// here, as it cannot be held exactly (the Python refuses it when it
// canonicalises). A member named "__proto__" is an own property, as with
// JSON.parse.
//
// Digests: "sha256:" + 64 lowercase hex (protocol/canonical.py digest()).
// Every function here is pure (the digests are async: WebCrypto).

import { fromUtf8, utf8 } from "./b64.js";
import { VerificationError } from "./errors.js";

export const DIGEST_PREFIX = "sha256:";
export const DEFAULT_MAX_BYTES = 1 << 20;
export const DEFAULT_MAX_DEPTH = 64;
const DIGEST = /^sha256:[0-9a-f]{64}$/;
const LONE_SURROGATE = /\p{Surrogate}/u;
const MAX_CANONICAL_DEPTH = 512;

function notCanonical(detail) {
  return new VerificationError("invalid_artifact", `value is not canonicalisable JSON: ${detail}`);
}

function canonicalString(text) {
  if (LONE_SURROGATE.test(text)) throw new VerificationError("invalid_artifact", "lone surrogate in a string");
  return JSON.stringify(text);
}

function canonicalNumber(value) {
  if (!Number.isFinite(value)) throw notCanonical("NaN or an infinity");
  if (Number.isInteger(value) && Math.abs(value) > Number.MAX_SAFE_INTEGER && Math.abs(value) < 1e21) {
    throw notCanonical(`number ${value} has no exact I-JSON form`);
  }
  return String(value);
}

function isPlainObject(value) {
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

function serialise(value, out, ancestors) {
  if (value === null) return out.push("null");
  switch (typeof value) {
    case "boolean":
      return out.push(value ? "true" : "false");
    case "number":
      return out.push(canonicalNumber(value));
    case "string":
      return out.push(canonicalString(value));
    case "object":
      break;
    default:
      throw notCanonical(`${typeof value} is not JSON`);
  }
  if (ancestors.has(value)) throw notCanonical("circular reference");
  if (ancestors.size >= MAX_CANONICAL_DEPTH) throw notCanonical("nesting too deep");
  ancestors.add(value);
  if (Array.isArray(value)) {
    out.push("[");
    for (let i = 0; i < value.length; i += 1) {
      if (!Object.hasOwn(value, i)) throw notCanonical("array with a hole");
      if (i > 0) out.push(",");
      serialise(value[i], out, ancestors);
    }
    out.push("]");
  } else {
    if (!isPlainObject(value)) throw notCanonical("not a plain object");
    if (Object.getOwnPropertySymbols(value).length > 0) throw notCanonical("symbol member name");
    const names = Object.keys(value).sort(); // UTF-16 code unit order (s3.2.3)
    out.push("{");
    names.forEach((name, index) => {
      const item = value[name];
      if (item === undefined) throw notCanonical(`member ${JSON.stringify(name)} is undefined`);
      if (index > 0) out.push(",");
      out.push(canonicalString(name), ":");
      serialise(item, out, ancestors);
    });
    out.push("}");
  }
  ancestors.delete(value);
  return out.length;
}

/** RFC 8785 text of a JSON value (pure; throws "invalid_artifact"). */
export function canonicalize(value) {
  const out = [];
  serialise(value, out, new Set());
  return out.join("");
}

/** UTF-8 bytes of canonicalize(value) (pure). */
export function canonicalBytes(value) {
  return utf8(canonicalize(value));
}

function hex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** "sha256:<hex>" of `bytes` (protocol/canonical.py digest()). */
export async function sha256Digest(bytes) {
  if (!(bytes instanceof Uint8Array)) throw new TypeError("sha256Digest takes a Uint8Array");
  return DIGEST_PREFIX + hex(await globalThis.crypto.subtle.digest("SHA-256", bytes));
}

/** sha256Digest(canonicalBytes(value)) (protocol/canonical.py canonical_digest()). */
export async function canonicalDigest(value) {
  return sha256Digest(canonicalBytes(value));
}

/** True for a well-formed "sha256:<64 lowercase hex>" (pure). */
export function isDigest(value) {
  return typeof value === "string" && DIGEST.test(value);
}

// --------------------------------------------------------------------------- strict parse

const NUMBER = /-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/y;
const PLAIN_RUN = /[^"\\\u0000-\u001f]*/y;
const HEX4 = /^[0-9a-fA-F]{4}$/;
const ESCAPES = { '"': '"', "\\": "\\", "/": "/", b: "\b", f: "\f", n: "\n", r: "\r", t: "\t" };

class Parser {
  constructor(text, maxDepth) {
    this.text = text;
    this.at = 0;
    this.depth = 0;
    this.maxDepth = maxDepth;
  }

  error(detail) {
    return new VerificationError("malformed_input", `invalid JSON: ${detail} at ${this.at}`);
  }

  skipWhitespace() {
    const text = this.text;
    let at = this.at;
    for (;;) {
      const c = text.charCodeAt(at);
      if (c !== 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) break;
      at += 1;
    }
    this.at = at;
  }

  value() {
    this.skipWhitespace();
    const c = this.text[this.at];
    switch (c) {
      case "{":
        return this.object();
      case "[":
        return this.array();
      case '"':
        return this.string();
      case "t":
        return this.literal("true", true);
      case "f":
        return this.literal("false", false);
      case "n":
        return this.literal("null", null);
      default:
        if (c === "-" || (c >= "0" && c <= "9")) return this.number();
        throw this.error("expecting a value");
    }
  }

  literal(word, value) {
    if (!this.text.startsWith(word, this.at)) throw this.error("expecting a value");
    this.at += word.length;
    return value;
  }

  enter() {
    this.depth += 1;
    if (this.depth > this.maxDepth) {
      throw new VerificationError("too_deep", `JSON nesting exceeds ${this.maxDepth}`);
    }
    this.at += 1;
  }

  object() {
    this.enter();
    const result = {};
    this.skipWhitespace();
    if (this.text[this.at] === "}") {
      this.at += 1;
      this.depth -= 1;
      return result;
    }
    for (;;) {
      this.skipWhitespace();
      if (this.text[this.at] !== '"') throw this.error("expecting a member name");
      const name = this.string();
      if (Object.hasOwn(result, name)) {
        throw new VerificationError("malformed_input", "duplicate object member name");
      }
      this.skipWhitespace();
      if (this.text[this.at] !== ":") throw this.error("expecting ':'");
      this.at += 1;
      const item = this.value();
      if (name === "__proto__") {
        Object.defineProperty(result, name, { value: item, enumerable: true, writable: true, configurable: true });
      } else {
        result[name] = item;
      }
      this.skipWhitespace();
      const c = this.text[this.at];
      this.at += 1;
      if (c === "}") break;
      if (c !== ",") {
        this.at -= 1;
        throw this.error("expecting ',' or '}'");
      }
    }
    this.depth -= 1;
    return result;
  }

  array() {
    this.enter();
    const result = [];
    this.skipWhitespace();
    if (this.text[this.at] === "]") {
      this.at += 1;
      this.depth -= 1;
      return result;
    }
    for (;;) {
      result.push(this.value());
      this.skipWhitespace();
      const c = this.text[this.at];
      this.at += 1;
      if (c === "]") break;
      if (c !== ",") {
        this.at -= 1;
        throw this.error("expecting ',' or ']'");
      }
    }
    this.depth -= 1;
    return result;
  }

  string() {
    const text = this.text;
    this.at += 1; // the opening quote
    const parts = [];
    for (;;) {
      PLAIN_RUN.lastIndex = this.at;
      PLAIN_RUN.test(text);
      if (PLAIN_RUN.lastIndex > this.at) parts.push(text.slice(this.at, PLAIN_RUN.lastIndex));
      this.at = PLAIN_RUN.lastIndex;
      const c = text[this.at];
      if (c === '"') {
        this.at += 1;
        break;
      }
      if (c === undefined) throw this.error("unterminated string");
      if (c !== "\\") throw this.error("control character in a string");
      const e = text[this.at + 1];
      if (e === "u") {
        const digits = text.slice(this.at + 2, this.at + 6);
        if (!HEX4.test(digits)) throw this.error("invalid \\u escape");
        parts.push(String.fromCharCode(parseInt(digits, 16)));
        this.at += 6;
      } else if (e !== undefined && Object.hasOwn(ESCAPES, e)) {
        parts.push(ESCAPES[e]);
        this.at += 2;
      } else {
        throw this.error("invalid escape");
      }
    }
    const value = parts.length === 1 ? parts[0] : parts.join("");
    // Escapes may write a lone surrogate, or half of a pair next to the
    // other half: the joined value is what must be well formed.
    if (LONE_SURROGATE.test(value)) {
      throw new VerificationError("malformed_input", "lone UTF-16 surrogate in a string");
    }
    return value;
  }

  number() {
    NUMBER.lastIndex = this.at;
    const match = NUMBER.exec(this.text);
    if (match === null) throw this.error("invalid number");
    const value = Number(match[0]);
    if (!Number.isFinite(value)) throw this.error("number overflows to infinity");
    if (match[1] === undefined && match[2] === undefined && !Number.isSafeInteger(value)) {
      throw this.error("integer beyond I-JSON's exact range (RFC 7493 s2.2)");
    }
    this.at = NUMBER.lastIndex;
    return value;
  }
}

/**
 * Parse one JSON text strictly (pure). `input` is a string or UTF-8 bytes;
 * `maxBytes` caps its length (in bytes for bytes, in UTF-16 units for a
 * string: keys/strictjson.py's len()), `maxDepth` the nesting of brackets.
 * @param {string | Uint8Array} input
 * @param {{maxBytes?: number, maxDepth?: number}} [options]
 */
export function parseStrict(input, { maxBytes = DEFAULT_MAX_BYTES, maxDepth = DEFAULT_MAX_DEPTH } = {}) {
  const size = input instanceof Uint8Array ? input.byteLength : input.length;
  if (size > maxBytes) {
    throw new VerificationError("payload_too_large", `JSON text of ${size} bytes exceeds cap ${maxBytes}`);
  }
  let text;
  if (input instanceof Uint8Array) {
    if (input[0] === 0xef && input[1] === 0xbb && input[2] === 0xbf) {
      throw new VerificationError("malformed_input", "JSON text starts with a byte-order mark");
    }
    text = fromUtf8(input);
  } else if (typeof input === "string") {
    if (LONE_SURROGATE.test(input)) throw new VerificationError("malformed_input", "lone UTF-16 surrogate");
    text = input;
  } else {
    throw new TypeError("parseStrict takes a string or a Uint8Array");
  }
  const parser = new Parser(text, maxDepth);
  const value = parser.value();
  parser.skipWhitespace();
  if (parser.at !== text.length) throw parser.error("trailing data after JSON text");
  return value;
}

/** parseStrict, and the value must be an object (keys/strictjson.py loads_object). */
export function parseStrictObject(input, options) {
  const value = parseStrict(input, options);
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new VerificationError("malformed_input", "JSON text is not an object");
  }
  return value;
}
