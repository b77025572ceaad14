import { parseCommandArgs } from "./args.js";
import { type Command, helpText } from "./command.js";
import { CliError, EXIT_FAILURE, EXIT_OK, EXIT_USAGE } from "./errors.js";
import { type Io, processIo } from "./io.js";
import { commands } from "./registry.js";

function overview(): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  return [
    "moa — compress language models with Mixture of Sparse Attention and run them.",
    "",
    "Usage: moa <command> [args] [--flags]",
    "",
    "Commands:",
    ...commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    "",
    "Run 'moa <command> --help' for a command's flags and examples.",
    "",
  ].join("\n");
}

function findCommand(argv: string[]): { command: Command; rest: string[] } | undefined {
  // Longest match first so "plan inspect" wins over a hypothetical "plan".
  const sorted = [...commands].sort((a, b) => b.name.split(" ").length - a.name.split(" ").length);
  for (const command of sorted) {
    const words = command.name.split(" ");
    if (words.every((word, i) => argv[i] === word)) return { command, rest: argv.slice(words.length) };
  }
  return undefined;
}

/** Runs `moa` with the given arguments; returns the exit code instead of exiting, so tests can call it. */
export async function main(argv: string[], io: Io = processIo): Promise<number> {
  if (argv.length === 0 || argv[0] === "--help" || argv[0] === "-h" || argv[0] === "help") {
    io.stdout(overview());
    return argv.length === 0 ? EXIT_USAGE : EXIT_OK;
  }
  if (argv[0] === "--version" || argv[0] === "-v") {
    io.stdout(`${__MOA_CLI_VERSION__}\n`);
    return EXIT_OK;
  }
  const found = findCommand(argv);
  if (found === undefined) {
    io.stderr(`moa: unknown command ${JSON.stringify(argv.join(" "))}; run 'moa --help' for the list\n`);
    return EXIT_USAGE;
  }
  const { command, rest } = found;
  if (rest.includes("--help") || rest.includes("-h")) {
    io.stdout(helpText(command));
    return EXIT_OK;
  }
  try {
    const args = parseCommandArgs(command.name, rest, command.options);
    await command.run(args, io);
    return EXIT_OK;
  } catch (error) {
    if (error instanceof CliError) {
      io.stderr(`error: ${error.message}\n`);
      return error.exitCode;
    }
    io.stderr(`error: moa ${command.name} failed unexpectedly: ${(error as Error).stack ?? String(error)}\n`);
    return EXIT_FAILURE;
  }
}
