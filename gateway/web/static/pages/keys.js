// Import the operator's keys into this browser, once.
//
// `baton operators add NAME` wrote signing.jwks (ES256, signs commands and
// decisions) and encryption.jwks (P-256, opens bundles) into
// .baton/operators/NAME/. They are imported here as non-extractable
// WebCrypto keys and kept in IndexedDB: after the import no script, ours
// included, can read them back; they can only be used to sign and decrypt.
// The signing key must be the one the gateway lists for this operator, or
// nothing is saved.

import { forgetKeys, importOperatorFiles, loadKeys, saveKeys } from "../js/keystore.js";
import { el, flash, replace } from "../ui/dom.js";

function kids(jwks) {
  return new Set((jwks?.keys ?? []).map((key) => key.kid));
}

export async function showKeys(main, session) {
  const present = await loadKeys(session.operator);
  const input = el("input", { type: "file", id: "key-files", multiple: true, accept: ".jwks,application/json" });
  const status = el(
    "p",
    { id: "key-status" },
    present
      ? `Keys for ${session.name} are in this browser (signing ${present.signing.kid}).`
      : `No keys for ${session.name} in this browser yet.`,
  );
  const importButton = el("button", { type: "button", id: "import-keys" }, "Import");
  const forget = el("button", { type: "button", id: "forget-keys", class: "secondary" }, "Remove from this browser");
  importButton.addEventListener("click", async () => {
    try {
      const files = Array.from(input.files ?? []);
      const byName = Object.fromEntries(await Promise.all(files.map(async (f) => [f.name, await f.text()])));
      const signing = byName["signing.jwks"];
      const encryption = byName["encryption.jwks"];
      if (!signing || !encryption) {
        throw new Error("choose both signing.jwks and encryption.jwks from .baton/operators/" + session.name);
      }
      const keys = await importOperatorFiles(signing, encryption);
      const listed = kids(session.verification.operators[session.operator]);
      // The signing key must be the one the gateway verifies this operator's
      // commands and decisions with; a wrong encryption key would open nothing
      // (bundles are encrypted to the configured key's kid).
      if (!listed.has(keys.signing.kid)) {
        throw new Error("this signing key is not the one the gateway lists for " + session.name);
      }
      await saveKeys(session.operator, keys);
      window.location.assign("/inbox/");
    } catch (error) {
      flash(`Keys not imported: ${error.message}`, "error");
    }
  });
  forget.addEventListener("click", async () => {
    await forgetKeys(session.operator);
    window.location.assign("/inbox/keys");
  });
  replace(
    main,
    el(
      "section",
      { class: "card" },
      el("h1", {}, "Your keys"),
      status,
      el(
        "p",
        { class: "muted" },
        `Choose signing.jwks and encryption.jwks from .baton/operators/${session.name}/. ` +
          "They are imported as non-extractable keys: this browser can use them but never reveal them.",
      ),
      input,
      importButton,
      present ? forget : null,
    ),
  );
}
