// The file `baton verify` checks offline, as gateway/verify.py build_export
// writes it: the RFC 8785 canonical JSON (s3.2) of the HandoffExport model
//   {"type": "baton-handoff-export", "bundle": <sealed JWE object | compact JWS>,
//    "events": [<signed lifecycle event>, ...], "decision": <token> | null,
//    "queue": <name>, "conversation": <id>}
// followed by one "\n". verify.py refuses a file that is not exactly the
// canonical form of what it parses to, so the bytes must match build_export's.
//
// Invariants (the model's fields, each violation "invalid_artifact"):
// - bundle is a string or a plain JSON object; events 1..1024 strings;
//   decision a string or null (never omitted); queue a Name
//   (^[a-z0-9][a-z0-9._-]{0,62}$); conversation a string of at most 256
//   characters (code points, as pydantic counts); nothing else is written.
// buildExport is pure.

import { VerificationError } from "./errors.js";
import { canonicalize } from "./jcs.js";

export const EXPORT_TYPE = "baton-handoff-export";
export const MAX_EVENTS = 1024;
const NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const SHORT_TEXT = 256;

function invalid(detail) {
  return new VerificationError("invalid_artifact", `HandoffExport: ${detail}`);
}

/**
 * The export file's text (canonical JSON and a newline).
 * @param {{bundle: object | string, events: string[], decision: string | null,
 *   queue: string, conversation: string}} parts
 * @returns {string}
 */
export function buildExport({ bundle, events, decision, queue, conversation }) {
  const plainObject =
    bundle !== null &&
    typeof bundle === "object" &&
    !Array.isArray(bundle) &&
    [Object.prototype, null].includes(Object.getPrototypeOf(bundle));
  if (typeof bundle !== "string" && !plainObject) throw invalid("bundle must be a compact JWS or a JWE object");
  if (!Array.isArray(events) || events.length < 1 || events.length > MAX_EVENTS) {
    throw invalid(`events must be 1 to ${MAX_EVENTS} signed events`);
  }
  if (!events.every((event) => typeof event === "string")) throw invalid("every event must be a string");
  if (decision !== null && typeof decision !== "string") throw invalid("decision must be a string or null");
  if (typeof queue !== "string" || !NAME.test(queue)) throw invalid("queue is not a valid name");
  if (typeof conversation !== "string" || [...conversation].length > SHORT_TEXT) {
    throw invalid(`conversation must be a string of at most ${SHORT_TEXT} characters`);
  }
  return `${canonicalize({ type: EXPORT_TYPE, bundle, events: [...events], decision, queue, conversation })}\n`;
}
