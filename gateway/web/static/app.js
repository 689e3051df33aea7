// The inbox's entry point: find the session, the operator's keys, then the page.
//
// Pages: /inbox/login, /inbox/keys (import the operator's key files once),
// /inbox/ (the queue) and /inbox/bundle/<id> (one handoff). Without a live
// session every page but login sends the browser to login; without keys in
// this browser's IndexedDB the queue and bundle pages send it to keys.

import { getSession, logout, Operator, verificationKeys } from "./api.js";
import { loadKeys } from "./js/keystore.js";
import { el, flash, replace } from "./ui/dom.js";
import { showBundle } from "./pages/bundle.js";
import { showKeys } from "./pages/keys.js";
import { showLogin } from "./pages/login.js";
import { showQueue } from "./pages/queue.js";

const BUNDLE_PATH = /^\/inbox\/bundle\/(hb_[A-Za-z0-9_-]{16,64})$/;

function go(path) {
  window.location.assign(path);
}

function nav(session) {
  const area = document.getElementById("nav");
  if (!session) {
    replace(area);
    return;
  }
  const out = el("button", { type: "button", class: "link", id: "logout" }, "Sign out");
  out.addEventListener("click", async () => {
    await logout(session);
    go("/inbox/login");
  });
  replace(
    area,
    el("span", { class: "who", id: "who" }, session.name),
    el("a", { href: "/inbox/", class: "navlink" }, "Queue"),
    el("a", { href: "/inbox/keys", class: "navlink" }, "Keys"),
    out,
  );
}

async function main() {
  const main = document.getElementById("main");
  const path = window.location.pathname.replace(/\/+$/, "") || "/inbox";
  const session = await getSession();
  if (path === "/inbox/login") {
    if (session) return go("/inbox/");
    return showLogin(main);
  }
  if (!session) return go("/inbox/login");
  nav(session);
  if (path === "/inbox/keys") return showKeys(main, session);
  const keys = await loadKeys(session.operator);
  if (!keys) return go("/inbox/keys");
  const operator = new Operator(session, keys);
  const verify = await verificationKeys(session);
  if (path === "/inbox") return showQueue(main, operator);
  const match = BUNDLE_PATH.exec(path);
  if (match) return showBundle(main, operator, verify, match[1]);
  replace(main, el("h1", {}, "Not found"), el("p", {}, el("a", { href: "/inbox/" }, "Back to the queue")));
}

main().catch((error) => {
  flash(`The inbox could not start: ${error.message}`, "error");
});
