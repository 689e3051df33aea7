// One handoff: open it here, show it, act on it.
//
// Invariants (the same as gateway/inbox_client.py's, in the browser):
// * the bundle is decrypted with this operator's non-extractable key and
//   shown only after the gateway's signature and every integrity check
//   passed (js/bundle.js openBundle) and its id, queue, conversation, origin,
//   version, digest and args_digest equal the gateway's clear summary; the
//   lifecycle verifies as one gateway-signed chain of this bundle. Anything
//   else turns the badge red with the reason, and no decision can be signed;
// * a decision is signed here, bound to the opened bundle's digest and
//   version and to this operator's live lease (as the signed lifecycle
//   records it); a response must fit the request's response schema;
// * agent-written content is rendered as text only (ui/dom.js);
// * a masked PII value is shown only after the operator gave a reason (the
//   gateway audits it) and the original matched the signed commitment.

import { ApiError } from "../api.js";
import { openBundle, openReveals, verifyDecision, verifyEvents, verifyReveal } from "../js/bundle.js";
import { decisionBody, makeDecision, signDecision } from "../js/decision.js";
import { buildExport } from "../js/export.js";
import { canonicalize, parseStrict } from "../js/jcs.js";
import { validate } from "../js/schema.js";
import { jsonDiff } from "../ui/diff.js";
import { el, flash, formatDuration, formatTime, jsonBlock, replace } from "../ui/dom.js";

class Mismatch extends Error {
  constructor(message) {
    super(message);
    this.code = "binding_mismatch";
  }
}

/** The opened bundle is the one the gateway's summary describes (inbox_client._check_matches). */
function checkMatches(opened, summary) {
  const bundle = opened.bundle;
  if (opened.bundleDigest !== summary.bundle_digest) {
    throw new Mismatch("the decrypted bundle's digest is not the one the gateway lists");
  }
  for (const key of ["bundle_id", "queue", "conversation", "origin"]) {
    if (summary[key] !== bundle[key]) throw new Mismatch(`the decrypted bundle's ${key} is not the one the gateway lists`);
  }
  if (typeof summary.version !== "number" || summary.version < bundle.version) {
    throw new Mismatch("the gateway lists an older version than the decrypted bundle");
  }
  const action = bundle.request.requested_action;
  const signed = action ? (action.args_digest ?? null) : null;
  if ((summary.args_digest ?? null) !== signed) throw new Mismatch("the gateway's args_digest is not the signed request's");
  // The gateway checks responses against its clear copy of the schema: it must be the signed one.
  if (canonicalize(summary.response_schema ?? null) !== canonicalize(bundle.request.response_schema ?? null)) {
    throw new Mismatch("the gateway's response_schema is not the signed request's");
  }
}

/** The fencing token of this operator's live lease, or an explanation (inbox_client._own_lease). */
function ownLease(state, identity) {
  const { summary, opened, events } = state;
  const lease = summary.lease;
  if (summary.version !== opened.bundle.version) return { why: `already has an outcome (${summary.status})` };
  if (summary.status !== "claimed" || !lease) return { why: `is ${summary.status}: claim it first` };
  if (lease.owner !== identity) return { why: `is claimed by ${lease.owner}, not you` };
  if (!(lease.until > Date.now() / 1000)) return { why: "your lease has lapsed: claim it again" };
  const claims = events.filter((e) => e.type === "claimed");
  const last = claims[claims.length - 1];
  if (!last || last.actor !== identity || last.fencing_token !== lease.fencing_token) {
    return { why: "the signed lifecycle does not record your lease: claim it again" };
  }
  return { token: lease.fencing_token };
}

function definitionList(pairs) {
  const dl = el("dl", { class: "facts" });
  for (const [term, value] of pairs) {
    if (value === undefined || value === null || value === "") continue;
    dl.append(el("dt", {}, term), el("dd", {}, typeof value === "object" ? jsonBlock(value) : String(value)));
  }
  return dl;
}

function badge(state) {
  if (state.failure) {
    return el(
      "section",
      { class: "badge bad", id: "badge", role: "alert" },
      el("strong", {}, "Not verified"),
      el("p", { id: "badge-reason" }, `${state.failure.code ?? "error"}: ${state.failure.message}`),
      el("p", { class: "muted" }, "Nothing from this bundle is shown, and no decision can be signed on it."),
    );
  }
  const { opened, events, summary } = state;
  const bundle = opened.bundle;
  const now = Date.now() / 1000;
  const fresh = now < bundle.resolve_by ? `resolve within ${formatDuration(bundle.resolve_by - now)}` : "past its deadline";
  return el(
    "section",
    { class: "badge good", id: "badge" },
    el("strong", {}, "Verified"),
    definitionList([
      ["Signed by", `${bundle.gateway} (key ${opened.signerKid})`],
      ["Transcript", `${bundle.transcript.length} entries, chain intact to ${bundle.integrity.transcript_head}`],
      ["Digest", opened.bundleDigest],
      ["Lifecycle", `${events.length} signed events, ${summary.status}`],
      ["Freshness", `created ${formatTime(bundle.created_at)}, ${fresh}`],
    ]),
  );
}

function entryTitle(entry) {
  const parts = [`#${entry.seq}`, entry.protocol.toUpperCase(), entry.kind.replace("_", " ")];
  if (entry.method) parts.push(entry.method);
  if (entry.status) parts.push(String(entry.status));
  return parts.join(" · ");
}

/** What the body of an MCP or A2A message says, highlighted for a person. */
function bodySummary(entry, json) {
  if (!json || typeof json !== "object") return null;
  const params = json.params ?? {};
  if (entry.method === "tools/call" && params.name) {
    return definitionList([
      ["Tool", params.name],
      ["Arguments", params.arguments ?? {}],
    ]);
  }
  if (json.result && Array.isArray(json.result.content)) {
    const texts = json.result.content.filter((c) => c && c.type === "text").map((c) => String(c.text));
    return definitionList([
      ["Result", texts.join("\n") || "(no text)"],
      ["Error", json.result.isError ? "yes" : null],
    ]);
  }
  if (json.error) return definitionList([["Error", json.error]]);
  const texts = a2aTexts(params.message ?? json.result);
  return texts.length ? el("div", { class: "said" }, ...texts.map((t) => el("p", { class: "text" }, t))) : null;
}

/** The text parts of an A2A message, task or its status message (shown as text). */
function a2aTexts(value) {
  if (!value || typeof value !== "object") return [];
  const message = value.parts ? value : value.message ?? value.status?.message ?? value.task?.status?.message;
  const parts = message && Array.isArray(message.parts) ? message.parts : [];
  return parts.filter((p) => p && typeof p.text === "string").map((p) => p.text);
}

function timeline(state, agent) {
  const bundle = state.opened.bundle;
  const bodies = new Map(bundle.bodies.map((b) => [b.seq, b]));
  const view = bundle.agent_views.find((v) => v.agent === agent);
  const items = bundle.transcript.filter(
    (entry) => !agent || (view && entry.seq <= view.saw_through_seq && (entry.from === agent || entry.to === agent)),
  );
  const list = el("ol", { class: "timeline", id: "timeline" });
  for (const entry of items) {
    const body = bodies.get(entry.seq);
    list.append(
      el(
        "li",
        { class: `entry ${entry.protocol} ${entry.kind}`, dataset: { seq: String(entry.seq) } },
        el(
          "header",
          {},
          el("span", { class: "title" }, entryTitle(entry)),
          el("span", { class: "who" }, `${entry.from} → ${entry.to}`),
          el("time", {}, formatTime(entry.ts / 1000)),
          el(
            "span",
            { class: entry.verified ? "sig ok" : "sig none" },
            entry.verified ? `signed (${entry.signer})` : "unsigned (mTLS only)",
          ),
        ),
        body ? bodySummary(entry, body.json) : null,
        body
          ? body.raw !== null && body.raw !== undefined
            ? el("p", { class: "muted" }, `${body.media_type}, ${entry.body_size ?? "?"} bytes (not JSON; shown in the export)`)
            : el("details", {}, el("summary", {}, `Body (${body.media_type})`), jsonBlock(body.json, "json body"))
          : null,
      ),
    );
  }
  if (!items.length) list.append(el("li", { class: "muted" }, "No entries."));
  return list;
}

function history(events) {
  return el(
    "table",
    { class: "history", id: "history" },
    el("thead", {}, el("tr", {}, ...["When", "Event", "By", "Lease", "Note"].map((h) => el("th", { scope: "col" }, h)))),
    el(
      "tbody",
      {},
      ...events.map((e) =>
        el(
          "tr",
          { class: `event ${e.type}` },
          el("td", {}, formatTime(e.ts / 1000)),
          el("td", {}, e.type),
          el("td", {}, e.actor),
          el("td", {}, e.fencing_token ? `#${e.fencing_token}${e.lease_until ? " until " + formatTime(e.lease_until) : ""}` : ""),
          el("td", {}, [e.outcome, e.reason, e.note].filter(Boolean).join(" · ")),
        ),
      ),
    ),
  );
}

export async function showBundle(main, operator, verify, bundleId) {
  const state = { bundleId, queue: null, failure: null, revealed: new Map(), agent: "" };

  async function load() {
    const summaries = await operator.list();
    const listed = summaries.find((s) => s.bundle_id === bundleId);
    if (!listed) throw new ApiError(404, "task_not_found", `no handoff ${bundleId} in your queues`);
    state.queue = listed.queue;
    const reply = await operator.command("show", { queue: state.queue, bundleId });
    state.reply = reply;
    state.summary = reply.bundle;
    state.failure = null;
    try {
      if (!reply.bundle || reply.bundle.bundle_id !== bundleId) throw new Mismatch("the gateway answered with another bundle");
      state.opened = await openBundle(reply.jwe, operator.keys.encryption, verify.gateway);
      checkMatches(state.opened, reply.bundle);
      state.events = await verifyEvents(reply.events, verify.gateway, bundleId);
      state.decision = reply.decision
        ? await verifyDecision(reply.decision, state.opened, state.events, verify.operators, verify.queueOperators)
        : null;
      if (!reply.decision && state.events.some((e) => e.type === "decided")) {
        throw new Mismatch("the lifecycle records a decision the gateway did not send");
      }
    } catch (error) {
      state.failure = { code: error.code, message: error.message };
    }
  }

  async function act(what, run) {
    try {
      await run();
      await load();
      render();
      flash(what, "ok");
    } catch (error) {
      flash(error.message, "error");
      try {
        await load();
        render();
      } catch {
        // keep the page as it is; the flash says what failed
      }
    }
  }

  function leaseActions() {
    const { summary } = state;
    const mine = summary.lease && summary.lease.owner === operator.identity;
    const claim = el("button", { type: "button", id: "claim" }, mine ? "Renew lease" : "Claim");
    claim.addEventListener("click", () =>
      act("Claimed.", () => operator.command("claim", { queue: state.queue, bundleId })),
    );
    const release = el("button", { type: "button", id: "release", class: "secondary" }, "Release");
    release.addEventListener("click", () =>
      act("Released.", () =>
        operator.command("release", { queue: state.queue, bundleId, fencingToken: summary.lease.fencing_token }),
      ),
    );
    const open = summary.status === "queued" || summary.status === "claimed";
    return el(
      "div",
      { class: "actions" },
      open && !state.failure ? claim : null,
      mine && summary.status === "claimed" ? release : null,
      el(
        "span",
        { class: "lease", id: "lease" },
        summary.lease ? `Claimed by ${summary.lease.owner} until ${formatTime(summary.lease.until)}` : "Not claimed",
      ),
    );
  }

  function decideForm() {
    const bundle = state.opened.bundle;
    const request = bundle.request;
    const lease = ownLease(state, operator.identity);
    if (lease.why) return el("p", { class: "muted", id: "decide-why" }, `To decide: this handoff ${lease.why}.`);
    const kinds = request.allowed_decisions;
    const form = el("form", { class: "decide", id: "decide-form" });
    const choice = el("fieldset", {}, el("legend", {}, "Decision"));
    for (const kind of kinds) {
      choice.append(
        el(
          "label",
          { class: "choice" },
          el("input", { type: "radio", name: "kind", value: kind, id: `kind-${kind}`, checked: kind === kinds[0] }),
          kind,
        ),
      );
    }
    const original = request.requested_action ? request.requested_action.arguments : null;
    const args = el("textarea", { id: "arguments", rows: "8", spellcheck: "false" });
    args.value = JSON.stringify(original, null, 2);
    const diff = el("pre", { class: "diff", id: "edit-diff" });
    const response = el("textarea", { id: "response", rows: "6", spellcheck: "false" });
    response.value = "{}";
    const responseCheck = el("p", { class: "check", id: "response-check" });
    const toQueue = el("input", { id: "to-queue" });
    const message = el("input", { id: "message", maxlength: "2000" });
    const submit = el("button", { type: "submit", id: "decide" }, "Sign and send decision");
    const sections = {
      edit: el("div", { class: "kind-edit" }, el("label", { for: "arguments" }, "New arguments (JSON)"), args, el("p", {}, "Change:"), diff),
      respond: el(
        "div",
        { class: "kind-respond" },
        el("label", { for: "response" }, "Response (JSON)"),
        response,
        request.response_schema ? el("details", {}, el("summary", {}, "Response schema"), jsonBlock(request.response_schema)) : null,
        responseCheck,
      ),
      reroute: el("div", { class: "kind-reroute" }, el("label", { for: "to-queue" }, "Queue"), toQueue),
    };

    const parse = (textarea) => {
      try {
        return { value: parseStrict(textarea.value) };
      } catch (error) {
        return { error: `not JSON: ${error.message}` };
      }
    };
    let shown = null;
    function refresh() {
      const kind = new FormData(form).get("kind");
      // A textarea's "change" fires on blur, i.e. on the mousedown of a click
      // on the submit button: re-rendering then would swallow the click.
      const key = JSON.stringify([kind, args.value, response.value]);
      if (key === shown) return;
      shown = key;
      for (const [name, section] of Object.entries(sections)) section.hidden = name !== kind;
      let ok = true;
      if (kind === "edit") {
        const parsed = parse(args);
        if (parsed.error) {
          replace(diff, parsed.error);
          ok = false;
        } else {
          replace(diff, ...jsonDiff(original, parsed.value).map((d) => el("span", { class: `d${d.op === " " ? "same" : d.op === "+" ? "add" : "del"}` }, `${d.op} ${d.line}\n`)));
          ok = JSON.stringify(parsed.value) !== JSON.stringify(original);
        }
      }
      if (kind === "respond") {
        const parsed = parse(response);
        if (parsed.error) {
          replace(responseCheck, parsed.error);
          ok = false;
        } else if (request.response_schema) {
          try {
            validate(parsed.value, request.response_schema);
            replace(responseCheck, "Fits the response schema.");
          } catch (error) {
            replace(responseCheck, `Does not fit the response schema: ${error.message}`);
            ok = false;
          }
        } else {
          replace(responseCheck, "");
        }
        responseCheck.className = ok ? "check ok" : "check bad";
      }
      submit.disabled = !ok;
    }
    form.addEventListener("input", refresh);
    form.addEventListener("change", refresh);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const kind = new FormData(form).get("kind");
      act(`Decision sent: ${kind}.`, async () => {
        const body = await decisionBody(kind, bundle, {
          arguments: kind === "edit" ? parseStrict(args.value) : undefined,
          response: kind === "respond" ? parseStrict(response.value) : undefined,
          toQueue: kind === "reroute" ? toQueue.value.trim() : undefined,
          message: message.value.trim() || undefined,
        });
        const decision = makeDecision(
          {
            bundleId,
            bundleDigest: state.opened.bundleDigest,
            bundleVersion: bundle.version,
            fencingToken: lease.token,
          },
          body,
          { operator: operator.identity, now: Date.now() / 1000 },
        );
        const token = await signDecision(decision, operator.keys.signing);
        await operator.command("decide", { queue: state.queue, bundleId, decision: token });
      });
    });
    form.append(
      choice,
      ...Object.values(sections),
      el("label", { for: "message" }, "Message to the agent (optional)"),
      message,
      submit,
    );
    refresh();
    return form;
  }

  function maskedFields() {
    const bundle = state.opened.bundle;
    if (!bundle.masked.length) return null;
    const rows = el("ul", { class: "masked", id: "masked" });
    for (const field of bundle.masked) {
      const revealed = state.revealed.get(field.path);
      const item = el(
        "li",
        { dataset: { path: field.path } },
        el("code", {}, field.path),
        field.entity ? el("span", { class: "entity" }, field.entity) : null,
        el("span", { class: "token" }, field.token),
      );
      if (revealed !== undefined) {
        item.append(el("span", { class: "revealed" }, "revealed: "), el("span", { class: "original" }, JSON.stringify(revealed)));
      } else if (operator.session.reveal_pii && state.reply.has_reveals) {
        const reason = el("input", { class: "reveal-reason", placeholder: "Why do you need it?", maxlength: "500" });
        const button = el("button", { type: "button", class: "reveal secondary" }, "Reveal");
        button.addEventListener("click", () => {
          if (!reason.value.trim()) {
            flash("A reveal needs a reason; it is recorded in the audit log.", "error");
            return;
          }
          act(`Revealed ${field.path} (audited).`, async () => {
            const reply = await operator.command("reveal", {
              queue: state.queue,
              bundleId,
              reason: reason.value.trim(),
              paths: [field.path],
            });
            const reveals = await openReveals(reply.reveals, operator.keys.encryption, bundleId);
            const original = reveals.items.find((r) => r.path === field.path);
            if (!original) throw new Mismatch(`the reveal set has no original for ${field.path}`);
            state.revealed.set(field.path, await verifyReveal(field, original));
          });
        });
        item.append(reason, button);
      }
      rows.append(item);
    }
    return el("section", { class: "card" }, el("h2", {}, "Masked personal data"), rows);
  }

  function exportButton() {
    const button = el("button", { type: "button", id: "export", class: "secondary" }, "Export for baton verify");
    button.addEventListener("click", () => {
      const bundle = state.opened.bundle;
      const text = buildExport({
        bundle: state.reply.jwe,
        events: state.reply.events,
        decision: state.reply.decision ?? null,
        queue: bundle.queue,
        conversation: bundle.conversation,
      });
      const url = URL.createObjectURL(new Blob([text], { type: "application/json" }));
      const link = document.createElement("a");
      link.href = url;
      link.download = `${bundleId}.export.json`;
      link.click();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    });
    return button;
  }

  function render() {
    const { summary } = state;
    const header = el(
      "header",
      { class: "bundle-head" },
      el("h1", {}, bundleId),
      definitionList([
        ["Queue", state.queue],
        ["Status", summary.status],
        ["Origin", summary.origin],
        ["Priority", summary.priority],
        ["Resolve by", formatTime(summary.resolve_by)],
      ]),
    );
    if (state.failure) {
      replace(main, header, badge(state), leaseActions());
      return;
    }
    const bundle = state.opened.bundle;
    const request = bundle.request;
    const agents = el("select", { id: "agent-view" }, el("option", { value: "" }, "every agent"));
    for (const view of bundle.agent_views) {
      agents.append(el("option", { value: view.agent, selected: view.agent === state.agent }, `${view.agent} (saw through #${view.saw_through_seq})`));
    }
    const timelineHolder = el("div", {}, timeline(state, state.agent));
    agents.addEventListener("change", () => {
      state.agent = agents.value;
      replace(timelineHolder, timeline(state, state.agent));
    });
    replace(
      main,
      header,
      badge(state),
      el(
        "section",
        { class: "card", id: "escalation" },
        el("h2", {}, "Why a person is needed"),
        definitionList([
          ["Reason", `${request.reason_code}: ${request.reason_text}`],
          ["Trigger", request.trigger],
          ["Failure", request.failure],
          ["Requested action", request.requested_action],
          ["Allowed decisions", request.allowed_decisions.join(", ")],
        ]),
      ),
      maskedFields(),
      el("section", { class: "card" }, el("h2", {}, "Act"), leaseActions(), state.decision ? definitionList([["Decided", `${state.decision.decision.type} by ${state.decision.operator}`]]) : decideForm()),
      el(
        "section",
        { class: "card" },
        el("h2", {}, "Conversation"),
        el("label", { for: "agent-view" }, "What this agent saw: "),
        agents,
        timelineHolder,
      ),
      el("section", { class: "card" }, el("h2", {}, "History"), history(state.events), exportButton()),
    );
  }

  replace(main, el("p", { class: "muted" }, "Opening the bundle…"));
  try {
    await load();
  } catch (error) {
    replace(main, el("h1", {}, bundleId), el("p", { class: "badge bad", role: "alert" }, error.message));
    return;
  }
  render();
}
