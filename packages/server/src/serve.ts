/**
 * `serve()`: loads a checkpoint with a KV cache sized exactly to the budget, starts the HTTP server, and returns
 * a handle whose `close()` shuts down gracefully and frees the model. This is what `moa serve` runs.
 */
import { readFile } from "node:fs/promises";
import { isIP } from "node:net";
import { MoaError, type MoaPlan, parsePlanText } from "@moa/core";
import { loadModel, loadNamedBackend, type Model, readModelConfig } from "@moa/runtime";
import { KV_CACHE_DTYPE_BYTES, type KvBudget, kvBudget, sequenceKvBytes } from "./kv-budget.js";
import { MoaServer, type MoaServerOptions } from "./server.js";

export const DEFAULT_HOST = "127.0.0.1";
export const DEFAULT_PORT = 8000;
export const DEFAULT_MAX_BATCH = 8;

export interface ServeOptions extends MoaServerOptions {
  /** Hugging Face checkpoint folder. */
  readonly modelDir: string;
  /** A moa-plan (object, or path of its JSON file); omitted = dense attention and a dense cache. */
  readonly plan?: MoaPlan | string;
  /** Backend to run on (by name, or one already loaded); default CUDA when a GPU is there, else CPU. */
  readonly backend?: "cpu" | "cuda" | Model["backend"];
  /** Longest sequence (prompt + completion) served; default the model's context length. */
  readonly maxLength?: number;
  /** Most sequences decoded together (default 8). */
  readonly maxBatch?: number;
  /** KV cache budget in bytes; default: what `maxBatch` sequences of `maxLength` need. */
  readonly kvBudgetBytes?: number;
  /** Interface to bind (default 127.0.0.1: only this machine can connect). */
  readonly host?: string;
  /** Port (default 8000; 0 picks a free one). */
  readonly port?: number;
}

export interface RunningServer {
  readonly server: MoaServer;
  readonly model: Model;
  readonly budget: KvBudget;
  /** Base URL, e.g. http://127.0.0.1:8000 (OpenAI clients take `${url}/v1`). */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  /** Graceful shutdown (see MoaServer.close), then frees the model. */
  close(graceMs?: number): Promise<void>;
}

async function readPlan(plan: MoaPlan | string): Promise<MoaPlan> {
  if (typeof plan !== "string") return plan;
  let text: string;
  try {
    text = await readFile(plan, "utf8");
  } catch (error) {
    throw new MoaError("E_PLAN", `${plan}: ${(error as Error).message}`, { source: plan, field: "(file)" });
  }
  return parsePlanText(text, plan);
}

function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || (isIP(host) === 4 && host.startsWith("127."));
}

export async function serve(options: ServeOptions): Promise<RunningServer> {
  const config = await readModelConfig(options.modelDir);
  const plan = options.plan !== undefined ? await readPlan(options.plan) : undefined;
  const maxLength = options.maxLength ?? config.contextLength;
  if (!Number.isSafeInteger(maxLength) || maxLength < 2 || maxLength > config.contextLength) {
    throw new MoaError(
      "E_ARGUMENT",
      `server: maxLength = ${maxLength}: must be an integer in [2, ${config.contextLength}] (${config.source}: ${config.contextField} = ${config.contextLength})`,
      { source: "server", field: "maxLength" },
    );
  }
  // The backend decides the cache's element type (f32 on the CPU, bf16 on CUDA), so it is chosen before the
  // budget is turned into sequence slots; the weights are loaded only once the budget is known to fit.
  const backend = typeof options.backend === "object" ? options.backend : loadNamedBackend(options.backend);
  const elementBytes = KV_CACHE_DTYPE_BYTES[backend.kvCacheDtype];
  const sequenceBytes = sequenceKvBytes(config.shape(), plan, maxLength, elementBytes);
  const budget = kvBudget(sequenceBytes, options.maxBatch ?? DEFAULT_MAX_BATCH, options.kvBudgetBytes);
  const model = await loadModel(options.modelDir, {
    maxLength,
    slots: budget.slots,
    backend,
    ...(plan !== undefined ? { plan } : {}),
  });
  let server: MoaServer | undefined;
  try {
    // The admission accounting must be the cache's own: refuse to serve if they ever disagree.
    if (model.cache.elementBytes !== elementBytes || model.cache.slotBytes() !== sequenceBytes) {
      throw new MoaError(
        "E_ARGUMENT",
        `server: the KV cache holds ${model.cache.slotBytes()} bytes per sequence (${model.cache.elementBytes} per element) but the plan accounting says ${sequenceBytes} (${elementBytes} per element); @moa/server and @moa/runtime versions do not match`,
        { source: "server", field: "kvBudget" },
      );
    }
    const host = options.host ?? DEFAULT_HOST;
    server = new MoaServer(model, { ...options, kvBudgetBytes: budget.budgetBytes });
    if (!isLoopback(host) && (options.apiKey ?? "") === "") {
      options.log?.(
        `moa serve: warning: listening on ${host} without an API key; anyone who can reach this port can use the model (pass --api-key)`,
      );
    }
    const address = await server.listen(options.port ?? DEFAULT_PORT, host);
    const urlHost = address.family === "IPv6" ? `[${address.address}]` : address.address;
    const running = server;
    return {
      server: running,
      model,
      budget,
      url: `http://${urlHost}:${address.port}`,
      host: address.address,
      port: address.port,
      async close(graceMs?: number) {
        try {
          await running.close(graceMs);
        } finally {
          model.dispose();
        }
      },
    };
  } catch (error) {
    if (server !== undefined) await server.close(0);
    model.dispose();
    throw error;
  }
}
