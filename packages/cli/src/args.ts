import { parseArgs } from "node:util";
import { usageError } from "./errors.js";

export type OptionSpec = Record<string, { type: "string" | "boolean"; short?: string; multiple?: boolean }>;

export interface ParsedArgs {
  values: Record<string, string | boolean | string[] | boolean[] | undefined>;
  positionals: string[];
}

/** Strict parsing: an unknown flag or a missing value is a usage error naming the flag. */
export function parseCommandArgs(command: string, argv: string[], options: OptionSpec): ParsedArgs {
  try {
    const { values, positionals } = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
    return { values: values as ParsedArgs["values"], positionals };
  } catch (error) {
    const message = (error as Error).message.replace(/\. To specify a positional argument.*$/s, "");
    throw usageError(`moa ${command}: ${message}; see 'moa ${command} --help'`);
  }
}

export function stringFlag(args: ParsedArgs, name: string): string | undefined {
  const value = args.values[name];
  return typeof value === "string" ? value : undefined;
}

export function requireString(command: string, args: ParsedArgs, name: string): string {
  const value = stringFlag(args, name);
  if (value === undefined || value === "") throw usageError(`moa ${command}: --${name} is required`);
  return value;
}

export function numberFlag(
  command: string,
  args: ParsedArgs,
  name: string,
  range: { min?: number; max?: number; integer?: boolean; exclusiveMin?: boolean } = {},
): number | undefined {
  const raw = stringFlag(args, name);
  if (raw === undefined) return undefined;
  return parseNumber(command, name, raw, range);
}

function parseNumber(
  command: string,
  name: string,
  raw: string,
  range: { min?: number; max?: number; integer?: boolean; exclusiveMin?: boolean },
): number {
  const value = Number(raw);
  const bad = (why: string) => usageError(`moa ${command}: --${name} ${JSON.stringify(raw)}: ${why}`);
  if (raw.trim() === "" || !Number.isFinite(value)) throw bad("not a number");
  if (range.integer && !Number.isInteger(value)) throw bad("must be an integer");
  if (range.min !== undefined && (range.exclusiveMin ? value <= range.min : value < range.min)) {
    throw bad(`must be ${range.exclusiveMin ? ">" : "≥"} ${range.min}`);
  }
  if (range.max !== undefined && value > range.max) throw bad(`must be ≤ ${range.max}`);
  return value;
}

/** A comma-separated list of positive integers, e.g. --lengths 2048,4096,8192. */
export function integerListFlag(command: string, args: ParsedArgs, name: string): number[] | undefined {
  const raw = stringFlag(args, name);
  if (raw === undefined) return undefined;
  const parts = raw.split(",").map((part) => part.trim());
  if (parts.length === 0 || parts.some((part) => part === "")) {
    throw usageError(`moa ${command}: --${name} ${JSON.stringify(raw)}: expected a comma-separated list`);
  }
  return parts.map((part) => parseNumber(command, name, part, { integer: true, min: 1 }));
}

export function booleanFlag(args: ParsedArgs, name: string): boolean {
  return args.values[name] === true;
}

export function expectPositionals(command: string, args: ParsedArgs, names: string[]): string[] {
  if (args.positionals.length < names.length) {
    throw usageError(
      `moa ${command}: missing <${names[args.positionals.length]}>; see 'moa ${command} --help'`,
    );
  }
  if (args.positionals.length > names.length) {
    throw usageError(
      `moa ${command}: unexpected argument ${JSON.stringify(args.positionals[names.length])}; see 'moa ${command} --help'`,
    );
  }
  return args.positionals;
}
