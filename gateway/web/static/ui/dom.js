// DOM helpers for the inbox pages.
//
// Invariant: text that came from agents, the gateway or the network is only
// ever inserted as text (Node.textContent / document.createTextNode). Nothing
// here parses HTML, and no attribute is set from agent-controlled data except
// through setAttribute on a fixed, non-URL attribute name (no href/src from
// content: a transcript cannot load images or links that exfiltrate).

const URL_ATTRIBUTES = new Set(["href", "src", "action", "formaction", "srcset", "style"]);

/**
 * Create an element. `attrs` values are strings (set as attributes), `on*`
 * functions (event listeners) or `dataset` objects; `children` are nodes or
 * strings (text nodes).
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(node.dataset, value);
    } else if (URL_ATTRIBUTES.has(name) && !String(value).startsWith("/inbox/")) {
      throw new Error(`refusing ${name}=${String(value).slice(0, 40)}: only same-app paths`);
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(typeof child === "string" || typeof child === "number" ? text(child) : child);
  }
}

/** A text node: the only way content reaches the page. */
export function text(value) {
  return document.createTextNode(String(value));
}

/** Replace the children of `node`. */
export function replace(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

/** JSON as indented text in a <pre> (rendered as text, never as markup). */
export function jsonBlock(value, className = "json") {
  return el("pre", { class: className }, JSON.stringify(value, null, 2) ?? "null");
}

/** Seconds since the epoch as "YYYY-MM-DD HH:MM:SSZ". */
export function formatTime(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "-";
  return new Date(seconds * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

/** A duration in seconds as "3h 05m", "4m 10s", "12s" (negative: "overdue ..."). */
export function formatDuration(seconds) {
  const overdue = seconds < 0;
  let s = Math.floor(Math.abs(seconds));
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  const pad = (n) => String(n).padStart(2, "0");
  const out = d ? `${d}d ${pad(h)}h` : h ? `${h}h ${pad(m)}m` : m ? `${m}m ${pad(s)}s` : `${s}s`;
  return overdue ? `overdue ${out}` : out;
}

/** Show a transient message in the flash area (role=status). */
export function flash(message, kind = "info") {
  const area = document.getElementById("flash");
  if (!area) return;
  replace(area, el("p", { class: `flash ${kind}` }, message));
}

export function clearFlash() {
  const area = document.getElementById("flash");
  if (area) area.replaceChildren();
}
