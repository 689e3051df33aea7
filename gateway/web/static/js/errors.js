// The browser's one error for refused input: VerificationError, with a stable
// `code` taken from protocol/errors.py (and keys/errors.py, which shares the
// codes), so a page and a test can tell failures apart exactly as the Python
// does: "malformed_input", "bad_signature", "invalid_envelope", ...
//
// Invariants:
// - `code` is one of protocol/errors.py's stable codes, never a free string;
// - `message` is short and safe to show: it never holds key material, a
//   token, a body or bundle plaintext; `detail` (optional) is the precise
//   internal reason, equally free of secrets.
// Pure: no state.

export class VerificationError extends Error {
  /**
   * @param {string} code a protocol/errors.py code
   * @param {string} message short, safe to show
   * @param {{detail?: string, cause?: unknown}} [options]
   */
  constructor(code, message, options = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "VerificationError";
    this.code = code;
    this.detail = options.detail ?? message;
  }
}

/** Throw a VerificationError (an expression-friendly helper). */
export function fail(code, message, options) {
  throw new VerificationError(code, message, options);
}
