// The operator web inbox opening one handoff bundle, timed in Node (same
// WebCrypto API as the browser: globalThis.crypto.subtle). Driven by
// bench/bench_inbox_js.py, which writes the files, compares the figures with
// the Python's and interleaves the two; not meant to be run by hand.
//
// Usage: node --expose-gc bench/inbox_open.mjs DIR WARMUP EXPECTED_DIGEST
// DIR holds bundle.jwe.json (the sealed bundle as the gateway sends it),
// signing.jwks and encryption.jwks (the operator's private key files) and
// gateway.jwks (the gateway's public JWKS, as the session lists it).
//
// At start, once, cold, before any other work: importOperatorFiles of the two
// key files (as pages/keys.js imports them), importPublicJwks of the gateway
// JWKS (api.js verificationKeys), JSON.parse of the reply (response.json()),
// and the first openBundle, whose bundleDigest must equal EXPECTED_DIGEST
// (the Python's; exit 3 otherwise). Then one JSON line: {"ready": ...}.
//
// Then, per stdin line "NAME K": K timed runs of step NAME (WARMUP untimed
// runs first, the first time NAME is asked for), a full GC (global.gc,
// untimed) before each, as the Python harness does (gc.collect); answers one
// JSON line {"name", "times", "gc"} in milliseconds (performance.now): "gc"
// is, per run, the GC pauses V8 reported (PerformanceObserver "gc" entries)
// that started inside the timed window. "profile K": K more opens (not
// timed, no forced GC between them) under V8's sampling CPU profiler (100 us),
// answered as {"profile": {"opens", "buckets", "top"}}: self time per open in
// ms, by what ran (the main thread idle while WebCrypto jobs run on the thread
// pool is "(idle)"; native frames count for their nearest JS caller). "quit"
// ends.
//
// "open" is what gateway/web/static/pages/bundle.js runs: openBundle
// (js/bundle.js: decrypt, JWS verify, strict parse, validation, RFC 8785
// canonical-form check, chain, content and body digests, agent views, masked
// paths) on the JWE object the page got from the reply, with the operator's
// imported encryption key and the imported gateway keys. The other steps
// mirror openBundle's, with the modules' exported functions, to show where
// the time goes.

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { Session } from "node:inspector/promises";
import { join } from "node:path";
import { PerformanceObserver } from "node:perf_hooks";
import { createInterface } from "node:readline";

import { b64urlDecode, fromUtf8 } from "../gateway/web/static/js/b64.js";
import { BUNDLE_JWE_TYP, BUNDLE_JWS_TYP, MAX_BUNDLE_BYTES, openBundle } from "../gateway/web/static/js/bundle.js";
import { canonicalBytes, canonicalDigest, parseStrict, sha256Digest } from "../gateway/web/static/js/jcs.js";
import { decryptGeneral, importPublicJwks, verifyCompact } from "../gateway/web/static/js/jose.js";
import { importOperatorFiles } from "../gateway/web/static/js/keystore.js";

const [dir, warmupArg, expected] = process.argv.slice(2);
const warmup = Number(warmupArg);
if (!dir || !Number.isInteger(warmup) || warmup < 0 || !expected) {
  console.error("usage: node --expose-gc bench/inbox_open.mjs DIR WARMUP EXPECTED_DIGEST");
  process.exit(2);
}
if (typeof globalThis.gc !== "function") {
  console.error("run with --expose-gc: a full GC precedes every timed run");
  process.exit(2);
}

const read = (name) => readFileSync(join(dir, name), "utf8");
const answer = (value) => process.stdout.write(JSON.stringify(value) + "\n");

/** Wall time of one awaited call, in ms, and its value. */
async function once(fn) {
  const start = performance.now();
  const value = await fn();
  return [performance.now() - start, value];
}

// ------------------------------------------------------------------ once, cold

const signingText = read("signing.jwks");
const encryptionText = read("encryption.jwks");
const [importOperatorMs, operator] = await once(() => importOperatorFiles(signingText, encryptionText));
const gatewayJwks = JSON.parse(read("gateway.jwks"));
const [importGatewayMs, gatewayKeys] = await once(() => importPublicJwks(gatewayJwks));
const encKey = operator.encryption;
const jweText = read("bundle.jwe.json");
const [replyParseMs, jwe] = await once(() => JSON.parse(jweText));

const [firstOpenMs, opened] = await once(() => openBundle(jwe, encKey, gatewayKeys));
if (opened.bundleDigest !== expected) {
  console.error(`bundleDigest mismatch: JS ${opened.bundleDigest}, Python ${expected}`);
  process.exit(3);
}

// ------------------------------------------------------------------ the steps

const jweOptions = { typ: BUNDLE_JWE_TYP, maxBytes: MAX_BUNDLE_BYTES * 2 };
const jwsOptions = { typ: BUNDLE_JWS_TYP, maxBytes: MAX_BUNDLE_BYTES };
const plaintext = await decryptGeneral(jwe, encKey, jweOptions);
const jws = fromUtf8(plaintext);
const payload = (await verifyCompact(jws, gatewayKeys, jwsOptions)).payload;
const payloadB64 = jws.split(".")[1];
const bundle = opened.bundle;
const entries = bundle.transcript.map((entry) => {
  const rest = {};
  for (const [name, value] of Object.entries(entry)) if (name !== "hash") rest[name] = value;
  return rest;
});
const bodies = bundle.bodies.filter((body) => body.raw === null).map((body) => body.json);
const bodyBytes = bodies.map(canonicalBytes);
const subtle = globalThis.crypto.subtle;

const STEPS = {
  open: () => openBundle(jwe, encKey, gatewayKeys),
  decrypt: () => decryptGeneral(jwe, encKey, jweOptions),
  ascii: () => {
    if (plaintext.some((byte) => byte > 0x7f)) throw new Error("not ASCII");
    return fromUtf8(plaintext);
  },
  verify: () => verifyCompact(jws, gatewayKeys, jwsOptions),
  b64: () => b64urlDecode(payloadB64, { maxLength: MAX_BUNDLE_BYTES }),
  parse: () => parseStrict(payload, { maxBytes: MAX_BUNDLE_BYTES }),
  json_parse: () => JSON.parse(fromUtf8(payload)),
  jcs: () => canonicalBytes(bundle),
  chain: () => Promise.all(entries.map(canonicalDigest)),
  bodies: async () => {
    for (const body of bodies) await canonicalDigest(body);
  },
  bodies_sha: async () => {
    for (const bytes of bodyBytes) await subtle.digest("SHA-256", bytes);
  },
  // A Node-only floor: the same hashes, synchronous (no WebCrypto job each).
  bodies_sha_sync: () => {
    for (const bytes of bodyBytes) createHash("sha256").update(bytes).digest();
  },
  payload_sha: () => sha256Digest(payload),
};

answer({
  ready: {
    node: process.version,
    v8: process.versions.v8,
    warmup,
    bundle_digest: opened.bundleDigest,
    entries: bundle.transcript.length,
    bodies: bodies.length,
    masked: bundle.masked.length,
    checks: opened.checks,
    once: {
      import_operator_ms: importOperatorMs,
      import_gateway_ms: importGatewayMs,
      reply_parse_ms: replyParseMs,
      first_open_ms: firstOpenMs,
    },
  },
});

// ------------------------------------------------------------------ commands

// ------------------------------------------------------------------ profile

const JCS_FILE = new URL("../gateway/web/static/js/jcs.js", import.meta.url);
/** 0-based line of jcs.js's strict parser: above it, RFC 8785 and digests. */
const PARSER_LINE = readFileSync(JCS_FILE, "utf8").split("\n").findIndex((l) => l.startsWith("class Parser"));

function bucket({ functionName: fn, url, lineNumber }) {
  if (fn === "(idle)") return "main thread idle: awaiting WebCrypto jobs (thread pool)";
  if (fn === "(garbage collector)") return "garbage collection";
  if (url.includes("internal/crypto") || url.includes("webcrypto")) return "WebCrypto job dispatch on the main thread (node:internal/crypto, native)";
  if (url.includes("internal/encoding") || fn === "encodeUtf8String") return "UTF-8 encode/decode (TextEncoder/TextDecoder)";
  if (url.endsWith("/js/b64.js")) return "base64url decode (b64.js)";
  if (url.endsWith("/js/jcs.js")) {
    return lineNumber >= PARSER_LINE ? "strict JSON parse (jcs.js Parser)" : "RFC 8785 serialisation + digest glue (jcs.js)";
  }
  if (url.endsWith("/js/bundle.js")) return "bundle.js: ASCII check, validation, byte compare, chain, views, masks";
  if (url.endsWith("/js/jose.js")) return "jose.js (JWE/JWS framing)";
  return "other (VM, promise machinery, timers)";
}

async function profileOpens(k) {
  const session = new Session();
  session.connect();
  await session.post("Profiler.enable");
  await session.post("Profiler.setSamplingInterval", { interval: 100 });
  await session.post("Profiler.start");
  for (let i = 0; i < k; i += 1) await STEPS.open();
  const { profile } = await session.post("Profiler.stop");
  session.disconnect();
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parent = new Map();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  // Native code and compiled regular expressions (no url) count for the
  // nearest caller that has one: a WebCrypto job's native dispatch for
  // node:internal/crypto, a regex test for the module that runs it.
  const owner = (id) => {
    let node = byId.get(id);
    const special = ["(idle)", "(garbage collector)", "(program)", "(root)"];
    while (node.callFrame.url === "" && !special.includes(node.callFrame.functionName) && parent.has(node.id)) {
      node = byId.get(parent.get(node.id));
    }
    return node.callFrame;
  };
  const buckets = {};
  const functions = {};
  profile.samples.forEach((id, i) => {
    const frame = byId.get(id).callFrame;
    const ms = profile.timeDeltas[i] / 1000 / k;
    const name = bucket(owner(id));
    buckets[name] = (buckets[name] ?? 0) + ms;
    const where = `${frame.functionName || "(anonymous)"} ${frame.url.split("/").pop()}:${frame.lineNumber + 1}`;
    functions[where] = (functions[where] ?? 0) + ms;
  });
  const top = Object.entries(functions).sort((a, b) => b[1] - a[1]).slice(0, 12);
  return { opens: k, buckets, top };
}

// ------------------------------------------------------------------ timing

const gcPauses = [];
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) gcPauses.push([entry.startTime, entry.duration]);
}).observe({ entryTypes: ["gc"] });
const settle = () => new Promise((resolve) => setTimeout(resolve, 20)); // observer delivery

const warmed = new Set();
for await (const line of createInterface({ input: process.stdin })) {
  if (line === "quit") break;
  const [name, count] = line.split(" ");
  if (name === "profile") {
    answer({ profile: await profileOpens(Number(count)) });
    continue;
  }
  const fn = STEPS[name];
  const k = Number(count);
  if (fn === undefined || !Number.isInteger(k) || k < 1) {
    console.error(`bad command ${JSON.stringify(line)}`);
    process.exit(2);
  }
  if (!warmed.has(name)) {
    for (let i = 0; i < warmup; i += 1) await fn();
    warmed.add(name);
  }
  await settle();
  gcPauses.length = 0;
  const windows = [];
  for (let i = 0; i < k; i += 1) {
    globalThis.gc();
    const start = performance.now();
    await fn();
    windows.push([start, performance.now()]);
  }
  await settle();
  const times = windows.map(([start, end]) => end - start);
  const gc = windows.map(([start, end]) =>
    gcPauses.filter(([at]) => at >= start && at < end).reduce((sum, [, duration]) => sum + duration, 0),
  );
  answer({ name, times, gc });
}
process.exit(0);
