import type { OptionSpec, ParsedArgs } from "./args.js";
import type { Io } from "./io.js";

/** One `moa` subcommand: its help text and its action. */
export interface Command {
  /** Words after `moa`, e.g. "optimize" or "plan inspect". */
  name: string;
  summary: string;
  usage: string;
  /** Flag descriptions, one line each, shown by --help. */
  flags: ReadonlyArray<[string, string]>;
  examples: readonly string[];
  options: OptionSpec;
  run(args: ParsedArgs, io: Io): Promise<void>;
}

export function helpText(command: Command): string {
  const width = Math.max(...command.flags.map(([flag]) => flag.length), 0);
  const lines = [
    `${command.summary}`,
    "",
    `Usage: ${command.usage}`,
    "",
    ...(command.flags.length > 0
      ? ["Options:", ...command.flags.map(([f, d]) => `  ${f.padEnd(width)}  ${d}`), ""]
      : []),
    "Examples:",
    ...command.examples.map((example) => `  ${example}`),
    "",
  ];
  return lines.join("\n");
}
