/** Error codes raised by @moa/core. Other packages may use their own codes with {@link MoaError}. */
export type MoaErrorCode = "E_SAFETENSORS" | "E_PROFILE" | "E_PLAN" | "E_PLAN_SHAPE" | "E_ARGUMENT";

export interface MoaErrorOptions {
  /** The file (or other input) the error is about, e.g. `plan.json`. */
  source?: string;
  /** The field inside it, e.g. `rules[3][7].beta`. */
  field?: string;
}

/**
 * Every error @moa/core throws. `code` is stable and machine-readable; the message
 * names the source, the field and the offending value so a user can fix the input.
 */
export class MoaError extends Error {
  readonly code: string;
  // `declare`: no class-field initialiser, so absent options leave no `undefined` own property.
  declare readonly source?: string;
  declare readonly field?: string;

  constructor(code: string, message: string, options: MoaErrorOptions = {}) {
    super(message);
    this.name = "MoaError";
    this.code = code;
    if (options.source !== undefined) this.source = options.source;
    if (options.field !== undefined) this.field = options.field;
  }
}

/** Renders an offending value for an error message: strings quoted, long values cut. */
export function describeValue(value: unknown): string {
  if (typeof value === "number") return Object.is(value, -0) ? "-0" : String(value);
  if (typeof value === "bigint") return `${value}n`;
  if (value === undefined) return "undefined (missing)";
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

/**
 * Builds the standard message `source: field = value: reason` and throws it.
 * Kept as one helper so every error reads the same way; exported as `throwFieldError`
 * for other packages' boundary checks.
 */
export function fail(code: string, source: string, field: string, value: unknown, reason: string): never {
  throw new MoaError(code, `${source}: ${field} = ${describeValue(value)}: ${reason}`, { source, field });
}

/** Throws E_ARGUMENT unless `n` is an integer ≥ `min` (used for lengths, counts, indices). */
export function checkInteger(n: number, name: string, min: number, where: string): void {
  if (!Number.isInteger(n) || n < min) {
    fail("E_ARGUMENT", where, name, n, `must be an integer >= ${min}`);
  }
}
