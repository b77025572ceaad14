import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

/**
 * How to start a worker script that lives beside this module: `<name>.js` in the published
 * bundle (its own tsup entry); from source (vitest, tsx) `<name>.ts`, through a small
 * bootstrap that registers tsx's loader in the worker first.
 */
export function workerSource(name: string): { source: string | URL; eval: boolean } {
  const here = import.meta.url;
  if (!here.endsWith(".ts")) return { source: new URL(`./${name}.js`, here), eval: false };
  // tsx's ESM API (the `import` build of `tsx/esm/api`) registers its loader in this thread.
  const api = pathToFileURL(
    createRequire(here)
      .resolve("tsx/esm/api")
      .replace(/\.cjs$/, ".mjs"),
  ).href;
  const script = new URL(`./${name}.ts`, here).href;
  return {
    source: `import(${JSON.stringify(api)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(script)}); });`,
    eval: true,
  };
}
