// Strict base64url (RFC 4648 s5, unpadded as RFC 7515 s2 requires) and UTF-8,
// mirroring keys/b64.py.
//
// Invariants (what makes "what was signed is what was sent" hold):
// - b64urlDecode accepts only the canonical encoding of a byte string: no
//   "=", no "+" or "/", no whitespace, no length of 1 mod 4, and no non-zero
//   bits in the unused tail of the last character (two strings never decode
//   to the same bytes); anything else is VerificationError "malformed_input";
// - utf8 refuses strings with lone UTF-16 surrogates (they have no UTF-8
//   form; TextEncoder would silently write U+FFFD); fromUtf8 is fatal on
//   invalid UTF-8 and keeps a leading BOM as U+FEFF (like Python's decode).
// Every function here is pure.

import { VerificationError } from "./errors.js";

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
/** Char code -> 6-bit value, or 255 outside the URL-safe alphabet. */
const VALUES = (() => {
  const table = new Uint8Array(128).fill(255);
  for (let i = 0; i < ALPHABET.length; i += 1) table[ALPHABET.charCodeAt(i)] = i;
  return table;
})();
const LONE_SURROGATE = /\p{Surrogate}/u;

/** Char code of each 6-bit value: the output is built as ASCII bytes, then decoded once. */
const CODES = Uint8Array.from(ALPHABET, (c) => c.charCodeAt(0));
const ASCII_DECODER = new TextDecoder("ascii"); // windows-1252: the same as ASCII on ASCII bytes

/** Unpadded base64url of `bytes` (pure). */
export function b64urlEncode(bytes) {
  if (!(bytes instanceof Uint8Array)) throw new TypeError("b64urlEncode takes a Uint8Array");
  const full = bytes.length - (bytes.length % 3);
  const rest = bytes.length - full;
  const out = new Uint8Array((full / 3) * 4 + (rest === 0 ? 0 : rest + 1));
  let o = 0;
  for (let i = 0; i < full; i += 3) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    out[o++] = CODES[n >>> 18];
    out[o++] = CODES[(n >>> 12) & 63];
    out[o++] = CODES[(n >>> 6) & 63];
    out[o++] = CODES[n & 63];
  }
  if (rest > 0) {
    const n = (bytes[full] << 16) | (rest === 2 ? bytes[full + 1] << 8 : 0);
    out[o++] = CODES[n >>> 18];
    out[o++] = CODES[(n >>> 12) & 63];
    if (rest === 2) out[o++] = CODES[(n >>> 6) & 63];
  }
  return ASCII_DECODER.decode(out);
}

function malformed(detail) {
  return new VerificationError("malformed_input", `base64url: ${detail}`);
}

/**
 * Decode canonical unpadded base64url (pure). `maxLength` caps the encoded
 * length and is checked before any work, as keys/b64.py's `max_len`.
 * @param {string} text
 * @param {{maxLength?: number}} [options]
 * @returns {Uint8Array}
 */
export function b64urlDecode(text, { maxLength } = {}) {
  if (typeof text !== "string") throw malformed("not a string");
  if (maxLength !== undefined && text.length > maxLength) throw malformed("input over size cap");
  const length = text.length;
  for (let i = 0; i < length; i += 1) {
    const code = text.charCodeAt(i);
    if (code >= 128 || VALUES[code] === 255) throw malformed("character outside the URL-safe alphabet");
  }
  const rem = length % 4;
  if (rem === 1) throw malformed("impossible length");
  // The last character of a 2- (3-) character final quantum carries 4 (2)
  // unused low bits, which must be zero.
  if (rem === 2 && (VALUES[text.charCodeAt(length - 1)] & 15) !== 0) throw malformed("non-zero trailing bits");
  if (rem === 3 && (VALUES[text.charCodeAt(length - 1)] & 3) !== 0) throw malformed("non-zero trailing bits");
  const out = new Uint8Array(Math.floor((length * 3) / 4));
  const full = length - rem;
  let o = 0;
  for (let i = 0; i < full; i += 4) {
    const n =
      (VALUES[text.charCodeAt(i)] << 18) |
      (VALUES[text.charCodeAt(i + 1)] << 12) |
      (VALUES[text.charCodeAt(i + 2)] << 6) |
      VALUES[text.charCodeAt(i + 3)];
    out[o++] = n >>> 16;
    out[o++] = (n >>> 8) & 255;
    out[o++] = n & 255;
  }
  if (rem >= 2) {
    const n =
      (VALUES[text.charCodeAt(full)] << 18) |
      (VALUES[text.charCodeAt(full + 1)] << 12) |
      (rem === 3 ? VALUES[text.charCodeAt(full + 2)] << 6 : 0);
    out[o++] = n >>> 16;
    if (rem === 3) out[o++] = (n >>> 8) & 255;
  }
  return out;
}

const ENCODER = new TextEncoder();
const DECODER = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** UTF-8 bytes of `text`; a lone surrogate is "malformed_input" (pure). */
export function utf8(text) {
  if (typeof text !== "string") throw new TypeError("utf8 takes a string");
  if (LONE_SURROGATE.test(text)) {
    throw new VerificationError("malformed_input", "lone UTF-16 surrogate: the text has no UTF-8 form");
  }
  return ENCODER.encode(text);
}

/** The text of UTF-8 `bytes`; invalid UTF-8 is "malformed_input" (pure). */
export function fromUtf8(bytes) {
  if (!(bytes instanceof Uint8Array)) throw new TypeError("fromUtf8 takes a Uint8Array");
  try {
    return DECODER.decode(bytes);
  } catch (error) {
    throw new VerificationError("malformed_input", "text is not valid UTF-8", { cause: error });
  }
}

/** ASCII bytes of an ASCII string (a JOSE signing input, a header); pure. */
export function ascii(text) {
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i += 1) {
    const code = text.charCodeAt(i);
    if (code >= 128) throw new VerificationError("malformed_input", "text is not ASCII");
    out[i] = code;
  }
  return out;
}
