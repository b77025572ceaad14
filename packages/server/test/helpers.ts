import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { type ElasticRule, type MoaPlan, makePlan } from "@moa/core";
import { loadModel, type Model, readModelConfig } from "@moa/runtime";
import OpenAI from "openai";
import { type RunningServer, type ServeOptions, serve } from "../src/index.js";

export const MOA_NANO = fileURLToPath(new URL("../../../fixtures/moa-nano", import.meta.url));
export const PLAIN_CHAT_TEMPLATE = readFileSync(
  new URL("./fixtures/plain-chat.jinja", import.meta.url),
  "utf8",
);
export const MAX_LENGTH = 256;

/**
 * A MoA plan for moa-nano with a different rule on every head of a layer: a short fixed window, a longer one,
 * an elastic span that grows with the length, and a dense head — so the cache is truly per-head.
 */
export async function nanoPlan(): Promise<MoaPlan> {
  const config = await readModelConfig(MOA_NANO);
  const shape = config.shape();
  const palette: ElasticRule[] = [
    { alpha: 64, beta: 0 },
    { alpha: 128, beta: 0 },
    { alpha: 0, beta: 0.5 },
    { alpha: 0, beta: 1 },
  ];
  const rules = Array.from({ length: shape.layers }, (_, layer) =>
    Array.from({ length: shape.heads }, (_, head) => ({ ...palette[(layer + head) % palette.length]! })),
  );
  return makePlan(shape, rules, [MAX_LENGTH], { test: "per-head mixture" });
}

/** A reference executor (one slot) for expected outputs, loaded separately from any server's model. */
export async function referenceModel(plan: MoaPlan | undefined): Promise<Model> {
  return loadModel(MOA_NANO, { backend: "cpu", maxLength: MAX_LENGTH, slots: 1, ...(plan ? { plan } : {}) });
}

export async function startServer(options: Partial<ServeOptions> = {}): Promise<RunningServer> {
  return serve({
    modelDir: MOA_NANO,
    backend: "cpu",
    maxLength: MAX_LENGTH,
    maxBatch: 4,
    port: 0,
    shutdownGraceMs: 5_000,
    ...options,
  });
}

export function clientFor(running: RunningServer, apiKey = "unused"): OpenAI {
  return new OpenAI({ baseURL: `${running.url}/v1`, apiKey, maxRetries: 0, timeout: 60_000 });
}

/** Polls until `check` holds; fails with `what` after `timeoutMs`. */
export async function waitFor(
  check: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await check())) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Parses Prometheus text into `name{labels}` → value (HELP/TYPE lines skipped). */
export function parseMetrics(text: string): Map<string, number> {
  const values = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    values.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return values;
}

export async function scrape(running: RunningServer): Promise<Map<string, number>> {
  const response = await fetch(`${running.url}/metrics`);
  return parseMetrics(await response.text());
}
