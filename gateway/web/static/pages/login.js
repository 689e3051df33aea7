// Sign in: a local operator account (name and password) or, where the
// gateway has an issuer configured, OIDC. The password goes to the gateway
// once, over TLS, to /inbox/session/login; nothing is kept in the page.

import { login, loginMethods } from "../api.js";
import { el, flash, replace } from "../ui/dom.js";

export async function showLogin(main) {
  const methods = await loginMethods();
  const name = el("input", { id: "name", name: "username", autocomplete: "username", required: true });
  const password = el("input", {
    id: "password",
    name: "password",
    type: "password",
    autocomplete: "current-password",
    required: true,
  });
  const submit = el("button", { type: "submit", id: "sign-in" }, "Sign in");
  const form = el(
    "form",
    { class: "card login", id: "login-form" },
    el("h1", {}, "Sign in"),
    el("label", { for: "name" }, "Operator name"),
    name,
    el("label", { for: "password" }, "Password"),
    password,
    submit,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    try {
      await login(name.value.trim(), password.value);
      password.value = "";
      window.location.assign("/inbox/");
    } catch (error) {
      password.value = "";
      flash(error.message, "error");
      submit.disabled = false;
    }
  });
  const parts = [form];
  if (methods.includes("oidc")) {
    parts.push(
      el(
        "p",
        { class: "card login" },
        el("a", { href: "/inbox/oidc/start", class: "button", id: "oidc-start" }, "Sign in with your identity provider"),
      ),
    );
  }
  replace(main, ...parts);
  name.focus();
}
