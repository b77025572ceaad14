import type { Command } from "./command.js";
import { generateCommand } from "./commands/generate.js";
import { optimizeCommand } from "./commands/optimize.js";
import { planConvertCommand } from "./commands/plan-convert.js";
import { planInspectCommand } from "./commands/plan-inspect.js";
import { serveCommand } from "./commands/serve.js";

/** Every `moa` subcommand, in the order `moa --help` lists them. */
export const commands: readonly Command[] = [
  optimizeCommand,
  planInspectCommand,
  planConvertCommand,
  generateCommand,
  serveCommand,
];
