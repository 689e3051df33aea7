// The queue: every handoff in the queues this operator serves, live.
//
// The list comes from the gateway's server-sent events (/inbox/web/events):
// clear-text summaries only (status, reason code, origin, priority,
// deadlines, lease), never bundle content. Filters and counts are computed
// here; a new snapshot re-renders the table without reloading the page.

import { followQueue, getSession } from "../api.js";
import { el, formatDuration, formatTime, replace } from "../ui/dom.js";

const STATUSES = ["queued", "claimed", "decided", "delivered", "acknowledged", "expired", "cancelled"];
const OPEN = new Set(["queued", "claimed"]);
const DUE_SOON_S = 15 * 60;
const AGES = { any: Infinity, "1h": 3600, "24h": 86400, "7d": 7 * 86400 };

/** "overdue", "due-soon", "on-time", or "closed" for a summary at `now`. */
export function slaState(summary, now) {
  if (!OPEN.has(summary.status)) return "closed";
  const left = summary.resolve_by - now;
  if (left <= 0) return "overdue";
  return left <= DUE_SOON_S ? "due-soon" : "on-time";
}

function select(id, label, options, value = "") {
  const node = el("select", { id, name: id });
  for (const [optionValue, optionLabel] of options) {
    node.append(el("option", { value: optionValue, selected: optionValue === value }, optionLabel));
  }
  return el("label", { class: "filter" }, label, node);
}

function distinct(bundles, key) {
  return [...new Set(bundles.map((b) => String(b[key])))].sort();
}

export function showQueue(main, operator) {
  const state = { bundles: [], now: Date.now() / 1000, received: 0 };
  const filters = el("form", { class: "filters", id: "filters" });
  const counts = el("p", { class: "counts", id: "counts" });
  const live = el("span", { class: "live", id: "live" }, "connecting…");
  const body = el("tbody", { id: "queue-rows" });
  const table = el(
    "table",
    { class: "queue", id: "queue" },
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        ...["Handoff", "Queue", "Status", "Reason", "Origin", "Priority", "Age", "SLA", "Claimed by"].map((h) =>
          el("th", { scope: "col" }, h),
        ),
      ),
    ),
    body,
  );
  replace(
    main,
    el("h1", {}, "Queue ", live),
    el("p", { class: "muted" }, `Queues: ${operator.session.queues.join(", ")}`),
    filters,
    counts,
    table,
  );

  const values = () => Object.fromEntries(new FormData(filters).entries());

  function renderFilters() {
    const current = values();
    const { bundles } = state;
    replace(
      filters,
      select("status", "Status", [["", "any"], ["open", "open"], ...STATUSES.map((s) => [s, s])], current.status ?? "open"),
      select("reason", "Reason", [["", "any"], ...distinct(bundles, "reason_code").map((r) => [r, r])], current.reason),
      select("origin", "Origin", [["", "any"], ...distinct(bundles, "origin").map((o) => [o, o])], current.origin),
      select(
        "priority",
        "Priority",
        [["", "any"], ["1", "1 (highest)"], ["2", "2"], ["3", "3"], ["4", "4"]],
        current.priority,
      ),
      select(
        "sla",
        "SLA",
        [["", "any"], ["overdue", "overdue"], ["due-soon", "due within 15 min"], ["on-time", "on time"], ["closed", "closed"]],
        current.sla,
      ),
      select("age", "Age", [["any", "any"], ["1h", "under 1 h"], ["24h", "under 24 h"], ["7d", "under 7 days"]], current.age ?? "any"),
    );
  }

  function matches(bundle, f) {
    if (f.status === "open" ? !OPEN.has(bundle.status) : f.status && bundle.status !== f.status) return false;
    if (f.reason && bundle.reason_code !== f.reason) return false;
    if (f.origin && bundle.origin !== f.origin) return false;
    if (f.priority && String(bundle.priority) !== f.priority) return false;
    if (f.sla && slaState(bundle, state.now) !== f.sla) return false;
    const age = AGES[f.age ?? "any"] ?? Infinity;
    return state.now - bundle.created_at <= age;
  }

  function renderRows() {
    const f = values();
    const { bundles, now } = state;
    const shown = bundles
      .filter((b) => matches(b, f))
      .sort((a, b) => a.priority - b.priority || a.resolve_by - b.resolve_by);
    const byStatus = STATUSES.map((s) => [s, bundles.filter((b) => b.status === s).length]).filter(([, n]) => n);
    replace(
      counts,
      `${shown.length} shown of ${bundles.length}`,
      byStatus.length ? " · " + byStatus.map(([s, n]) => `${n} ${s}`).join(" · ") : "",
    );
    replace(
      body,
      ...shown.map((b) => {
        const sla = slaState(b, now);
        const lease = b.lease
          ? `${b.lease.owner.replace(/^operator:/, "")} until ${formatTime(b.lease.until)}`
          : "-";
        return el(
          "tr",
          { class: `row ${b.status} ${sla}`, dataset: { bundle: b.bundle_id } },
          el("td", {}, el("a", { href: `/inbox/bundle/${b.bundle_id}`, class: "bundle-link" }, b.bundle_id)),
          el("td", {}, b.queue),
          el("td", {}, el("span", { class: `status ${b.status}` }, b.status)),
          el("td", {}, b.reason_code),
          el("td", { class: "origin" }, b.origin),
          el("td", {}, String(b.priority)),
          el("td", {}, formatDuration(Math.max(0, now - b.created_at))),
          el("td", { class: `sla ${sla}` }, sla === "closed" ? "-" : formatDuration(b.resolve_by - now)),
          el("td", { class: "claimant" }, lease),
        );
      }),
    );
    if (!shown.length) {
      body.append(el("tr", {}, el("td", { colspan: "9", class: "muted" }, "Nothing here.")));
    }
  }

  filters.addEventListener("change", renderRows);
  renderFilters();
  renderRows();
  const stop = followQueue(
    (snapshot) => {
      state.bundles = snapshot.bundles;
      state.now = typeof snapshot.now === "number" ? snapshot.now : Date.now() / 1000;
      state.received += 1;
      live.dataset.snapshots = String(state.received);
      renderFilters();
      renderRows();
    },
    async (status) => {
      replace(live, status === "live" ? "live" : status === "closed" ? "stopped" : "reconnecting…");
      live.className = `live ${status}`;
      if (status === "closed" && !(await getSession())) window.location.assign("/inbox/login");
    },
  );
  window.addEventListener("pagehide", stop, { once: true });
}
