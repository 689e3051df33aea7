// The inbox's client of the operator listener.
//
// Invariants:
// * every action is one operator command signed here, in the browser, with
//   the operator's non-extractable signing key (protocol/operator.py); the
//   session cookie only lets the request in, it never stands in for the
//   signature;
// * every POST carries the session's CSRF token and is same-origin; nothing
//   is sent to any other origin;
// * answers are read as JSON and returned as data: nothing here renders.

import { makeCommand, signCommand } from "./js/decision.js";
import { importPublicJwks } from "./js/jose.js";

const COMMAND_TYPE = "application/baton-operator-command+jws";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

async function answer(response, what) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (response.ok) return body;
  const error = body && typeof body === "object" ? body.error : null;
  if (response.status === 401 && error && error.code === "session_required") {
    // The session ended (idle timeout, sign-out elsewhere): sign in again.
    window.location.assign("/inbox/login");
  }
  const code = error && typeof error.code === "string" ? error.code : "http_" + response.status;
  const message = error && typeof error.message === "string" ? error.message : response.statusText;
  throw new ApiError(response.status, code, `${what}: ${message} (${code})`);
}

/** The live session, or null (401). */
export async function getSession() {
  const response = await fetch("/inbox/session", { cache: "no-store" });
  if (response.status === 401) return null;
  return answer(response, "session");
}

/** The ways to sign in this gateway offers (password, oidc). */
export async function loginMethods() {
  const response = await fetch("/inbox/session/methods", { cache: "no-store" });
  if (!response.ok) return ["password"];
  const body = await response.json();
  return Array.isArray(body.methods) ? body.methods : ["password"];
}

export async function login(name, password) {
  const response = await fetch("/inbox/session/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ name, password }),
    cache: "no-store",
  });
  return answer(response, "sign in");
}

export async function logout(session) {
  const response = await fetch("/inbox/session/logout", {
    method: "POST",
    headers: { "X-Baton-CSRF": session.csrf },
    cache: "no-store",
  });
  if (response.status !== 204 && response.status !== 401) await answer(response, "sign out");
}

/** Public keys to verify bundles, events and decisions with, imported once. */
export async function verificationKeys(session) {
  const v = session.verification;
  const operators = {};
  for (const [identity, jwks] of Object.entries(v.operators)) {
    operators[identity] = await importPublicJwks(jwks);
  }
  return {
    gateway: await importPublicJwks(v.gateway),
    operators,
    queueOperators: v.queue_operators,
  };
}

/** One operator, signing commands with its own key, over its session. */
export class Operator {
  constructor(session, keys) {
    this.session = session;
    this.keys = keys;
  }

  get identity() {
    return this.session.operator;
  }

  /** Sign `op` with a fresh nonce, send it, return the gateway's JSON answer. */
  async command(op, { queue, ...fields }) {
    const command = makeCommand(op, {
      operator: this.session.operator,
      audience: this.session.audience,
      queue,
      now: Date.now() / 1000,
      ...fields,
    });
    const token = await signCommand(command, this.keys.signing);
    const response = await fetch("/inbox/web/command", {
      method: "POST",
      headers: { "Content-Type": COMMAND_TYPE, "X-Baton-CSRF": this.session.csrf },
      body: token,
      cache: "no-store",
    });
    const what = fields.bundleId ? `${op} ${fields.bundleId}` : `${op} on ${queue}`;
    return answer(response, what);
  }

  /** Summaries in every queue this operator serves. */
  async list() {
    const found = [];
    for (const queue of this.session.queues) {
      const reply = await this.command("list", { queue });
      found.push(...(reply.bundles ?? []));
    }
    return found;
  }
}

/**
 * Follow the queue stream (server-sent events): `onSnapshot({now, bundles})`
 * for every snapshot; `onState("live" | "reconnecting" | "closed")` (closed: the
 * gateway refused the stream, e.g. the session ended). Returns a stop function.
 */
export function followQueue(onSnapshot, onState) {
  const source = new EventSource("/inbox/web/events");
  source.addEventListener("queue", (event) => {
    let snapshot;
    try {
      snapshot = JSON.parse(event.data);
    } catch {
      return;
    }
    if (snapshot && Array.isArray(snapshot.bundles)) onSnapshot(snapshot);
  });
  source.addEventListener("open", () => onState("live"));
  source.addEventListener("error", () =>
    onState(source.readyState === EventSource.CLOSED ? "closed" : "reconnecting"),
  );
  return () => source.close();
}
