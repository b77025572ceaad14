import { randomBytes } from "node:crypto";
import { mkdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { CliError } from "./errors.js";

/** Where the command prints: results to stdout, progress and diagnostics to stderr. */
export interface Io {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  cwd: string;
}

export const processIo: Io = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
  cwd: process.cwd(),
};

export async function readInputFile(path: string): Promise<Uint8Array> {
  try {
    return new Uint8Array(await readFile(path));
  } catch (error) {
    throw new CliError(
      `${path}: cannot read file (${(error as NodeJS.ErrnoException).code ?? String(error)})`,
    );
  }
}

export async function readJsonFile(path: string): Promise<unknown> {
  const bytes = await readInputFile(path);
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch (error) {
    throw new CliError(`${path}: not valid JSON (${(error as Error).message})`);
  }
}

export async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Writes every file or none: each goes to a temporary name in its folder first and is renamed into place
 * only after all were written, so a failure (or an existing file without --force) leaves nothing half done.
 */
export async function writeFilesAtomically(
  files: ReadonlyArray<{ path: string; data: string | Uint8Array }>,
  options: { force: boolean },
): Promise<void> {
  if (!options.force) {
    for (const file of files) {
      if (await exists(file.path)) {
        throw new CliError(
          `${file.path} already exists; pass --force to overwrite it or choose another --out`,
        );
      }
    }
  }
  const staged: Array<{ tmp: string; path: string }> = [];
  try {
    for (const file of files) {
      await mkdir(dirname(file.path), { recursive: true });
      const tmp = join(dirname(file.path), `.${basename(file.path)}.${randomBytes(6).toString("hex")}.tmp`);
      await writeFile(tmp, file.data);
      staged.push({ tmp, path: file.path });
    }
    for (const { tmp, path } of staged) await rename(tmp, path);
  } catch (error) {
    await Promise.all(staged.map(({ tmp }) => rm(tmp, { force: true })));
    if (error instanceof CliError) throw error;
    throw new CliError(`cannot write output: ${(error as Error).message}`);
  }
}
