// Handoff bundles in the browser: open, verify, and check what comes with them
// (lifecycle events, PII reveals, the recorded decision), exactly as
// protocol/bundle.py, protocol/lifecycle.py, protocol/pii.py and
// gateway/inbox_client.py (show, _verify_decision) do in Python.
//
// openBundle is sign-then-encrypt undone (protocol/bundle.py seal_bundle):
//   1. JWE general JSON (RFC 7516 s7.2.1) to this operator's key, typ
//      baton-handoff+jwe, ECDH-ES+A256KW + A256GCM (js/jose.js decryptGeneral);
//   2. compact JWS by a gateway key (RFC 7515 s7.1), typ baton-handoff+jws;
//   3. the payload parsed strictly and required to be exactly its RFC 8785
//      form (canonical JSON, s3.2), so the bytes signed are the values shown;
//   4. _check_integrity: the transcript hash chain (protocol/chain.py: each
//      entry's hash is sha256 of JCS(entry without "hash"), seq 0.., prev
//      links, ending at integrity's signed head), the content digest (JCS of
//      the bundle without "integrity"), every recorded body against its entry
//      (raw: base64url of the exact bytes; JSON: json_digest, unless a masked
//      path reaches into that body), the agent views recomputed from the
//      transcript, and every masked path (RFC 6901 JSON Pointer, "*" segments)
//      showing exactly its token.
//
// Invariants:
// - nothing is returned unless every check passed; every failure is a
//   VerificationError (js/errors.js) whose code is the one the Python raises
//   for the same failure (protocol/errors.py): "invalid_envelope",
//   "unknown_kid", "alg_not_allowed", "chain_break", "digest_invalid", ...;
// - records are validated as the Python models validate them (closed member
//   sets, types, patterns); events and decisions get the models' defaults for
//   absent optional members, as pydantic fills them, before they are hashed;
// - messages never carry plaintext, keys or tokens;
// - every function here is pure except for the awaited WebCrypto calls (no
//   module state is mutated; inputs are never modified).

import { b64urlDecode, fromUtf8 } from "./b64.js";
import { VerificationError } from "./errors.js";
import { canonicalBytes, canonicalDigest, parseStrict, sha256Digest } from "./jcs.js";
import { decryptGeneral, verifyCompact } from "./jose.js";
import { SchemaError, checkSchema, validate } from "./schema.js";

export { VerificationError };

export const BUNDLE_JWS_TYP = "baton-handoff+jws";
export const BUNDLE_JWE_TYP = "baton-handoff+jwe";
export const REVEAL_JWE_TYP = "baton-reveal+jwe";
export const EVENT_TYP = "baton-event+jws";
export const DECISION_TYP = "baton-decision+jws";
export const MAX_BUNDLE_BYTES = 8 << 20;
export const MAX_ENTRIES = 10_000;
export const MAX_DECISION_TTL_S = 24 * 3600;
export const GENESIS = "sha256:" + "0".repeat(64);
/** keys/jose.py DEFAULT_MAX_BYTES: the cap on events and decisions. */
const JOSE_MAX_BYTES = 4 << 20;
const SKEW_S = 5;

function fail(code, message) {
  throw new VerificationError(code, message);
}

// --------------------------------------------------------------------------- field checks
//
// protocol/model.py's field types as predicates (pure). Shared with
// js/decision.js, which validates what it builds the same way.

const DIGEST = /^sha256:[0-9a-f]{64}$/;
const BUNDLE_ID = /^hb_[A-Za-z0-9_-]{16,64}$/;
const NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const NONCE = /^[A-Za-z0-9._~+/=-]{16,128}$/;
const OPERATOR = /^operator:[\x21-\x7e]{1,255}$/;
const POINTER = /^(\/([^~/]|~[01])*)*$/;
const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,128}$/;

/** At most `n` code points (Python's len of a str); pure. */
function maxChars(text, n) {
  if (text.length <= n) return true;
  if (text.length > 2 * n) return false;
  let count = 0;
  for (let i = 0; i < text.length; i += 1) {
    const unit = text.charCodeAt(i);
    if (unit < 0xdc00 || unit > 0xdfff) count += 1; // a low surrogate ends a pair counted already
  }
  return count <= n;
}

const isInt = (v) => typeof v === "number" && Number.isInteger(v);
const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const nullable = (check) => (v) => v === null || check(v);
const oneOf = (...values) => (v) => values.includes(v);

/** Predicates for protocol/model.py's types (pure). */
export const valid = Object.freeze({
  int: isInt,
  intAtLeast: (min) => (v) => isInt(v) && v >= min,
  intBetween: (min, max) => (v) => isInt(v) && v >= min && v <= max,
  bool: (v) => typeof v === "boolean",
  object: isObject,
  json: () => true, // JsonData: the strict parse guarantees JSON-ness
  nullable,
  oneOf,
  digest: (v) => typeof v === "string" && DIGEST.test(v),
  bundleId: (v) => typeof v === "string" && BUNDLE_ID.test(v),
  name: (v) => typeof v === "string" && NAME.test(v),
  nonce: (v) => typeof v === "string" && NONCE.test(v),
  shortText: (v) => typeof v === "string" && maxChars(v, 256),
  text: (v) => typeof v === "string" && maxChars(v, 4000),
  operator: (v) => typeof v === "string" && OPERATOR.test(v),
  // A SPIFFE ID or operator:<subject>; the signature vouches for the rest.
  identity: (v) =>
    typeof v === "string" && v.length <= 2048 && (OPERATOR.test(v) || v.startsWith("spiffe://")),
  pointer: (v) => typeof v === "string" && v.length <= 512 && POINTER.test(v),
  arrayOf: (check, { min = 0, max = Infinity } = {}) => (v) =>
    Array.isArray(v) && v.length >= min && v.length <= max && v.every(check),
});

/** Marks a member without a default (pydantic's required field). */
export const REQUIRED = Symbol("required");

/**
 * A record validated against `fields` ({name: [predicate, default]}), as a
 * closed BatonModel validates (extra="forbid", strict): every member known
 * and valid, absent ones given their default (or, with `complete`, refused:
 * for documents that must be their own canonical form). Returns a new object
 * with the members in `fields` order; throws "invalid_artifact". Pure.
 */
export function record(what, value, fields, { complete = false } = {}) {
  if (!isObject(value)) fail("invalid_artifact", `${what}: not a JSON object`);
  for (const name of Object.keys(value)) {
    if (!Object.hasOwn(fields, name)) fail("invalid_artifact", `${what}: unknown member ${JSON.stringify(name)}`);
  }
  const out = {};
  for (const [name, [check, fallback]] of Object.entries(fields)) {
    if (Object.hasOwn(value, name)) {
      if (!check(value[name])) fail("invalid_artifact", `${what}: member ${name} is not valid`);
      out[name] = value[name];
    } else if (fallback === REQUIRED || complete) {
      fail("invalid_artifact", `${what}: member ${name} is missing`);
    } else {
      out[name] = fallback;
    }
  }
  return out;
}

const R = REQUIRED;

const ENTRY = {
  seq: [valid.intAtLeast(0), R],
  prev: [valid.digest, R],
  hash: [valid.digest, R],
  v: [oneOf(1), 1],
  conversation: [(v) => valid.shortText(v) && v.length > 0, R],
  ts: [valid.intAtLeast(0), R],
  from: [valid.identity, R],
  to: [valid.identity, R],
  protocol: [oneOf("mcp", "a2a", "jsonrpc", "http", "baton"), R],
  kind: [oneOf("request", "response", "stream_event", "notification", "error", "handoff"), R],
  method: [nullable(valid.shortText), null],
  rpc_id: [(v) => v === null || isInt(v) || valid.shortText(v), null],
  status: [nullable(valid.intBetween(100, 599)), null],
  body_digest: [nullable(valid.digest), null],
  body_size: [nullable(valid.intAtLeast(0)), null],
  signer: [nullable(valid.shortText), null],
  verified: [valid.bool, R],
};

const EVENT_TYPES = ["queued", "claimed", "released", "decided", "delivered", "acknowledged", "expired", "cancelled"];

const EVENT = {
  seq: [valid.intAtLeast(0), R],
  prev: [valid.digest, R],
  hash: [valid.digest, R],
  bundle_id: [valid.bundleId, R],
  ts: [valid.intAtLeast(0), R],
  type: [oneOf(...EVENT_TYPES), R],
  actor: [valid.identity, R],
  version: [valid.intAtLeast(1), R],
  fencing_token: [nullable(valid.intAtLeast(1)), null],
  lease_until: [nullable(valid.intAtLeast(0)), null],
  decision_digest: [nullable(valid.digest), null],
  outcome: [nullable(oneOf("executed", "failed")), null],
  reason: [nullable(valid.shortText), null],
  note: [nullable(valid.text), null],
};

const DECISION_TYPES = ["approve", "edit", "reject", "respond", "reroute"];

const ACTION = {
  kind: [oneOf("tool_call", "skill_call", "answer", "other"), R],
  target: [nullable(valid.shortText), null],
  arguments: [valid.json, null],
  args_digest: [nullable(valid.digest), null],
};

const TOOL_STEP = {
  tool: [valid.shortText, R],
  status: [oneOf("ok", "error", "timeout", "denied", "held"), R],
  seq: [nullable(valid.intAtLeast(0)), null],
  error_type: [nullable(valid.shortText), null],
  duration_ms: [nullable(valid.intAtLeast(0)), null],
};

const FAILURE = {
  status: [oneOf("blocked", "failed", "partial", "uncertain"), R],
  exit_reason: [valid.shortText, R],
  error_type: [nullable(valid.shortText), null],
  retry_count: [valid.intBetween(0, 10_000), 0],
  failed_step: [nullable(valid.shortText), null],
  tool_trace: [valid.arrayOf(isObject, { max: 256 }), []],
};

const TRIGGERS = ["user_request", "low_confidence", "out_of_scope", "policy", "authorization", "technical_failure", "other"];

const SLA = {
  ack_within_s: [nullable(valid.intBetween(1, 30 * 86400)), null],
  resolve_within_s: [valid.intBetween(60, 30 * 86400), R],
  on_expiry: [oneOf("reject", "cancel"), "reject"],
};

const REQUEST = {
  schema: [oneOf("baton.handoff-request/v1"), "baton.handoff-request/v1"],
  reason_code: [valid.name, R],
  reason_text: [valid.text, R],
  trigger: [oneOf(...TRIGGERS), R],
  failure: [nullable(isObject), null],
  requested_action: [nullable(isObject), null],
  allowed_decisions: [valid.arrayOf(oneOf(...DECISION_TYPES), { min: 1, max: 5 }), R],
  response_schema: [nullable(isObject), null],
  priority: [valid.intBetween(1, 4), 3],
  sla: [isObject, R],
  idempotency_key: [(v) => typeof v === "string" && IDEMPOTENCY_KEY.test(v), R],
  pii_paths: [valid.arrayOf(valid.pointer, { max: 64 }), []],
  capsule: [nullable(isObject), null],
};

const CORRELATION = {
  trace_id: [nullable(valid.shortText), null],
  a2a_context_id: [nullable(valid.shortText), null],
  a2a_task_id: [nullable(valid.shortText), null],
  mcp_session_id: [nullable(valid.shortText), null],
  dedup_group: [nullable(valid.shortText), null],
};

const BODY = {
  seq: [valid.intAtLeast(0), R],
  media_type: [valid.shortText, R],
  json: [valid.json, null],
  json_digest: [nullable(valid.digest), null],
  raw: [nullable((v) => typeof v === "string"), null],
};

const VIEW = {
  agent: [valid.identity, R],
  saw_through_seq: [valid.intAtLeast(0), R],
  head: [valid.digest, R],
};

const MASKED = {
  path: [valid.pointer, R],
  token: [valid.shortText, R],
  commitment: [valid.digest, R],
  entity: [nullable(valid.shortText), null],
};

const INTEGRITY = {
  canonicalization: [oneOf("RFC8785"), "RFC8785"],
  transcript_seq: [valid.intAtLeast(-1), R],
  transcript_head: [valid.digest, R],
  content_digest: [valid.digest, R],
};

const BUNDLE = {
  schema: [oneOf("baton.handoff-bundle/v1"), R],
  bundle_id: [valid.bundleId, R],
  version: [valid.intAtLeast(1), R],
  created_at: [valid.intAtLeast(0), R],
  ack_by: [nullable(isInt), R],
  resolve_by: [isInt, R],
  queue: [valid.name, R],
  conversation: [valid.shortText, R],
  origin: [valid.identity, R],
  gateway: [valid.identity, R],
  request: [isObject, R],
  correlation: [isObject, R],
  transcript: [valid.arrayOf(isObject, { max: MAX_ENTRIES }), R],
  bodies: [valid.arrayOf(isObject, { max: MAX_ENTRIES }), R],
  agent_views: [valid.arrayOf(isObject), R],
  masked: [valid.arrayOf(isObject), R],
  integrity: [isObject, R],
};

/** The bundle document validated as HandoffBundle (every member present, as
 * its canonical form has them all); the validated copy is returned. Pure. */
function bundleRecord(document) {
  const complete = { complete: true };
  const bundle = record("bundle", document, BUNDLE, complete);
  const request = record("request", bundle.request, REQUEST, complete);
  if (new Set(request.allowed_decisions).size !== request.allowed_decisions.length) {
    fail("invalid_artifact", "request: allowed_decisions lists a decision twice");
  }
  if (request.requested_action !== null) {
    const action = record("requested_action", request.requested_action, ACTION, complete);
    if (["tool_call", "skill_call"].includes(action.kind) && (action.target === null || action.args_digest === null)) {
      fail("invalid_artifact", `requested_action: a ${action.kind} needs 'target' and 'args_digest'`);
    }
    request.requested_action = action;
  }
  if (request.allowed_decisions.includes("edit") && (request.requested_action?.args_digest ?? null) === null) {
    fail("invalid_artifact", "request: 'edit' needs a requested_action with arguments");
  }
  request.sla = record("sla", request.sla, SLA, complete);
  if (request.failure !== null) {
    const failure = record("failure", request.failure, FAILURE, complete);
    failure.tool_trace = failure.tool_trace.map((step) => record("tool trace step", step, TOOL_STEP, complete));
    request.failure = failure;
  }
  if (request.response_schema !== null) fitsSchemaShape(request.response_schema);
  bundle.request = request;
  bundle.correlation = record("correlation", bundle.correlation, CORRELATION, complete);
  bundle.transcript = bundle.transcript.map((entry) => record("transcript entry", entry, ENTRY, complete));
  bundle.bodies = bundle.bodies.map((body) => {
    const checked = record("body", body, BODY, complete);
    if ((checked.raw === null) === (checked.json_digest === null)) {
      fail("invalid_artifact", "body: a body is either raw or JSON (with json_digest)");
    }
    return checked;
  });
  bundle.agent_views = bundle.agent_views.map((view) => record("agent view", view, VIEW, complete));
  bundle.masked = bundle.masked.map((field) => record("masked field", field, MASKED, complete));
  bundle.integrity = record("integrity", bundle.integrity, INTEGRITY, complete);
  return bundle;
}

// --------------------------------------------------------------------------- helpers

/** Run a js/jose.js call; a failure that is not a VerificationError becomes `code`. */
async function jose(run, code) {
  try {
    return await run();
  } catch (error) {
    if (error instanceof VerificationError) throw error;
    throw new VerificationError(code, `${code}: ${error?.name ?? "error"}`, { cause: error });
  }
}

/** The strict JSON parse of protocol/model.py BatonModel.parse (pure). */
function parseJson(bytes, what, maxBytes) {
  try {
    return parseStrict(bytes, { maxBytes });
  } catch (error) {
    if (error instanceof VerificationError) throw error;
    throw new VerificationError("malformed_input", `${what}: not JSON`, { cause: error });
  }
}

function sameBytes(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i += 1) if (a[i] !== b[i]) return false;
  return true;
}

/** Python's str order (code points), not JavaScript's (UTF-16 units); pure. */
function byCodePoint(a, b) {
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    const x = a.codePointAt(i);
    const y = b.codePointAt(j);
    if (x !== y) return x < y ? -1 : 1;
    i += x > 0xffff ? 2 : 1;
    j += y > 0xffff ? 2 : 1;
  }
  if (i < a.length) return 1;
  return j < b.length ? -1 : 0;
}

/** protocol/chain.py compute_hash: sha256 of JCS(record without "hash"). */
function recordHash(item) {
  const rest = {};
  for (const [name, value] of Object.entries(item)) if (name !== "hash") rest[name] = value;
  return canonicalDigest(rest);
}

/**
 * protocol/chain.py verify_links from the empty chain: `records` (with
 * `hashes`, recomputed) link seq 0, 1, ... with prev = the previous hash;
 * each belongs to chain `scope` (member `key`); the head must be
 * `expectedHead` when given. Returns the head {seq, hash}. Pure.
 */
function verifyLinks(records, hashes, { key, scope, expectedHead }) {
  let seq = -1;
  let last = GENESIS;
  records.forEach((item, index) => {
    if (item[key] !== scope) fail("chain_break", `record ${item.seq} belongs to another chain`);
    if (item.seq !== seq + 1) fail("seq_violation", `seq ${item.seq} where ${seq + 1} was expected`);
    if (item.prev !== last) fail("chain_break", `record ${item.seq}: prev does not match the previous hash`);
    if (hashes[index] !== item.hash) fail("chain_break", `record ${item.seq}: content does not match its hash`);
    seq = item.seq;
    last = item.hash;
  });
  if (expectedHead && (seq !== expectedHead.seq || last !== expectedHead.hash)) {
    fail("head_mismatch", `chain ends at seq ${seq}, expected seq ${expectedHead.seq} with the signed head hash`);
  }
  return { seq, hash: last };
}

/** protocol/bundle.py agent_views: each participant's last entry, by identity (pure). */
export function agentViews(transcript) {
  const last = new Map();
  for (const entry of transcript) {
    last.set(entry.from, entry);
    last.set(entry.to, entry);
  }
  return [...last.keys()]
    .sort(byCodePoint)
    .map((agent) => ({ agent, saw_through_seq: last.get(agent).seq, head: last.get(agent).hash }));
}

const INDEX = /^(0|[1-9][0-9]*)$/;
const unescapeSegment = (s) => (s.includes("~") ? s.replaceAll("~1", "/").replaceAll("~0", "~") : s);
const escapeSegment = (s) => (s.includes("~") || s.includes("/") ? s.replaceAll("~", "~0").replaceAll("/", "~1") : s);

/**
 * protocol/pii.py resolve: every [concrete pointer, value] that an RFC 6901
 * pointer selects, a "*" segment matching every member or element. Pure.
 */
export function resolve(document, pointer) {
  if (pointer === "") return [["", document]];
  if (!pointer.startsWith("/")) fail("invalid_artifact", "JSON Pointer must start with '/'");
  let matches = [["", document]];
  for (const segment of pointer.slice(1).split("/")) {
    const step = [];
    for (const [path, node] of matches) {
      if (segment === "*") {
        if (Array.isArray(node)) node.forEach((child, i) => step.push([`${path}/${i}`, child]));
        else if (isObject(node)) for (const [k, child] of Object.entries(node)) step.push([`${path}/${escapeSegment(k)}`, child]);
      } else if (Array.isArray(node)) {
        if (INDEX.test(segment) && Number(segment) < node.length) step.push([`${path}/${segment}`, node[Number(segment)]]);
      } else if (isObject(node)) {
        const k = unescapeSegment(segment);
        if (Object.hasOwn(node, k)) step.push([`${path}/${segment}`, node[k]]);
      }
    }
    matches = step;
  }
  return matches;
}

/** protocol/bundle.py _bodies_with_masked_json: body indexes a masked path reaches into (pure). */
function bodiesWithMaskedJson(paths) {
  const found = new Set();
  for (const path of paths) {
    const parts = path.split("/");
    if (parts.length >= 4 && parts[0] === "" && parts[1] === "bodies" && parts[3] === "json") found.add(parts[2]);
  }
  return found;
}

/** protocol/bundle.py _check_integrity, in its order. */
async function checkIntegrity(bundle) {
  const { integrity } = bundle;
  const hashes = await Promise.all(bundle.transcript.map(recordHash));
  verifyLinks(bundle.transcript, hashes, {
    key: "conversation",
    scope: bundle.conversation,
    expectedHead: { seq: integrity.transcript_seq, hash: integrity.transcript_head },
  });
  const content = {};
  for (const [name, value] of Object.entries(bundle)) if (name !== "integrity") content[name] = value;
  if ((await canonicalDigest(content)) !== integrity.content_digest) {
    fail("digest_invalid", "content digest does not match the bundle");
  }
  const bySeq = new Map(bundle.transcript.map((entry) => [entry.seq, entry]));
  const partlyMasked = bodiesWithMaskedJson(bundle.masked.map((field) => field.path));
  // Every digest is started at once (WebCrypto digests are asynchronous, and
  // one after another they cost more than the hashing); the results are then
  // checked in body order, so the first failure reported is Python's.
  const digests = await Promise.all(
    bundle.bodies.map((body, index) => {
      if (body.raw !== null) {
        let raw;
        try {
          raw = b64urlDecode(body.raw);
        } catch {
          return null; // not base64url: reported in order below
        }
        return sha256Digest(raw);
      }
      return partlyMasked.has(String(index)) ? undefined : canonicalDigest(body.json);
    }),
  );
  for (const [index, body] of bundle.bodies.entries()) {
    const entry = bySeq.get(body.seq);
    if (entry === undefined) fail("binding_mismatch", `body for seq ${body.seq}, which is not in the transcript`);
    const digest = digests[index];
    if (body.raw !== null) {
      if (digest === null) fail("invalid_artifact", `raw body ${body.seq} is not base64url`);
      if (digest !== entry.body_digest) fail("digest_invalid", `raw body ${body.seq} does not match its entry`);
      continue;
    }
    if (digest !== undefined && digest !== body.json_digest) {
      fail("digest_invalid", `JSON body ${body.seq} does not match its digest`);
    }
  }
  const views = agentViews(bundle.transcript);
  const same =
    views.length === bundle.agent_views.length &&
    views.every((view, i) => {
      const got = bundle.agent_views[i];
      return got.agent === view.agent && got.saw_through_seq === view.saw_through_seq && got.head === view.head;
    });
  if (!same) fail("binding_mismatch", "agent views are not those of the transcript");
  for (const field of bundle.masked) {
    const values = resolve(bundle, field.path);
    if (values.length !== 1 || values[0][1] !== field.token) {
      fail("digest_invalid", `masked path ${field.path} does not show its token`);
    }
  }
}

// --------------------------------------------------------------------------- bundles

/**
 * protocol/bundle.py open_bundle: decrypt `jwe` with `encKey` ({kid, key}),
 * verify the gateway's JWS with `gatewayKeys` ([{kid, alg, key}]) and every
 * integrity check. Returns {bundle, bundleDigest, jws, signerKid, payload,
 * checks}: `bundle` the verified document, `bundleDigest` sha256 of the
 * signed payload (what decisions bind to).
 */
export async function openBundle(jwe, encKey, gatewayKeys) {
  const plaintext = await jose(
    () => decryptGeneral(jwe, encKey, { typ: BUNDLE_JWE_TYP, maxBytes: MAX_BUNDLE_BYTES * 2 }),
    "invalid_envelope",
  );
  if (plaintext.some((byte) => byte > 0x7f)) fail("malformed_jws", "JOSE object is not ASCII");
  return verifyBundleJws(fromUtf8(plaintext), gatewayKeys);
}

/** protocol/bundle.py verify_bundle_jws: a decrypted bundle, offline. */
export async function verifyBundleJws(jws, gatewayKeys) {
  const verified = await jose(
    () => verifyCompact(jws, gatewayKeys, { typ: BUNDLE_JWS_TYP, maxBytes: MAX_BUNDLE_BYTES }),
    "bad_signature",
  );
  const payload = verified.payload;
  const bundle = bundleRecord(parseJson(payload, "bundle", MAX_BUNDLE_BYTES));
  let canonical;
  try {
    canonical = canonicalBytes(bundle);
  } catch (error) {
    throw new VerificationError("invalid_artifact", "bundle payload is not canonicalisable", { cause: error });
  }
  if (!sameBytes(canonical, payload)) fail("invalid_artifact", "bundle payload is not in canonical form");
  await checkIntegrity(bundle);
  return {
    bundle,
    bundleDigest: await sha256Digest(payload),
    jws,
    signerKid: verified.kid,
    payload,
    checks: [
      `signed by gateway key ${verified.kid} (${BUNDLE_JWS_TYP})`,
      "payload in RFC 8785 canonical form",
      `transcript chain of ${bundle.transcript.length} entries ends at the signed head`,
      "content digest",
      `${bundle.bodies.length} recorded bodies match their entries`,
      "agent views",
      `${bundle.masked.length} masked fields show their tokens`,
    ],
  };
}

// --------------------------------------------------------------------------- lifecycle

/** protocol/lifecycle.py TRANSITIONS: state -> events that may follow it. */
const TRANSITIONS = new Map([
  [null, ["queued"]],
  ["queued", ["claimed", "expired", "cancelled"]],
  ["claimed", ["claimed", "released", "decided", "expired", "cancelled"]],
  ["released", ["claimed", "expired", "cancelled"]],
  ["decided", ["delivered"]],
  ["expired", ["delivered"]],
  ["cancelled", ["delivered"]],
  ["delivered", ["acknowledged"]],
  ["acknowledged", []],
]);

/** protocol/lifecycle.py check_transition (pure). */
function checkTransition(previous, event) {
  if (!TRANSITIONS.get(previous).includes(event.type)) fail("conflict", `${event.type} cannot follow ${previous ?? "nothing"}`);
  if (event.type === "claimed" && (event.fencing_token === null || event.lease_until === null)) {
    fail("conflict", "a claim names its fencing token and lease expiry");
  }
  if (event.type === "decided" && event.decision_digest === null) fail("conflict", "a decision event names the decision's digest");
  if (event.type === "acknowledged" && event.outcome === null) {
    fail("conflict", "an acknowledgement says whether the action executed");
  }
}

/** protocol/lifecycle.py _check_under_lease (pure). */
function checkUnderLease(event, lease) {
  if (lease === null || lease.lease_until === null) fail("conflict", `${event.type} without a claim`);
  if (event.actor !== lease.actor) fail("conflict", `${event.type} by someone other than the lease holder`);
  if (event.fencing_token !== lease.fencing_token) {
    fail("conflict", `${event.type} under a fencing token that is not the current one`);
  }
  if (event.ts > lease.lease_until * 1000) fail("conflict", `${event.type} after the lease expired`);
}

/**
 * protocol/lifecycle.py verify_events: every token a gateway-signed
 * baton-event+jws, one hash chain of bundle `bundleId` from seq 0, legal
 * transitions, timestamps not going back, strictly increasing fencing tokens,
 * decisions and releases by the live lease holder. Returns the events.
 */
export async function verifyEvents(tokens, gatewayKeys, bundleId) {
  if (!Array.isArray(tokens) || !tokens.every((t) => typeof t === "string")) {
    fail("invalid_request", "the lifecycle is not a list of tokens");
  }
  const events = [];
  for (const token of tokens) {
    const verified = await jose(() => verifyCompact(token, gatewayKeys, { typ: EVENT_TYP, maxBytes: JOSE_MAX_BYTES }), "bad_signature");
    events.push(record("lifecycle event", parseJson(verified.payload, "lifecycle event", JOSE_MAX_BYTES), EVENT));
  }
  const hashes = await Promise.all(events.map(recordHash));
  verifyLinks(events, hashes, { key: "bundle_id", scope: bundleId });
  let state = null;
  let lease = null;
  let lastFence = 0;
  let lastTs = 0;
  for (const event of events) {
    checkTransition(state, event);
    if (event.ts < lastTs) fail("conflict", "event timestamps go backwards");
    lastTs = event.ts;
    if (event.type === "claimed" && event.fencing_token !== null) {
      if (event.fencing_token <= lastFence) fail("conflict", "fencing tokens must strictly increase");
      lastFence = event.fencing_token;
      lease = event;
    } else if (event.type === "decided" || event.type === "released") {
      checkUnderLease(event, lease);
      lease = null;
    }
    state = event.type;
  }
  return events;
}

// --------------------------------------------------------------------------- PII reveals

const REVEAL = {
  path: [valid.pointer, R],
  salt: [valid.shortText, R],
  value: [valid.json, null],
};

/**
 * protocol/bundle.py open_reveals: decrypt a reveal set (typ
 * baton-reveal+jwe); it must name bundle `bundleId`. Returns {bundle_id, items}.
 */
export async function openReveals(jwe, encKey, bundleId) {
  const plaintext = await jose(
    () => decryptGeneral(jwe, encKey, { typ: REVEAL_JWE_TYP, maxBytes: MAX_BUNDLE_BYTES }),
    "invalid_envelope",
  );
  const value = parseJson(plaintext, "reveal set", MAX_BUNDLE_BYTES);
  const reveals = record("reveal set", value, {
    bundle_id: [valid.shortText, R],
    items: [Array.isArray, R],
  });
  reveals.items = reveals.items.map((item) => record("reveal", item, REVEAL));
  if (reveals.bundle_id !== bundleId) fail("binding_mismatch", "reveal set belongs to another bundle");
  return reveals;
}

/**
 * protocol/pii.py verify_reveal: the original behind `field` (a masked field
 * of a verified bundle), if sha256(salt || JCS(value)) is its signed commitment.
 */
export async function verifyReveal(field, reveal) {
  if (field.path !== reveal.path) fail("digest_invalid", "reveal is for another field");
  let salt;
  try {
    salt = b64urlDecode(reveal.salt);
  } catch {
    fail("digest_invalid", "reveal salt is not base64url");
  }
  const data = canonicalBytes(reveal.value);
  const joined = new Uint8Array(salt.length + data.length);
  joined.set(salt);
  joined.set(data, salt.length);
  if ((await sha256Digest(joined)) !== field.commitment) {
    fail("digest_invalid", "revealed value does not match the signed commitment");
  }
  return reveal.value;
}

// --------------------------------------------------------------------------- decisions

const DECISION_BODY = {
  type: [oneOf(...DECISION_TYPES), R],
  commitment: [oneOf("agreed", "refused"), R],
  arguments: [valid.json, null],
  args_digest: [nullable(valid.digest), null],
  response: [valid.json, null],
  reroute_queue: [nullable(valid.name), null],
  message: [nullable(valid.text), null],
};

const DECISION = {
  schema: [oneOf("baton.handoff-decision/v1"), "baton.handoff-decision/v1"],
  bundle_id: [valid.bundleId, R],
  bundle_digest: [valid.digest, R],
  bundle_version: [valid.intAtLeast(1), R],
  fencing_token: [valid.intAtLeast(1), R],
  operator: [valid.operator, R],
  decision: [isObject, R],
  nonce: [valid.nonce, R],
  iat: [valid.intAtLeast(0), R],
  exp: [valid.intAtLeast(0), R],
};

/** A decision body validated as protocol/decision.py DecisionBody (pure; "invalid_artifact"). */
export function decisionBodyRecord(value) {
  const body = record("decision body", value, DECISION_BODY);
  const expected = body.type === "reject" ? "refused" : "agreed";
  if (body.commitment !== expected) fail("invalid_artifact", `a ${body.type} decision has commitment '${expected}'`);
  if (body.type === "edit") {
    if (body.args_digest === null) fail("invalid_artifact", "an edit carries arguments and their args_digest");
  } else if (body.arguments !== null) {
    fail("invalid_artifact", `a ${body.type} decision carries no arguments`);
  }
  if ((body.type === "reroute") !== (body.reroute_queue !== null)) {
    fail("invalid_artifact", "reroute_queue is required for, and only for, reroute");
  }
  if (body.type === "respond" && body.response === null) fail("invalid_artifact", "a respond decision carries a response");
  return body;
}

/**
 * A decision validated as protocol/decision.py HandoffDecision (with its
 * DecisionBody), but for the edit's args_digest, which needs a digest
 * (decisionChecked). Returns the normalised copy; "invalid_artifact". Pure.
 */
export function decisionRecord(value) {
  const decision = record("decision", value, DECISION);
  if (!(decision.iat < decision.exp && decision.exp <= decision.iat + MAX_DECISION_TTL_S)) {
    fail("invalid_artifact", `exp must be after iat and at most ${MAX_DECISION_TTL_S}s later`);
  }
  decision.decision = decisionBodyRecord(decision.decision);
  return decision;
}

/** decisionRecord, and an edit's args_digest is the digest of its arguments. */
export async function decisionChecked(value) {
  const decision = decisionRecord(value);
  const body = decision.decision;
  if (body.type === "edit") {
    let digest;
    try {
      digest = await canonicalDigest(body.arguments);
    } catch {
      digest = null;
    }
    if (digest !== body.args_digest) fail("invalid_artifact", "an edit carries arguments and their args_digest");
  }
  return decision;
}

/**
 * js/schema.js validate, its SchemaError as a VerificationError with the same
 * code ("response_invalid", "invalid_schema"), pointer and keyword. Pure.
 */
export function fitsSchema(value, schema, what = "response") {
  try {
    validate(value, schema);
  } catch (error) {
    if (!(error instanceof SchemaError)) throw error;
    const refusal = new VerificationError(error.code, `${what} does not fit the response schema: ${error.message}`, {
      cause: error,
    });
    refusal.pointer = error.pointer;
    refusal.keyword = error.keyword;
    throw refusal;
  }
}

/** js/schema.js checkSchema, as a VerificationError "invalid_schema". Pure. */
function fitsSchemaShape(schema) {
  try {
    checkSchema(schema);
  } catch (error) {
    if (!(error instanceof SchemaError)) throw error;
    const refusal = new VerificationError(error.code, `response schema: ${error.message}`, { cause: error });
    refusal.pointer = error.pointer;
    refusal.keyword = error.keyword;
    throw refusal;
  }
}

function entriesOf(mapping) {
  if (mapping instanceof Map) return [...mapping.entries()];
  return mapping && typeof mapping === "object" ? Object.entries(mapping) : [];
}

/**
 * gateway/inbox_client.py _verify_decision (with protocol/decision.py
 * verify_decision_at): the recorded decision `token` is exactly the one the
 * gateway-signed "decided" event names, signed by a key of the operator it
 * names (`operatorKeys`: identity -> [{kid, alg, key}]), who held the lease
 * and serves the queue (`queueOperators`: queue -> [identity]), bound to the
 * opened bundle's id, digest and version and to that lease, valid when it was
 * recorded, of an allowed type, for the arguments asked about, and a
 * response fits the request's response_schema. Returns the decision.
 */
export async function verifyDecision(token, opened, events, operatorKeys, queueOperators) {
  if (typeof token !== "string") fail("malformed_jws", "a decision is a compact JWS");
  const decided = events.find((event) => event.type === "decided");
  if (decided === undefined) fail("binding_mismatch", "the gateway sent a decision its lifecycle does not record");
  if ((await sha256Digest(new TextEncoder().encode(token))) !== decided.decision_digest) {
    fail("binding_mismatch", "the decision is not the one the gateway recorded");
  }
  const owners = new Map();
  const keys = [];
  for (const [identity, list] of entriesOf(operatorKeys)) {
    for (const key of list ?? []) {
      if (owners.has(key.kid) && owners.get(key.kid) !== identity) {
        fail("invalid_config", `key ${key.kid} is listed for both ${owners.get(key.kid)} and ${identity}`);
      }
      owners.set(key.kid, identity);
      keys.push(key);
    }
  }
  if (keys.length === 0) fail("unknown_kid", "no operator public keys to check the decision with");
  const { bundle, bundleDigest } = opened;
  // protocol/decision.py verify_decision_at, at the time the gateway recorded it.
  const verified = await jose(() => verifyCompact(token, keys, { typ: DECISION_TYP, maxBytes: JOSE_MAX_BYTES }), "bad_signature");
  const decision = await decisionChecked(parseJson(verified.payload, "decision", JOSE_MAX_BYTES));
  if (owners.get(verified.kid) !== decision.operator) {
    fail("identity_mismatch", "decision signed by a key that is not the operator's");
  }
  if (decision.bundle_id !== bundle.bundle_id || decision.bundle_digest !== bundleDigest) {
    fail("binding_mismatch", "decision is about another bundle");
  }
  if (decision.bundle_version !== bundle.version) fail("stale_decision", "decision is for another bundle version");
  if (decision.fencing_token !== (decided.fencing_token ?? 0)) {
    fail("stale_decision", "decision was made under a lease that is no longer current");
  }
  const now = Math.floor(decided.ts / 1000);
  if (now >= decision.exp) fail("expired", "decision expired");
  if (decision.iat > now + SKEW_S) fail("not_yet_valid", "decision issued in the future");
  const request = bundle.request;
  const body = decision.decision;
  if (!request.allowed_decisions.includes(body.type)) fail("policy_denied", `decision '${body.type}' is not allowed for this handoff`);
  const asked = request.requested_action?.args_digest ?? null;
  if (body.type === "approve" && asked !== null && ![null, asked].includes(body.args_digest)) {
    fail("binding_mismatch", "approval names other arguments");
  }
  if (body.type === "edit" && body.args_digest === asked) fail("binding_mismatch", "an edit must change the arguments");
  if (body.type === "respond" && request.response_schema !== null) fitsSchema(body.response, request.response_schema);
  if (decision.operator !== decided.actor) fail("binding_mismatch", "decided by someone other than the lease holder");
  const members = entriesOf(queueOperators).find(([queue]) => queue === bundle.queue)?.[1] ?? [];
  if (![...members].includes(decision.operator)) {
    fail("policy_denied", `${decision.operator} does not serve queue '${bundle.queue}'`);
  }
  return decision;
}
