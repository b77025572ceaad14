import { readFile } from "node:fs/promises";
import { MoaError } from "@moa/core";
import {
  DEFAULT_HOST,
  DEFAULT_MAX_BATCH,
  DEFAULT_MAX_QUEUE,
  DEFAULT_PORT,
  formatBytes,
  parseByteSize,
  type RunningServer,
  serve,
} from "@moa/server";
import { booleanFlag, expectPositionals, numberFlag, stringFlag } from "../args.js";
import type { Command } from "../command.js";
import { CliError, usageError } from "../errors.js";

export const serveCommand: Command = {
  name: "serve",
  summary:
    "Serve a model over an OpenAI-compatible HTTP API with MoA attention, continuous batching and exact KV budgeting.",
  usage:
    "moa serve <model-dir> [--plan plan.json] [--host 127.0.0.1] [--port 8000] [--api-key KEY] [--max-length N] [--max-batch N] [--kv-budget BYTES] [--max-queue N] [--chat-template FILE] [--json]",
  flags: [
    ["--plan <file>", "a moa-plan: per-head sink + window attention and a KV cache sized by it"],
    ["--host <addr>", `interface to bind (default ${DEFAULT_HOST}: this machine only; 0.0.0.0 for all)`],
    ["--port <n>", `TCP port (default ${DEFAULT_PORT}; 0 picks a free one)`],
    ["--api-key <key>", "require 'Authorization: Bearer <key>' on /v1 (default: $MOA_API_KEY, else none)"],
    ["--max-length <n>", "longest prompt + completion in tokens (default: the model's context)"],
    ["--max-batch <n>", `most sequences decoded together (default ${DEFAULT_MAX_BATCH})`],
    [
      "--kv-budget <bytes>",
      "KV cache budget, e.g. 6GiB (default: what --max-batch sequences of --max-length need)",
    ],
    [
      "--max-queue <n>",
      `sequences that may wait for a KV slot; beyond it requests get 429 (default ${DEFAULT_MAX_QUEUE})`,
    ],
    [
      "--chat-template <file>",
      "a Jinja chat template for /v1/chat/completions (default: the checkpoint's own)",
    ],
    ["--model-name <id>", "the model id clients send (default: the folder name)"],
    ["--max-body-bytes <bytes>", "largest request body (default 1MiB)"],
    ["--max-prompt-tokens <n>", "longest prompt in tokens (default: --max-length − 1)"],
    ["--shutdown-grace <s>", "on SIGINT/SIGTERM, seconds to let running requests finish (default 30)"],
    ["--backend <name>", "cpu or cuda (default: cuda when a GPU is present)"],
    ["--json", "print the listening address and KV sizing as one JSON line on stdout"],
  ],
  examples: [
    "moa serve fixtures/moa-nano --port 8000",
    'moa serve ./Llama-3-8B-Instruct --plan plan.json --max-length 8192 --kv-budget 6GiB --api-key "$KEY"',
    'curl http://127.0.0.1:8000/v1/completions -H \'Content-Type: application/json\' -d \'{"model":"moa-nano","prompt":"def f(x):","max_tokens":32}\'',
  ],
  options: {
    plan: { type: "string" },
    host: { type: "string" },
    port: { type: "string" },
    "api-key": { type: "string" },
    "max-length": { type: "string" },
    "max-batch": { type: "string" },
    "kv-budget": { type: "string" },
    "max-queue": { type: "string" },
    "chat-template": { type: "string" },
    "model-name": { type: "string" },
    "max-body-bytes": { type: "string" },
    "max-prompt-tokens": { type: "string" },
    "shutdown-grace": { type: "string" },
    backend: { type: "string" },
    json: { type: "boolean" },
  },
  async run(argv, io) {
    const [modelDir] = expectPositionals(this.name, argv, ["model-dir"]) as [string];
    const backend = stringFlag(argv, "backend");
    if (backend !== undefined && backend !== "cpu" && backend !== "cuda") {
      throw usageError(`moa serve: --backend ${JSON.stringify(backend)}: expected "cpu" or "cuda"`);
    }
    const size = (flag: string): number | undefined => {
      const raw = stringFlag(argv, flag);
      if (raw === undefined) return undefined;
      try {
        return parseByteSize(raw, `--${flag}`);
      } catch (error) {
        throw usageError(`moa serve: ${(error as Error).message}`);
      }
    };
    const port = numberFlag(this.name, argv, "port", { integer: true, min: 0, max: 65535 }) ?? DEFAULT_PORT;
    const maxLength = numberFlag(this.name, argv, "max-length", { integer: true, min: 2 });
    const maxBatch = numberFlag(this.name, argv, "max-batch", { integer: true, min: 1 });
    const maxQueue = numberFlag(this.name, argv, "max-queue", { integer: true, min: 0 });
    const maxPromptTokens = numberFlag(this.name, argv, "max-prompt-tokens", { integer: true, min: 1 });
    const graceSeconds = numberFlag(this.name, argv, "shutdown-grace", { min: 0 }) ?? 30;
    const kvBudgetBytes = size("kv-budget");
    const maxBodyBytes = size("max-body-bytes");
    const plan = stringFlag(argv, "plan");
    const modelName = stringFlag(argv, "model-name");
    // A key on the command line is visible to other local users (ps); the environment variable is not.
    const apiKey = stringFlag(argv, "api-key") ?? process.env.MOA_API_KEY;
    const templatePath = stringFlag(argv, "chat-template");
    let template: { chatTemplate: string; chatTemplateSource: string } | undefined;
    if (templatePath !== undefined) {
      try {
        template = { chatTemplate: await readFile(templatePath, "utf8"), chatTemplateSource: templatePath };
      } catch (error) {
        throw new CliError(
          `${templatePath}: cannot read the chat template (${(error as NodeJS.ErrnoException).code ?? error})`,
        );
      }
    }

    let running: RunningServer;
    try {
      running = await serve({
        modelDir,
        port,
        host: stringFlag(argv, "host") ?? DEFAULT_HOST,
        shutdownGraceMs: graceSeconds * 1000,
        log: (line) => io.stderr(`${line}\n`),
        ...(plan !== undefined ? { plan } : {}),
        ...(backend !== undefined ? { backend } : {}),
        ...(maxLength !== undefined ? { maxLength } : {}),
        ...(maxBatch !== undefined ? { maxBatch } : {}),
        ...(kvBudgetBytes !== undefined ? { kvBudgetBytes } : {}),
        ...(maxQueue !== undefined ? { maxQueue } : {}),
        ...(maxPromptTokens !== undefined ? { maxPromptTokens } : {}),
        ...(maxBodyBytes !== undefined ? { maxBodyBytes } : {}),
        ...(modelName !== undefined ? { modelName } : {}),
        ...(apiKey !== undefined && apiKey !== "" ? { apiKey } : {}),
        ...template,
      });
    } catch (error) {
      if (error instanceof MoaError) throw new CliError(error.message);
      const code = (error as NodeJS.ErrnoException).code;
      if (code === "EADDRINUSE") throw new CliError(`port ${port} is in use; pick another with --port`);
      if (code === "EACCES")
        throw new CliError(`not allowed to listen on port ${port}; use a port above 1023`);
      throw error;
    }

    const { budget, model, server } = running;
    io.stderr(
      `moa serve: ${server.modelName} on ${model.backend.deviceName}, ${plan !== undefined ? `MoA plan ${plan}` : "dense attention (no --plan)"}; ` +
        `max length ${model.maxLength}; KV ${formatBytes(budget.sequenceBytes)} per sequence × ${budget.slots} = ` +
        `${formatBytes(budget.capacityBytes)} (budget ${formatBytes(budget.budgetBytes)})\n` +
        `moa serve: listening on ${running.url}/v1 (OpenAI API), ${running.url}/health, ${running.url}/metrics` +
        `${apiKey ? "; API key required" : ""}\n`,
    );
    if (server.model.chatTemplate === undefined && template === undefined) {
      io.stderr(
        "moa serve: the checkpoint has no chat template: /v1/chat/completions answers 400 (pass --chat-template)\n",
      );
    }
    if (booleanFlag(argv, "json")) {
      io.stdout(
        `${JSON.stringify({
          url: running.url,
          model: server.modelName,
          maxLength: model.maxLength,
          slots: budget.slots,
          kvBytesPerSequence: budget.sequenceBytes,
          kvCapacityBytes: budget.capacityBytes,
          kvBudgetBytes: budget.budgetBytes,
        })}\n`,
      );
    }

    // SIGINT/SIGTERM: finish or cancel in-flight requests, then exit; a second signal stops at once.
    await new Promise<void>((resolve, reject) => {
      let stopping = false;
      const stop = (signal: NodeJS.Signals): void => {
        const grace = stopping ? 0 : graceSeconds * 1000;
        io.stderr(
          stopping
            ? `moa serve: ${signal} again: cancelling in-flight requests\n`
            : `moa serve: ${signal}: finishing in-flight requests (up to ${graceSeconds} s; send again to stop now)\n`,
        );
        if (stopping) {
          running.server.abort();
          return;
        }
        stopping = true;
        running.close(grace).then(() => {
          process.off("SIGINT", stop);
          process.off("SIGTERM", stop);
          io.stderr("moa serve: stopped\n");
          resolve();
        }, reject);
      };
      process.on("SIGINT", stop);
      process.on("SIGTERM", stop);
    });
  },
};
