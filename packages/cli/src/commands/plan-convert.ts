import {
  isReferencePlan,
  type ModelShape,
  planFromReference,
  planToReference,
  serializePlan,
} from "@moa/core";
import { booleanFlag, expectPositionals, numberFlag, requireString, stringFlag } from "../args.js";
import type { Command } from "../command.js";
import { CliError, usageError, userFacing } from "../errors.js";
import { readJsonFile, writeFilesAtomically } from "../io.js";
import { readModelShape } from "../model-shape.js";
import { readPlanFile } from "../plan-file.js";

export const planConvertCommand: Command = {
  name: "plan convert",
  summary:
    'Convert a plan between the moa-plan format and the reference implementation\'s {"alphas","betas"} format.',
  usage:
    "moa plan convert <in.json> --to reference|moa --out <file> [--model <dir> | --kv-heads N --head-dim N] [--lengths …] [--force]",
  flags: [
    ["--to <format>", "reference (alphas/betas arrays) or moa (moa-plan)"],
    ["--out <file>", "where to write the converted plan"],
    [
      "--model <dir>",
      "to moa: read the model shape (KV heads, head dim, architecture) from <dir>/config.json",
    ],
    ["--kv-heads <N>", "to moa without --model: number of KV heads (GQA)"],
    ["--head-dim <N>", "to moa without --model: attention head dimension"],
    ["--lengths <list>", "to moa: lengths at which to record KV density (default 2048,4096,8192,16384)"],
    ["--force", "overwrite --out if it exists"],
  ],
  examples: [
    "moa plan convert plans/plan-0.json --to reference --out moa_config.json",
    "moa plan convert moa_config.json --to moa --model ./Llama-3-8B --out plan.json",
  ],
  options: {
    to: { type: "string" },
    out: { type: "string" },
    model: { type: "string" },
    "kv-heads": { type: "string" },
    "head-dim": { type: "string" },
    lengths: { type: "string" },
    force: { type: "boolean" },
  },
  async run(argv, io) {
    const [input] = expectPositionals(this.name, argv, ["in.json"]);
    const to = requireString(this.name, argv, "to");
    const out = requireString(this.name, argv, "out");
    const force = booleanFlag(argv, "force");
    if (to === "reference") {
      const plan = await readPlanFile(input!);
      const text = `${JSON.stringify(planToReference(plan))}\n`;
      await writeFilesAtomically([{ path: out, data: text }], { force });
      io.stderr(`wrote ${out} (reference format, ${plan.model.layers}×${plan.model.heads} rules)\n`);
      return;
    }
    if (to !== "moa")
      throw usageError(`moa plan convert: --to ${JSON.stringify(to)}: expected "reference" or "moa"`);
    const json = await readJsonFile(input!);
    if (!isReferencePlan(json)) {
      throw new CliError(
        `${input}: not a reference plan (expected an object with "alphas" and "betas" arrays)`,
      );
    }
    const shape = await shapeFor(this.name, argv, json.alphas.length, json.alphas[0]?.length ?? 0);
    const lengthsRaw = stringFlag(argv, "lengths") ?? "2048,4096,8192,16384";
    const lengths = lengthsRaw.split(",").map((part) => {
      const value = Number(part);
      if (!Number.isInteger(value) || value < 1) {
        throw usageError(
          `moa plan convert: --lengths ${JSON.stringify(lengthsRaw)}: expected positive integers`,
        );
      }
      return value;
    });
    const plan = userFacing(() => planFromReference(json, shape, input!, { lengths }));
    await writeFilesAtomically([{ path: out, data: serializePlan(plan) }], { force });
    io.stderr(`wrote ${out} (moa-plan, ${shape.layers}×${shape.heads} rules, ${shape.kvHeads} KV heads)\n`);
  },
};

async function shapeFor(
  command: string,
  argv: Parameters<typeof stringFlag>[0],
  layers: number,
  heads: number,
) {
  const modelDir = stringFlag(argv, "model");
  if (modelDir !== undefined) return readModelShape(modelDir);
  const kvHeads = numberFlag(command, argv, "kv-heads", { integer: true, min: 1 });
  const headDim = numberFlag(command, argv, "head-dim", { integer: true, min: 1 });
  if (kvHeads === undefined || headDim === undefined) {
    throw usageError(
      "moa plan convert: --to moa needs the model shape: pass --model <dir> or both --kv-heads and --head-dim",
    );
  }
  const shape: ModelShape = { architecture: "llama", layers, heads, kvHeads, headDim };
  return shape;
}
