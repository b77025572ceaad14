import highsModule, { type Highs } from "highs";

type Loader = typeof highsModule.default;

// The package's one types file describes its CommonJS build (`module.exports.default`);
// under ESM the default import is the loader itself. Accept both shapes.
const loadHighs: Loader =
  typeof highsModule === "function" ? (highsModule as unknown as Loader) : highsModule.default;

let runtime: Promise<Highs> | undefined;

/**
 * The HiGHS WebAssembly runtime, loaded once per thread. Every model created from it
 * owns Wasm memory until `dispose()`, so callers dispose in `finally`.
 */
export function highsRuntime(): Promise<Highs> {
  runtime ??= loadHighs();
  return runtime;
}

/** The HiGHS version compiled into the loaded runtime (e.g. "1.15.1"). */
export async function highsVersion(): Promise<string> {
  return (await highsRuntime()).version.string;
}
