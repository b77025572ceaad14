// VitePress data loader: the committed benchmark results, read at build time and rendered by
// benchmarks.md. Nothing is computed or rounded here: every number shown is the text of the number in the
// JSON file (a small parser keeps each number's lexeme, so `1.0` stays `1.0` and `1e-07` stays `1e-07`).
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { defineLoader } from "vitepress";

export interface BenchmarkTable {
  /** Path of the array in the JSON, e.g. "results" or "ours.results". */
  name: string;
  columns: string[];
  rows: string[][];
}

export interface BenchmarkList {
  /** Path of an array of scalars in the JSON, e.g. "notes". */
  name: string;
  items: string[];
}

export interface BenchmarkResult {
  /** Path from the repository root, e.g. "bench/results/h100-attention.json". */
  file: string;
  /** The card or machine the numbers were measured on: the top-level `device`, `card` or `gpu`. */
  card?: string;
  /** The commands that produced the file: the top-level `command`, and each string of a top-level `commands`. */
  commands: [string, string][];
  /** The top-level `date`, when there is one. */
  date?: string;
  /** The other scalar fields (versions, settings, nested devices…) as [dotted key, value]. */
  fields: [string, string][];
  /** Arrays of scalars (notes, lengths…). */
  lists: BenchmarkList[];
  /** Arrays of objects, one row per object. */
  tables: BenchmarkTable[];
  /** Set when the file cannot be read as JSON; nothing else is shown then. */
  error?: string;
}

declare const data: BenchmarkResult[];
export { data };

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));

/**
 * Where results are committed, as git pathspecs: the root's bench/results and each package's bench/results
 * (a wildcard pathspec matches whole paths, and its `*` also matches `/`, hence the trailing `/*`).
 */
const RESULT_PATHSPECS = ["bench/results", "packages/*/bench/results/*"];

// ---- which files ----

/**
 * The result files git tracks: results that are committed (or staged to be), never a local run's output that
 * is ignored (e.g. @moa/kernels-cuda's bench/results/), so every clone builds the same page. Outside a git
 * checkout (a source archive) every JSON file in the result folders is taken.
 */
function resultFiles(): string[] {
  let listed: string[] | undefined;
  try {
    const out = execFileSync("git", ["ls-files", "-z", "--", ...RESULT_PATHSPECS], {
      cwd: repoRoot,
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
    });
    listed = out.split("\0").filter((path) => path !== "");
  } catch {
    listed = undefined;
  }
  const files =
    listed ??
    resultDirs().flatMap((dir) =>
      jsonFiles(dir).map((path) => relative(repoRoot, path).split("\\").join("/")),
    );
  return files
    .filter((file) => file.endsWith(".json") && existsSync(join(repoRoot, file)))
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

function resultDirs(): string[] {
  const dirs = [join(repoRoot, "bench/results")];
  const packages = join(repoRoot, "packages");
  if (existsSync(packages)) {
    for (const name of readdirSync(packages).sort()) dirs.push(join(packages, name, "bench/results"));
  }
  return dirs.filter((dir) => existsSync(dir));
}

function jsonFiles(dir: string): string[] {
  const files: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) files.push(...jsonFiles(path));
    else if (entry.isFile() && entry.name.endsWith(".json")) files.push(path);
  }
  return files;
}

// ---- JSON with numbers kept as written ----

/** A JSON number as its source text. */
class JsonNumber {
  constructor(readonly text: string) {}
}

type JsonValue = null | boolean | string | JsonNumber | JsonValue[] | { [key: string]: JsonValue };

/**
 * Parses JSON keeping every number's lexeme. Also takes the NaN, Infinity and -Infinity that Python's
 * json.dump writes, as numbers. Errors give the line and column.
 */
function parseJson(source: string): JsonValue {
  let i = 0;
  const fail = (message: string): never => {
    const before = source.slice(0, i);
    const line = before.split("\n").length;
    const column = i - before.lastIndexOf("\n");
    throw new Error(`${message} at line ${line}, column ${column}`);
  };
  const skip = () => {
    while (i < source.length && " \t\n\r".includes(source[i]!)) i++;
  };
  const expect = (word: string) => {
    if (source.startsWith(word, i)) i += word.length;
    else fail(`expected ${word}`);
  };
  const string = (): string => {
    const start = i;
    i++; // opening quote
    while (i < source.length && source[i] !== '"') i += source[i] === "\\" ? 2 : 1;
    if (i >= source.length) fail("unterminated string");
    i++;
    return JSON.parse(source.slice(start, i)) as string;
  };
  const value = (): JsonValue => {
    skip();
    const c = source[i];
    if (c === "{") {
      i++;
      const object: { [key: string]: JsonValue } = {};
      skip();
      if (source[i] === "}") {
        i++;
        return object;
      }
      for (;;) {
        skip();
        if (source[i] !== '"') fail("expected a string key");
        const key = string();
        skip();
        expect(":");
        object[key] = value();
        skip();
        if (source[i] === ",") i++;
        else if (source[i] === "}") {
          i++;
          return object;
        } else fail("expected , or }");
      }
    }
    if (c === "[") {
      i++;
      const array: JsonValue[] = [];
      skip();
      if (source[i] === "]") {
        i++;
        return array;
      }
      for (;;) {
        array.push(value());
        skip();
        if (source[i] === ",") i++;
        else if (source[i] === "]") {
          i++;
          return array;
        } else fail("expected , or ]");
      }
    }
    if (c === '"') return string();
    for (const [word, literal] of [
      ["true", true],
      ["false", false],
      ["null", null],
    ] as const) {
      if (source.startsWith(word, i)) {
        i += word.length;
        return literal;
      }
    }
    const match = /^(?:-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|NaN|-?Infinity)/.exec(
      source.slice(i, i + 64),
    );
    if (match === null) {
      return fail(c === undefined ? "unexpected end of file" : `unexpected ${JSON.stringify(c)}`);
    }
    i += match[0].length;
    return new JsonNumber(match[0]);
  };
  const result = value();
  skip();
  if (i < source.length) fail("unexpected text after the JSON value");
  return result;
}

function isObject(value: JsonValue | undefined): value is { [key: string]: JsonValue } {
  return (
    typeof value === "object" && value !== null && !(value instanceof JsonNumber) && !Array.isArray(value)
  );
}

function isScalar(value: JsonValue): boolean {
  return value === null || typeof value !== "object" || value instanceof JsonNumber;
}

/** A value as text: numbers as written, nested values as compact JSON with their numbers as written. */
function text(value: JsonValue): string {
  if (value === null) return "";
  if (value instanceof JsonNumber) return value.text;
  if (typeof value === "string") return value;
  if (typeof value === "boolean") return String(value);
  return compact(value);
}

function compact(value: JsonValue): string {
  if (value === null) return "null";
  if (value instanceof JsonNumber) return value.text;
  if (typeof value !== "object") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(compact).join(",")}]`;
  return `{${Object.entries(value)
    .map(([k, v]) => `${JSON.stringify(k)}:${compact(v)}`)
    .join(",")}}`;
}

// ---- the page's view of one file ----

const CARD_KEYS = ["card", "gpu", "device"];

function collect(value: { [key: string]: JsonValue }, prefix: string, result: BenchmarkResult): void {
  for (const [key, item] of Object.entries(value)) {
    const name = prefix === "" ? key : `${prefix}.${key}`;
    if (Array.isArray(item) && item.length > 0 && item.every(isObject)) {
      const rows = item as { [key: string]: JsonValue }[];
      const columns: string[] = [];
      for (const row of rows)
        for (const column of Object.keys(row)) if (!columns.includes(column)) columns.push(column);
      result.tables.push({
        name,
        columns,
        rows: rows.map((row) => columns.map((c) => (row[c] === undefined ? "" : text(row[c]!)))),
      });
    } else if (Array.isArray(item) && item.length > 0 && item.every(isScalar)) {
      result.lists.push({ name, items: item.map(text) });
    } else if (isObject(item)) {
      collect(item, name, result);
    } else {
      result.fields.push([name, text(item)]);
    }
  }
}

function readResult(file: string, source: string): BenchmarkResult {
  const result: BenchmarkResult = { file, commands: [], fields: [], lists: [], tables: [] };
  let json: JsonValue;
  try {
    json = parseJson(source);
  } catch (error) {
    result.error = (error as Error).message;
    return result;
  }
  if (Array.isArray(json) && json.length > 0 && json.every(isObject)) json = { results: json };
  if (!isObject(json)) {
    result.fields.push(["value", text(json)]);
    return result;
  }
  const rest: { [key: string]: JsonValue } = { ...json };
  const card = CARD_KEYS.find((key) => typeof rest[key] === "string");
  if (card !== undefined) {
    result.card = rest[card] as string;
    delete rest[card];
  }
  if (typeof rest.command === "string") {
    result.commands.push(["command", rest.command]);
    delete rest.command;
  }
  const commands = rest.commands;
  if (isObject(commands) && Object.values(commands).every((c) => typeof c === "string")) {
    for (const [key, command] of Object.entries(commands)) result.commands.push([key, command as string]);
    delete rest.commands;
  } else if (Array.isArray(commands) && commands.every((c) => typeof c === "string")) {
    for (const [i, command] of commands.entries()) result.commands.push([`${i}`, command as string]);
    delete rest.commands;
  }
  if (typeof rest.date === "string") {
    result.date = rest.date;
    delete rest.date;
  }
  collect(rest, "", result);
  return result;
}

export default defineLoader({
  load(): BenchmarkResult[] {
    return resultFiles().map((file) => readResult(file, readFileSync(join(repoRoot, file), "utf8")));
  },
});
