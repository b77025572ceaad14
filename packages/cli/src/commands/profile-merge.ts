import { mergeProfileFiles, readProfileWithExtras, writeProfileWithExtras } from "@moa/profiler";
import { booleanFlag, requireString } from "../args.js";
import type { Command } from "../command.js";
import { usageError, userFacing } from "../errors.js";
import { readInputFile, writeFilesAtomically } from "../io.js";
import { formatTable } from "../table.js";

export const profileMergeCommand: Command = {
  name: "profile merge",
  summary:
    "Merge partial profiles (same model and lengths, e.g. from several machines) by the sample-weighted mean.",
  usage: "moa profile merge <profile> <profile>... --out <file> [--force] [--json]",
  flags: [
    ["--out <file>", "the merged profile to write"],
    ["--force", "overwrite --out if it exists"],
    ["--json", "print a JSON summary instead of a table"],
  ],
  examples: [
    "moa profile merge part-1.profile.safetensors part-2.profile.safetensors --out llama3.profile.safetensors",
  ],
  options: {
    out: { type: "string" },
    force: { type: "boolean" },
    json: { type: "boolean" },
  },
  async run(argv, io) {
    const c = this.name;
    const paths = argv.positionals;
    if (paths.length < 2) {
      throw usageError(`moa ${c}: give at least two profiles to merge; see 'moa ${c} --help'`);
    }
    const out = requireString(c, argv, "out");
    const inputs: ReturnType<typeof readProfileWithExtras>[] = [];
    for (const path of paths) {
      const bytes = await readInputFile(path);
      inputs.push(userFacing(() => readProfileWithExtras(bytes, path)));
    }
    const merged = userFacing(() => mergeProfileFiles(inputs));
    const bytes = userFacing(() => writeProfileWithExtras(merged.profile, merged.extras));
    await writeFilesAtomically([{ path: out, data: bytes }], { force: booleanFlag(argv, "force") });

    const summary = {
      profile: out,
      model: merged.profile.model,
      lengths: merged.profile.lengths,
      samplesPerLength: merged.profile.samplesPerLength,
      inputs: paths.map((path, i) => ({
        path,
        samplesPerLength: inputs[i]!.profile.samplesPerLength,
        calibration: inputs[i]!.profile.calibration,
      })),
      calibration: merged.profile.calibration,
    };
    if (booleanFlag(argv, "json")) {
      io.stdout(`${JSON.stringify(summary, null, 2)}\n`);
      return;
    }
    io.stdout(
      formatTable(
        ["profile", "samples per length", "weight"],
        summary.inputs.map((input) => [
          input.path,
          input.samplesPerLength,
          (input.samplesPerLength / merged.profile.samplesPerLength).toFixed(4),
        ]),
      ),
    );
    io.stdout(
      `\nwrote ${out}: ${merged.profile.model}, lengths ${merged.profile.lengths.join(", ")}, ` +
        `${merged.profile.samplesPerLength} samples per length\n`,
    );
  },
};
