import type { Command } from "./command.js";
import { compressCommand } from "./commands/compress.js";
import { evalCommand } from "./commands/eval.js";
import { generateCommand } from "./commands/generate.js";
import { optimizeCommand } from "./commands/optimize.js";
import { planConvertCommand } from "./commands/plan-convert.js";
import { planInspectCommand } from "./commands/plan-inspect.js";
import { profileCommand } from "./commands/profile.js";
import { profileMergeCommand } from "./commands/profile-merge.js";
import { serveCommand } from "./commands/serve.js";

/** Every `moa` subcommand, in the order `moa --help` lists them. */
export const commands: readonly Command[] = [
  compressCommand,
  profileCommand,
  profileMergeCommand,
  optimizeCommand,
  planInspectCommand,
  planConvertCommand,
  evalCommand,
  generateCommand,
  serveCommand,
];
