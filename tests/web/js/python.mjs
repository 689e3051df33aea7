// For the Node tests: run a short Python program with the repository's venv
// (the real protocol/ and keys/ code) and read back its JSON answer. Tests
// that need it skip, saying why, when .venv/bin/python is absent.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

export const REPO = fileURLToPath(new URL("../../../", import.meta.url));
export const PYTHON = process.env.BATON_PYTHON ?? `${REPO}.venv/bin/python`;
export const NO_PYTHON = existsSync(PYTHON) ? false : `no Python venv at ${PYTHON} (set BATON_PYTHON)`;

/** Run `code` with `input` (JSON-serialised) on stdin; return its stdout parsed as JSON. */
export function runPython(code, input = null, { timeoutMs = 120_000 } = {}) {
  const result = spawnSync(PYTHON, ["-c", code], {
    cwd: REPO,
    input: JSON.stringify(input),
    encoding: "utf8",
    timeout: timeoutMs,
    maxBuffer: 256 << 20,
  });
  if (result.error) throw result.error;
  if (result.status !== 0) throw new Error(`python exited ${result.status}: ${result.stderr.slice(-2000)}`);
  return JSON.parse(result.stdout);
}
