// gateway/web/static/js/b64.js: strict base64url as keys/b64.py, UTF-8 both ways.
// Run: node --test tests/web/js/b64.test.mjs
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { test } from "node:test";

import { ascii, b64urlDecode, b64urlEncode, fromUtf8, utf8 } from "../../../gateway/web/static/js/b64.js";
import { VerificationError } from "../../../gateway/web/static/js/errors.js";

function refused(run, code = "malformed_input") {
  assert.throws(run, (error) => error instanceof VerificationError && error.code === code);
}

test("encodes and decodes like Node's own base64url at every length 0..300", () => {
  for (let length = 0; length <= 300; length += 1) {
    const bytes = new Uint8Array(randomBytes(length));
    const text = b64urlEncode(bytes);
    assert.equal(text, Buffer.from(bytes).toString("base64url"));
    assert.deepEqual(b64urlDecode(text), bytes);
  }
});

test("a large input (1 MiB + 2) round-trips", () => {
  const bytes = new Uint8Array(randomBytes((1 << 20) + 2));
  const text = b64urlEncode(bytes);
  assert.equal(text, Buffer.from(bytes).toString("base64url"));
  assert.deepEqual(b64urlDecode(text), bytes);
});

test("padding, the standard alphabet, whitespace and non-ASCII are refused", () => {
  for (const bad of ["AA==", "AAA=", "a+bc", "a/bc", "ab c", "ab\nc", "abc\u00e9", "\uff21AAA", "AB.C"]) {
    refused(() => b64urlDecode(bad));
  }
  assert.throws(() => b64urlDecode(42), VerificationError);
});

test("a length of 1 mod 4 is refused", () => {
  refused(() => b64urlDecode("A"));
  refused(() => b64urlDecode("AAAAA"));
});

test("non-zero trailing bits are refused: the final characters keys/b64.py allows, no others", () => {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const lastOf2 = new Set("AQgw");
  const lastOf3 = new Set("AEIMQUYcgkosw048");
  for (const c of alphabet) {
    const two = () => b64urlDecode("A" + c);
    const three = () => b64urlDecode("AA" + c);
    if (lastOf2.has(c)) assert.equal(two().length, 1);
    else refused(two);
    if (lastOf3.has(c)) assert.equal(three().length, 2);
    else refused(three);
  }
});

test("maxLength caps the encoded length before decoding", () => {
  assert.equal(b64urlDecode("AAAA", { maxLength: 4 }).length, 3);
  refused(() => b64urlDecode("AAAAAA", { maxLength: 4 }));
});

test("utf8 and fromUtf8 round-trip every plane and refuse what has no UTF-8 form", () => {
  const text = "a\u00e9\u20ac\ud83d\ude00\uffff\u0000";
  assert.deepEqual(utf8(text), new Uint8Array(Buffer.from(text, "utf8")));
  assert.equal(fromUtf8(utf8(text)), text);
  refused(() => utf8("x\ud800"));
  refused(() => utf8("\udc00y"));
  refused(() => fromUtf8(new Uint8Array([0xc3])));
  refused(() => fromUtf8(new Uint8Array([0xed, 0xa0, 0x80]))); // an encoded surrogate
  refused(() => fromUtf8(new Uint8Array([0xc0, 0xaf]))); // overlong
  assert.equal(fromUtf8(new Uint8Array([0xef, 0xbb, 0xbf, 0x61])), "\ufeffa"); // BOM kept
});

test("ascii refuses non-ASCII text", () => {
  assert.deepEqual(ascii("a.b"), new Uint8Array([97, 46, 98]));
  refused(() => ascii("\u00e9"));
});
