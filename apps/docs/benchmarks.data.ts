// VitePress data loader: the committed benchmark results, read at build time and rendered by
// benchmarks.md. Nothing is computed or rounded here: every number shown is the one in the JSON.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { defineLoader } from "vitepress";

export interface BenchmarkTable {
  /** Path of the array in the JSON, e.g. "results" or "runs.decode". */
  name: string;
  columns: string[];
  rows: string[][];
}

export interface BenchmarkResult {
  /** Path from the repository root, e.g. "bench/results/solver.json". */
  file: string;
  /** Scalar fields (machine, card, versions, command…) as [dotted key, value]. */
  fields: [string, string][];
  tables: BenchmarkTable[];
  /** Set when the file is not valid JSON. */
  error?: string;
}

declare const data: BenchmarkResult[];
export { data };

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));

/** Where `pnpm bench` writes: the root's bench/results and each package's bench/results. */
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

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function cell(value: unknown): string {
  if (value === null || value === undefined) return "";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function collect(value: Record<string, unknown>, prefix: string, result: BenchmarkResult): void {
  for (const [key, item] of Object.entries(value)) {
    const name = prefix === "" ? key : `${prefix}.${key}`;
    if (Array.isArray(item) && item.length > 0 && item.every(isPlainObject)) {
      const columns: string[] = [];
      for (const row of item)
        for (const column of Object.keys(row)) if (!columns.includes(column)) columns.push(column);
      result.tables.push({ name, columns, rows: item.map((row) => columns.map((c) => cell(row[c]))) });
    } else if (isPlainObject(item)) {
      collect(item, name, result);
    } else {
      result.fields.push([name, Array.isArray(item) ? item.map(cell).join(", ") : cell(item)]);
    }
  }
}

export default defineLoader({
  load(): BenchmarkResult[] {
    const files = resultDirs()
      .flatMap(jsonFiles)
      .map((path) => relative(repoRoot, path).split("\\").join("/"))
      .sort();
    return files.map((file) => {
      const result: BenchmarkResult = { file, fields: [], tables: [] };
      try {
        const json: unknown = JSON.parse(readFileSync(join(repoRoot, file), "utf8"));
        if (isPlainObject(json)) collect(json, "", result);
        else if (Array.isArray(json) && json.every(isPlainObject)) collect({ results: json }, "", result);
        else result.fields.push(["value", cell(json)]);
      } catch (error) {
        result.error = (error as Error).message;
      }
      return result;
    });
  },
});
