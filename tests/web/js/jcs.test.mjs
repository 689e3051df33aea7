// gateway/web/static/js/jcs.js: RFC 8785 against the RFC's own examples and
// against protocol/canonical.py; parseStrict against keys/strictjson.py on
// the JSONTestSuite files (../shared/vectors) and on crafted inputs.
// Run: node --test tests/web/js/jcs.test.mjs
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { test } from "node:test";

import { VerificationError } from "../../../gateway/web/static/js/errors.js";
import {
  canonicalBytes,
  canonicalDigest,
  canonicalize,
  isDigest,
  parseStrict,
  parseStrictObject,
  sha256Digest,
} from "../../../gateway/web/static/js/jcs.js";
import { NO_PYTHON, REPO, runPython } from "./python.mjs";

const VECTORS = process.env.BATON_VECTORS ?? `${REPO}../shared/vectors`;
const SUITE = `${VECTORS}/json_test_suite/test_parsing`;

function refused(run, code) {
  assert.throws(run, (error) => error instanceof VerificationError && error.code === code, `expected ${code}`);
}

function fromIeeeHex(hex) {
  return new DataView(new Uint8Array(hex.match(/../g).map((h) => parseInt(h, 16))).buffer).getFloat64(0);
}

test("RFC 8785 appendix B: number serialisation (integral values beyond 2^53 refused, as Baton does)", () => {
  const samples = [
    ["0000000000000000", "0"],
    ["8000000000000000", "0"],
    ["0000000000000001", "5e-324"],
    ["8000000000000001", "-5e-324"],
    ["7fefffffffffffff", "1.7976931348623157e+308"],
    ["ffefffffffffffff", "-1.7976931348623157e+308"],
    ["4340000000000000", null], // 9007199254740992: no exact I-JSON form
    ["c340000000000000", null],
    ["4430000000000000", null], // 295147905179352830000
    ["7fffffffffffffff", null], // NaN
    ["7ff0000000000000", null], // Infinity
    ["44b52d02c7e14af5", "9.999999999999997e+22"],
    ["44b52d02c7e14af6", "1e+23"],
    ["44b52d02c7e14af7", "1.0000000000000001e+23"],
    ["444b1ae4d6e2ef4e", null], // 999999999999999700000
    ["444b1ae4d6e2ef4f", null],
    ["444b1ae4d6e2ef50", "1e+21"],
    ["3eb0c6f7a0b5ed8c", "9.999999999999997e-7"],
    ["3eb0c6f7a0b5ed8d", "0.000001"],
    ["41b3de4355555553", "333333333.3333332"],
    ["41b3de4355555554", "333333333.33333325"],
    ["41b3de4355555555", "333333333.3333333"],
    ["41b3de4355555556", "333333333.3333334"],
    ["41b3de4355555557", "333333333.33333343"],
    ["becbf647612f3696", "-0.0000033333333333333333"],
    ["43143ff3c1cb0959", "1424953923781206.2"],
  ];
  for (const [hex, expected] of samples) {
    const value = fromIeeeHex(hex);
    if (expected === null) refused(() => canonicalize(value), "invalid_artifact");
    else assert.equal(canonicalize(value), expected, hex);
  }
});

test("RFC 8785 s3.2.2: the example object", () => {
  const input =
    '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],' +
    ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/", "literals": [null, true, false]}';
  assert.equal(
    canonicalize(parseStrict(input)),
    '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],' +
      '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}',
  );
});

test("RFC 8785 s3.2.3: members sorted by UTF-16 code units", () => {
  const value = {
    "\u20ac": "Euro Sign",
    "\r": "Carriage Return",
    "\ufb33": "Hebrew Letter Dalet With Dagesh",
    1: "One",
    "\ud83d\ude00": "Emoji: Grinning Face",
    "\u0080": "Control",
    "\u00f6": "Latin Small Letter O With Diaeresis",
  };
  assert.equal(
    canonicalize(value),
    '{"\\r":"Carriage Return","1":"One","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis",' +
      '"\u20ac":"Euro Sign","\ud83d\ude00":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}',
  );
  assert.ok(canonicalize(value).startsWith('{"\\r":"Carriage Return","1":"One","\u0080":'));
});

test("RFC 8785 s3.2.2.2: every control character has its mandatory escape, nothing else is escaped", () => {
  const short = { 8: "\\b", 9: "\\t", 10: "\\n", 12: "\\f", 13: "\\r" };
  for (let c = 0; c < 0x20; c += 1) {
    const expected = short[c] ?? `\\u00${c.toString(16).padStart(2, "0")}`;
    assert.equal(canonicalize(String.fromCharCode(c)), `"${expected}"`);
  }
  assert.equal(canonicalize('"\\/\u007f\u2028\ufeff'), '"\\"\\\\/\u007f\u2028\ufeff"');
});

test("values JCS cannot represent are refused, never dropped", () => {
  class Thing {}
  const cycle = [];
  cycle.push(cycle);
  const sparse = [1, , 3]; // eslint-disable-line no-sparse-arrays
  for (const bad of [
    NaN,
    Infinity,
    -Infinity,
    1e16,
    -(2 ** 53),
    undefined,
    () => 1,
    10n,
    Symbol("s"),
    new Map(),
    new Date(0),
    new Thing(),
    new Uint8Array(2),
    { a: undefined },
    [undefined],
    sparse,
    cycle,
    "\ud800",
    "a\udfffb",
    { "\ud800": 1 },
    { [Symbol("s")]: 1 },
  ]) {
    refused(() => canonicalize(bad), "invalid_artifact");
  }
  assert.equal(canonicalize(Object.assign(Object.create(null), { b: 1, a: [] })), '{"a":[],"b":1}');
  assert.equal(canonicalize([2 ** 53 - 1, -(2 ** 53 - 1), -0, 1e21, 5e-324]), "[9007199254740991,-9007199254740991,0,1e+21,5e-324]");
});

test("canonicalBytes is UTF-8, digests are sha256:<hex> as protocol/canonical.py", async () => {
  assert.deepEqual(canonicalBytes({ "\u00e9": "\ud83d\ude00" }), new Uint8Array(Buffer.from('{"é":"😀"}', "utf8")));
  // sha256 of the empty string and of "{}" (FIPS 180-4 well-known values).
  assert.equal(await sha256Digest(new Uint8Array()), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  assert.equal(await canonicalDigest({}), "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a");
  assert.ok(isDigest(await canonicalDigest([1])));
  assert.ok(!isDigest("sha256:" + "A".repeat(64)) && !isDigest("sha512:" + "a".repeat(64)) && !isDigest(7));
});

test("parseStrict refuses what keys/strictjson.py refuses", () => {
  const cases = [
    ['{"a":1,"a":2}', "malformed_input"],
    ['{"a":1,"b":{"c":1,"c":1}}', "malformed_input"],
    ['{"\\u0061":1,"a":2}', "malformed_input"], // the same name, escaped
    ["[NaN]", "malformed_input"],
    ["[Infinity]", "malformed_input"],
    ["[-Infinity]", "malformed_input"],
    ["[1e400]", "malformed_input"],
    ["[-1e400]", "malformed_input"],
    ['["\\ud800"]', "malformed_input"],
    ['["\\udc00\\ud800"]', "malformed_input"],
    ['{"\\udfff":1}', "malformed_input"],
    ["[\ud800]", "malformed_input"],
    ["[01]", "malformed_input"],
    ["[1.]", "malformed_input"],
    ["[.5]", "malformed_input"],
    ["[+1]", "malformed_input"],
    ["[1,]", "malformed_input"],
    ['{"a":1,}', "malformed_input"],
    ["{'a':1}", "malformed_input"],
    ['["a\tb"]', "malformed_input"],
    ['["\\x41"]', "malformed_input"],
    ['["\\u00g0"]', "malformed_input"],
    ["[1] [2]", "malformed_input"],
    ["", "malformed_input"],
    ["\ufeff[]", "malformed_input"],
    ["[9007199254740992]", "malformed_input"],
    ["[-9007199254740992]", "malformed_input"],
    ["[" + "[".repeat(64) + "]".repeat(64) + "]", "too_deep"],
  ];
  for (const [text, code] of cases) refused(() => parseStrict(text), code);
  refused(() => parseStrict(new Uint8Array([0xef, 0xbb, 0xbf, 0x5b, 0x5d])), "malformed_input");
  refused(() => parseStrict(new Uint8Array([0x22, 0xff, 0x22])), "malformed_input");
  refused(() => parseStrict("[1]", { maxBytes: 2 }), "payload_too_large");
  refused(() => parseStrict("[[1]]", { maxDepth: 1 }), "too_deep");
  refused(() => parseStrictObject("[]"), "malformed_input");
});

test("parseStrict keeps what it accepts exact", () => {
  assert.deepEqual(parseStrict(' {"a" : [1, -0, 2.5e3, true, false, null, "\\ud83d\\ude00\\/"]}\n\t\r'), {
    a: [1, -0, 2500, true, false, null, "\ud83d\ude00/"],
  });
  assert.equal(parseStrict("[" + "[".repeat(63) + "]".repeat(63) + "]").length, 1);
  assert.equal(parseStrict("[9007199254740991]")[0], 2 ** 53 - 1);
  assert.equal(parseStrict("[1e16]")[0], 1e16); // a float: parsed; canonicalize refuses it
  const proto = parseStrict('{"__proto__":{"polluted":1},"constructor":2}');
  assert.ok(Object.hasOwn(proto, "__proto__") && Object.getPrototypeOf(proto) === Object.prototype);
  assert.equal({}.polluted, undefined);
  assert.equal(canonicalize(proto), '{"__proto__":{"polluted":1},"constructor":2}');
  assert.deepEqual(parseStrict(new Uint8Array(Buffer.from('"\u00e9"', "utf8"))), "\u00e9");
  assert.deepEqual(parseStrictObject("{}"), {});
});

// --------------------------------------------------------------------------- against the Python

const CANONICALISE = `
import base64, sys
from keys import strictjson
from keys.errors import KeysError
from protocol.canonical import canonical_json
from protocol.errors import BatonError
out = []
for text in strictjson.loads(sys.stdin.read(), max_bytes=1 << 26, max_depth=4):
    try:
        value = strictjson.loads(base64.b64decode(text), max_bytes=1 << 22)
    except KeysError as exc:
        out.append({"parse": exc.code})
        continue
    try:
        out.append({"canonical": base64.b64encode(canonical_json(value)).decode()})
    except BatonError as exc:
        out.append({"canonical_error": exc.code})
print(strictjson.__name__ and __import__("json").dumps(out))
`;

function jsVerdict(bytes) {
  let value;
  try {
    value = parseStrict(bytes, { maxBytes: 1 << 22 });
  } catch (error) {
    if (!(error instanceof VerificationError)) throw error;
    return { parse: error.code };
  }
  try {
    return { canonical: Buffer.from(canonicalBytes(value)).toString("base64") };
  } catch (error) {
    if (!(error instanceof VerificationError)) throw error;
    return { canonical_error: error.code };
  }
}

const LONG_INTEGER = /(?:^|[[,:\s])-?[0-9]{16,}(?![0-9.eE])/;

/** The same verdict, but for the one rule parseStrict adds: an integer
 * literal beyond 2^53 is refused by the parser, where strictjson parses it and
 * canonical_json refuses it. */
function assertSameVerdict(js, python, text, what) {
  if (js.parse === "malformed_input" && python.canonical_error === "invalid_artifact") {
    assert.match(text.toString("latin1"), LONG_INTEGER, what);
    return;
  }
  assert.deepEqual(js, python, `${what}: ${text.toString("utf8").slice(0, 200)}`);
}

/** A seeded PRNG (mulberry32): the same values on every run. */
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const CHARS = ["a", "Z", "0", " ", '"', "\\", "/", "\n", "\u0000", "\u001f", "\u007f", "\u00e9", "\u2028",
  "\ud7ff", "\ue000", "\uffff", "\ufb33", "\ud83d\ude00", "\ud800\udc00", "\udbff\udfff", "\u20ac"];

function randomString(rand) {
  let text = "";
  const length = Math.floor(rand() * 6);
  for (let i = 0; i < length; i += 1) text += CHARS[Math.floor(rand() * CHARS.length)];
  return text;
}

function randomNumber(rand) {
  const pick = Math.floor(rand() * 8);
  if (pick === 0) return Math.floor(rand() * 2000) - 1000;
  if (pick === 1) return (rand() - 0.5) * 10 ** Math.floor(rand() * 40 - 20);
  if (pick === 2) return 2 ** 53 - 1 - Math.floor(rand() * 3);
  if (pick === 3) return -(2 ** 53) + 1;
  if (pick === 4) return fromIeeeHex(Array.from({ length: 8 }, () => Math.floor(rand() * 256).toString(16).padStart(2, "0")).join(""));
  if (pick === 5) return 10 ** Math.floor(rand() * 30);
  if (pick === 6) return rand();
  return -0;
}

function randomValue(rand, depth = 0) {
  const pick = Math.floor(rand() * (depth > 3 ? 5 : 7));
  if (pick === 0) return null;
  if (pick === 1) return rand() < 0.5;
  if (pick === 2 || pick === 3) return randomNumber(rand);
  if (pick === 4) return randomString(rand);
  if (pick === 5) return Array.from({ length: Math.floor(rand() * 4) }, () => randomValue(rand, depth + 1));
  const object = {};
  for (let i = Math.floor(rand() * 5); i > 0; i -= 1) object[randomString(rand)] = randomValue(rand, depth + 1);
  return object;
}

function jsonText(value) {
  // JSON.stringify writes finite numbers in ES form (which both parsers read
  // back exactly) and NaN/Infinity as null: turn those into real refusals.
  return JSON.stringify(value, (_, item) => (typeof item === "number" && !Number.isFinite(item) ? "nan" : item));
}

test("canonical bytes equal protocol/canonical.py's on 400 seeded random values", { skip: NO_PYTHON }, () => {
  const rand = prng(8785);
  const texts = [];
  for (let i = 0; i < 400; i += 1) texts.push(Buffer.from(jsonText(randomValue(rand)), "utf8"));
  const python = runPython(CANONICALISE, texts.map((t) => t.toString("base64")));
  assert.equal(python.length, texts.length);
  let refusedCount = 0;
  texts.forEach((text, i) => {
    const js = jsVerdict(new Uint8Array(text));
    assertSameVerdict(js, python[i], text, `value ${i}`);
    if (!("canonical" in js)) refusedCount += 1;
  });
  assert.ok(refusedCount > 0 && refusedCount < texts.length / 2, `refused ${refusedCount}`);
});

test("JSONTestSuite parsing files: the same verdict and bytes as keys/strictjson.py + protocol/canonical.py", {
  skip: NO_PYTHON || (existsSync(SUITE) ? false : `no JSONTestSuite at ${SUITE} (set BATON_VECTORS)`),
}, () => {
  const names = readdirSync(SUITE).filter((name) => name.endsWith(".json")).sort();
  assert.ok(names.length >= 300, `${names.length} files`);
  const texts = names.map((name) => readFileSync(`${SUITE}/${name}`));
  const python = runPython(CANONICALISE, texts.map((t) => t.toString("base64")));
  names.forEach((name, i) => {
    const js = jsVerdict(new Uint8Array(texts[i]));
    // Deep nesting: strictjson counts brackets after the parse, this parser
    // while parsing; both refuse, one may say malformed where the other says too deep.
    if (python[i].parse === "too_deep" || js.parse === "too_deep") {
      assert.ok("parse" in js && "parse" in python[i], name);
      return;
    }
    assertSameVerdict(js, python[i], texts[i], name);
    // I-JSON refuses duplicate names (RFC 7493 s2.3), which RFC 8259 allows.
    if (name.startsWith("y_") && !name.startsWith("y_object_duplicated_key")) {
      assert.ok(!("parse" in js), `${name} must parse`);
    }
    if (name.startsWith("n_")) assert.ok("parse" in js, `${name} must be refused`);
  });
});
