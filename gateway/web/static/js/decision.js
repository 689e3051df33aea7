// Decisions and operator commands, made and signed in the browser with the
// operator's own (non-extractable) ES256 key: protocol/decision.py
// (make_decision_at, sign_decision), protocol/operator.py (make_command_at,
// sign_command) and gateway/inbox_client.py decision_body, in JavaScript.
//
// What is signed is a compact JWS (RFC 7515 s7.1; js/jose.js signCompact,
// header alg/kid/typ as keys/jose.py writes it) over the RFC 8785 canonical
// form (s3.2) of the object, with every member present and absent ones null,
// exactly as the Python models serialise: the same inputs (and nonce) give
// the same signed bytes in both languages.
//
// Invariants:
// - a decision binds to what the operator was shown: the opened bundle's id,
//   digest and version and the lease's fencing token; an approval to the
//   signed request's args_digest, an edit to the digest of its new arguments;
//   a respond must fit the request's response_schema (js/schema.js);
// - a decision lives at most MAX_DECISION_TTL_S (default 900 s), a command at
//   most MAX_COMMAND_TTL_S (default 60 s); iat is floor(now) in seconds;
//   nonces are 128 random bits, base64url (crypto.getRandomValues);
// - nothing is signed that the Python models would refuse: every failure is
//   a VerificationError with protocol/errors.py's code ("policy_denied",
//   "invalid_request", "invalid_artifact", "response_invalid", ...);
// - pure functions but for the random nonce and the awaited WebCrypto calls;
//   inputs are never modified.

import { b64urlEncode } from "./b64.js";
import {
  DECISION_TYP,
  MAX_DECISION_TTL_S,
  REQUIRED,
  VerificationError,
  decisionBodyRecord,
  decisionChecked,
  decisionRecord,
  fitsSchema,
  record,
  valid,
} from "./bundle.js";
import { canonicalBytes, canonicalDigest } from "./jcs.js";
import { signCompact } from "./jose.js";

export { DECISION_TYP, MAX_DECISION_TTL_S };
export const COMMAND_TYP = "baton-operator-command+jws";
export const COMMAND_MEDIA_TYPE = "application/baton-operator-command+jws";
export const MAX_COMMAND_TTL_S = 300;
export const DECISION_SCHEMA = "baton.handoff-decision/v1";
export const COMMAND_SCHEMA = "baton.operator-command/v1";
export const COMMAND_OPS = Object.freeze(["list", "show", "claim", "release", "decide", "reveal"]);
const ON_BUNDLE = new Set(["show", "claim", "release", "decide", "reveal"]);
const STATUSES = ["queued", "claimed", "decided", "delivered", "acknowledged", "expired", "cancelled"];

function fail(code, message) {
  throw new VerificationError(code, message);
}

/** 128 random bits, base64url (the Python's b64url_encode(secrets.token_bytes(16))). */
export function randomNonce() {
  return b64urlEncode(globalThis.crypto.getRandomValues(new Uint8Array(16)));
}

// --------------------------------------------------------------------------- decisions

/**
 * gateway/inbox_client.py decision_body: the decision body of `kind` on the
 * opened bundle's signed request (`bundle`: openBundle's .bundle). Options
 * are values already parsed (js/jcs.js parseStrict), `undefined` when not
 * given: `arguments` (edit), `response` (respond), `toQueue` (reroute),
 * `message`. Returns the body with all seven members, ready for JCS.
 */
export async function decisionBody(kind, bundle, options = {}) {
  const { arguments: args, response, toQueue, message } = options;
  const request = bundle.request;
  if (!request.allowed_decisions.includes(kind)) {
    fail("policy_denied", `${kind} is not allowed for ${bundle.bundle_id} (allowed: ${request.allowed_decisions.join(", ")})`);
  }
  const given = (value) => value !== undefined && value !== null;
  if (args !== undefined && kind !== "edit") fail("invalid_request", "arguments go with edit only");
  if (response !== undefined && kind !== "respond") fail("invalid_request", "a response goes with respond only");
  if (given(toQueue) && kind !== "reroute") fail("invalid_request", "a queue goes with reroute only");
  const body = {
    type: kind,
    commitment: kind === "reject" ? "refused" : "agreed",
    arguments: null,
    args_digest: null,
    response: null,
    reroute_queue: null,
    message: given(message) ? message : null,
  };
  const action = request.requested_action;
  if (kind === "approve") {
    body.args_digest = action === null ? null : action.args_digest;
  } else if (kind === "edit") {
    if (args === undefined) fail("invalid_request", "edit needs the new arguments");
    body.arguments = args;
    body.args_digest = await canonicalDigest(args);
  } else if (kind === "respond") {
    if (response === undefined) fail("invalid_request", "respond needs the answer");
    if (request.response_schema !== null) fitsSchema(response, request.response_schema, "the response");
    body.response = response;
  } else if (kind === "reroute") {
    if (!toQueue) fail("invalid_request", "reroute needs the queue");
    body.reroute_queue = toQueue;
  }
  return decisionBodyRecord(body); // DecisionBody.build: its validators
}

/**
 * protocol/decision.py make_decision_at: the decision for `binding`
 * ({bundleId, bundleDigest, bundleVersion, fencingToken}) with `body`, by
 * `operator`, issued at floor(`now`) for `ttlS` seconds; `nonce` defaults to
 * 128 random bits. Returns the validated decision object (pure but the nonce).
 */
export function makeDecision(binding, body, { operator, now, ttlS = 900, nonce } = {}) {
  const iat = Math.floor(now);
  return decisionRecord({
    schema: DECISION_SCHEMA,
    bundle_id: binding.bundleId,
    bundle_digest: binding.bundleDigest,
    bundle_version: binding.bundleVersion,
    fencing_token: binding.fencingToken,
    operator,
    decision: body,
    nonce: nonce || randomNonce(),
    iat,
    exp: iat + ttlS,
  });
}

/**
 * protocol/decision.py sign_decision: compact JWS (typ baton-decision+jws)
 * over JCS(decision) by the operator's `signingKey` ({kid, alg, key}).
 */
export async function signDecision(decision, signingKey) {
  const checked = await decisionChecked(decision);
  return signCompact(canonicalBytes(checked), signingKey, { typ: DECISION_TYP });
}

// --------------------------------------------------------------------------- commands

const COMMAND = {
  schema: [valid.oneOf(COMMAND_SCHEMA), COMMAND_SCHEMA],
  op: [valid.oneOf(...COMMAND_OPS), REQUIRED],
  operator: [valid.operator, REQUIRED],
  aud: [valid.identity, REQUIRED],
  queue: [valid.name, REQUIRED],
  bundle_id: [valid.nullable(valid.bundleId), null],
  status: [valid.nullable(valid.oneOf(...STATUSES)), null],
  fencing_token: [valid.nullable(valid.intAtLeast(1)), null],
  decision: [valid.nullable((v) => typeof v === "string" && v.length >= 1 && v.length <= 200_000), null],
  reason: [valid.nullable(valid.text), null],
  paths: [valid.arrayOf(valid.pointer, { max: 64 }), []],
  nonce: [valid.nonce, REQUIRED],
  iat: [valid.intAtLeast(0), REQUIRED],
  exp: [valid.intAtLeast(0), REQUIRED],
};

/** A command validated as protocol/operator.py OperatorCommand; "invalid_artifact". Pure. */
export function commandRecord(value) {
  const command = record("operator command", value, COMMAND);
  const why = (message) => fail("invalid_artifact", `operator command: ${message}`);
  if (!(command.iat < command.exp && command.exp <= command.iat + MAX_COMMAND_TTL_S)) {
    why(`exp must be after iat and at most ${MAX_COMMAND_TTL_S}s later`);
  }
  if (ON_BUNDLE.has(command.op) !== (command.bundle_id !== null)) {
    why(`${command.op} ${ON_BUNDLE.has(command.op) ? "needs" : "takes no"} bundle_id`);
  }
  if (command.op === "release" && command.fencing_token === null) why("release names the lease's fencing_token");
  if ((command.op === "decide") !== (command.decision !== null)) why("decision is required for, and only for, decide");
  if (command.op === "reveal" && !(command.reason && command.reason.trim())) why("a reveal needs a reason");
  if (command.status !== null && command.op !== "list") why("status filters list only");
  command.paths = [...command.paths];
  return command;
}

/**
 * protocol/operator.py make_command_at: command `op` by `operator` for the
 * gateway `audience` on `queue`, issued at floor(`now`) for `ttlS` seconds;
 * the optional members default to null (`paths` to []). Pure but the nonce.
 */
export function makeCommand(op, options = {}) {
  const { operator, audience, queue, now, ttlS = 60, nonce, paths = [] } = options;
  const iat = Math.floor(now);
  return commandRecord({
    schema: COMMAND_SCHEMA,
    op,
    operator,
    aud: audience,
    queue,
    bundle_id: options.bundleId ?? null,
    status: options.status ?? null,
    fencing_token: options.fencingToken ?? null,
    decision: options.decision ?? null,
    reason: options.reason ?? null,
    paths: [...paths],
    nonce: nonce || randomNonce(),
    iat,
    exp: iat + ttlS,
  });
}

/** protocol/operator.py sign_command: compact JWS (typ baton-operator-command+jws). */
export async function signCommand(command, signingKey) {
  return signCompact(canonicalBytes(commandRecord(command)), signingKey, { typ: COMMAND_TYP });
}
