import { MoaError } from "@moa/core";
import { generate, loadModel } from "@moa/runtime";
import { numberFlag, requireString, stringFlag } from "../args.js";
import type { Command } from "../command.js";
import { CliError, usageError } from "../errors.js";

export const generateCommand: Command = {
  name: "generate",
  summary:
    "Generate text with a Hugging Face checkpoint, dense or with a MoA plan; streams the text to stdout.",
  usage:
    "moa generate --model <dir> --prompt <text> [--plan plan.json] [--max-tokens N] [--temperature T] [--top-p P] [--top-k K] [--seed S] [--stop text] [--chat] [--backend cpu|cuda]",
  flags: [
    ["--model <dir>", "Hugging Face checkpoint folder (config.json, *.safetensors, tokenizer.json)"],
    ["--prompt <text>", "the prompt; '-' reads it from stdin"],
    ["--plan <file>", "a moa-plan: per-head sink + window attention and the elastic KV cache"],
    ["--max-tokens <N>", "most tokens to generate (default 128)"],
    ["--temperature <T>", "0 (default) is greedy; higher samples more freely"],
    ["--top-p <P>", "nucleus sampling: keep the most likely tokens up to probability P"],
    ["--top-k <K>", "keep only the K most likely tokens"],
    ["--seed <S>", "seed of the sampler (same seed, same text)"],
    ["--stop <text>", "stop before this text (repeatable)"],
    ["--chat", "wrap the prompt as one user message with the checkpoint's chat template"],
    ["--backend <name>", "cpu or cuda (default: cuda when a GPU is present)"],
  ],
  examples: [
    "moa generate --model fixtures/moa-nano --prompt 'def fibonacci(n):' --max-tokens 48 --temperature 0",
    "moa generate --model ./Llama-3-8B-Instruct --plan plan.json --chat --prompt 'Summarise MoA.' --temperature 0.7 --seed 1",
  ],
  options: {
    model: { type: "string" },
    prompt: { type: "string" },
    plan: { type: "string" },
    "max-tokens": { type: "string" },
    temperature: { type: "string" },
    "top-p": { type: "string" },
    "top-k": { type: "string" },
    seed: { type: "string" },
    stop: { type: "string", multiple: true },
    chat: { type: "boolean" },
    backend: { type: "string" },
  },
  async run(argv, io) {
    const modelDir = requireString(this.name, argv, "model");
    let prompt = requireString(this.name, argv, "prompt");
    if (prompt === "-") prompt = await readStdin();
    const maxNewTokens = numberFlag(this.name, argv, "max-tokens", { integer: true, min: 1 }) ?? 128;
    const temperature = numberFlag(this.name, argv, "temperature", { min: 0 }) ?? 0;
    const topP = numberFlag(this.name, argv, "top-p", { min: 0, max: 1, exclusiveMin: true });
    const topK = numberFlag(this.name, argv, "top-k", { integer: true, min: 0 });
    const seed = numberFlag(this.name, argv, "seed", { integer: true });
    const backend = stringFlag(argv, "backend");
    if (backend !== undefined && backend !== "cpu" && backend !== "cuda") {
      throw usageError(`moa generate: --backend ${JSON.stringify(backend)}: expected "cpu" or "cuda"`);
    }
    const plan = stringFlag(argv, "plan");
    const stops = argv.values.stop;
    const stopStrings = Array.isArray(stops) ? stops.filter((s): s is string => typeof s === "string") : [];

    try {
      const started = performance.now();
      const model = await loadModel(modelDir, {
        ...(plan !== undefined ? { plan } : {}),
        ...(backend !== undefined ? { backend } : {}),
      });
      const loaded = performance.now();
      io.stderr(
        `loaded ${modelDir} on ${model.backend.deviceName} in ${((loaded - started) / 1000).toFixed(2)} s` +
          `${plan !== undefined ? ` with plan ${plan}` : ""}\n`,
      );
      let text = prompt;
      if (argv.values.chat === true) {
        if (model.chatTemplate === undefined) {
          throw new CliError(
            `${modelDir}: --chat needs a chat_template in tokenizer_config.json; this checkpoint has none`,
          );
        }
        text = model.chatTemplate.render([{ role: "user", content: prompt }], { addGenerationPrompt: true });
      }
      const stream = generate(model, text, {
        maxNewTokens,
        temperature,
        stopStrings,
        ...(topP !== undefined ? { topP } : {}),
        ...(topK !== undefined ? { topK } : {}),
        ...(seed !== undefined ? { seed } : {}),
        ...(argv.values.chat === true ? { addSpecialTokens: false } : {}),
      });
      let first = 0;
      let count = 0;
      for (;;) {
        const step = await stream.next();
        if (step.done) {
          const result = step.value;
          const end = performance.now();
          const decodeSeconds = (end - first) / 1000;
          io.stdout("\n");
          io.stderr(
            `${result.promptTokens} prompt tokens, ${result.tokens.length} generated (${result.finishReason}); ` +
              `prefill ${((first - loaded) / 1000).toFixed(2)} s, ` +
              `decode ${count > 1 ? ((count - 1) / decodeSeconds).toFixed(1) : "–"} tokens/s\n`,
          );
          return;
        }
        if (count === 0) first = performance.now();
        count++;
        io.stdout(step.value.text);
      }
    } catch (error) {
      if (error instanceof MoaError) throw new CliError(error.message);
      throw error;
    }
  },
};

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}
