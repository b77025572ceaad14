/**
 * The resumable state of a profiling run: a folder with `run.json` (the run's key and settings) and, per
 * profiled length, `length-<n>.bin` holding the float64 sum of the block influence of the samples finished so
 * far and their records. Each file is replaced atomically (written under a temporary name, then renamed) after
 * every sample, so an interruption at any moment — Ctrl-C, a kill, a crash — loses at most the sample in flight,
 * and a rerun with the same settings continues where the files stop. Summing in float64 in sample order makes a
 * resumed run's result bit-identical to an uninterrupted one.
 */
import { randomBytes } from "node:crypto";
import { mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { MoaError } from "@moa/core";
import type { SampleKind } from "./calibration.js";

export const E_PROFILE_STATE = "E_PROFILE_STATE";

const RUN_FILE = "run.json";
const RUN_FORMAT = "moa-profile-run";
const MAGIC = "MOAACC01";

/** What is kept of a finished sample (its tensor goes into the sum). */
export interface SampleRecord {
  length: number;
  index: number;
  kind: SampleKind;
  /** Dense-model loss on its own answer (mean cross-entropy over the answer tokens). */
  loss: number;
  answerTokens: number;
  answer: string;
  expected?: string;
  seconds: number;
}

/** Running sum of one length's block influence, `[layers, heads, nb, nb]`. */
export interface LengthAccumulator {
  length: number;
  shape: [number, number, number, number];
  sum: Float64Array;
  samples: SampleRecord[];
}

function stateError(path: string, message: string): never {
  throw new MoaError(E_PROFILE_STATE, `${path}: ${message}`, { source: path, field: "(file)" });
}

async function writeAtomically(path: string, data: Uint8Array | string): Promise<void> {
  const tmp = `${path}.${randomBytes(6).toString("hex")}.tmp`;
  try {
    await writeFile(tmp, data);
    await rename(tmp, path);
  } catch (error) {
    await rm(tmp, { force: true });
    throw error;
  }
}

function lengthFile(dir: string, n: number): string {
  return join(dir, `length-${n}.bin`);
}

export interface RunIdentity {
  key: string;
  /** Human-readable settings the key was made from, to say what differs when it does not match. */
  settings: Record<string, unknown>;
}

/**
 * Opens (or creates) the state folder of a run. A folder left by a run with another key is not touched:
 * the error lists the settings that differ.
 */
export async function openState(dir: string, run: RunIdentity): Promise<Map<number, LengthAccumulator>> {
  const runPath = join(dir, RUN_FILE);
  let text: string | undefined;
  try {
    text = await readFile(runPath, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
  }
  if (text === undefined) {
    await mkdir(dir, { recursive: true });
    const stray = (await readdir(dir)).filter((name) => name !== RUN_FILE && !name.endsWith(".tmp"));
    if (stray.length > 0) {
      stateError(dir, `holds ${stray.join(", ")} but no ${RUN_FILE}; delete the folder to start over`);
    }
    await writeAtomically(
      runPath,
      `${JSON.stringify({ format: RUN_FORMAT, version: 1, key: run.key, settings: run.settings }, null, 2)}\n`,
    );
    return new Map();
  }
  let saved: { format?: unknown; key?: unknown; settings?: Record<string, unknown> };
  try {
    saved = JSON.parse(text);
  } catch {
    stateError(runPath, "is not valid JSON; delete the folder to start over");
  }
  if (saved.format !== RUN_FORMAT)
    stateError(runPath, `is not a ${RUN_FORMAT} file; delete the folder to start over`);
  if (saved.key !== run.key) {
    const before = saved.settings ?? {};
    const differing = [...new Set([...Object.keys(before), ...Object.keys(run.settings)])]
      .filter((k) => JSON.stringify(before[k]) !== JSON.stringify(run.settings[k]))
      .map((k) => `${k}: ${JSON.stringify(before[k])} then, ${JSON.stringify(run.settings[k])} now`);
    stateError(
      dir,
      `holds a partial profile made with other settings (${differing.join("; ") || "the model files changed"}); ` +
        "rerun with those settings to resume it, or delete the folder (--restart) to start over",
    );
  }
  // Temporary files of a write that was interrupted.
  for (const name of await readdir(dir))
    if (name.endsWith(".tmp")) await rm(join(dir, name), { force: true });
  const accumulators = new Map<number, LengthAccumulator>();
  for (const name of await readdir(dir)) {
    const match = /^length-(\d+)\.bin$/.exec(name);
    if (match === null) continue;
    const acc = decodeAccumulator(await readFile(join(dir, name)), join(dir, name), run.key);
    if (acc.length !== Number(match[1])) stateError(join(dir, name), `holds length ${acc.length}`);
    accumulators.set(acc.length, acc);
  }
  return accumulators;
}

/** Replaces a length's file with the accumulator (after each finished sample). */
export async function saveAccumulator(dir: string, key: string, acc: LengthAccumulator): Promise<void> {
  await writeAtomically(lengthFile(dir, acc.length), encodeAccumulator(acc, key));
}

/** Removes a finished run's state folder. */
export async function removeState(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

function encodeAccumulator(acc: LengthAccumulator, key: string): Uint8Array {
  const header = new TextEncoder().encode(
    JSON.stringify({ key, length: acc.length, shape: acc.shape, samples: acc.samples }),
  );
  const dataStart = Math.ceil((12 + header.length) / 8) * 8;
  const out = new Uint8Array(dataStart + acc.sum.byteLength);
  out.set(new TextEncoder().encode(MAGIC), 0);
  new DataView(out.buffer).setUint32(8, header.length, true);
  out.set(header, 12);
  out.set(new Uint8Array(acc.sum.buffer, acc.sum.byteOffset, acc.sum.byteLength), dataStart);
  return out;
}

function decodeAccumulator(bytes: Uint8Array, path: string, key: string): LengthAccumulator {
  const damaged = (why: string): never =>
    stateError(path, `is damaged (${why}); delete it to profile that length again`);
  if (bytes.length < 12 || new TextDecoder().decode(bytes.subarray(0, 8)) !== MAGIC) damaged("bad magic");
  const headerLength = new DataView(bytes.buffer, bytes.byteOffset).getUint32(8, true);
  if (12 + headerLength > bytes.length) damaged("header past the end");
  let header: { key?: unknown; length?: unknown; shape?: unknown; samples?: unknown };
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(12, 12 + headerLength)));
  } catch {
    return damaged("header is not JSON");
  }
  if (header.key !== key) damaged("made by another run");
  const shape = header.shape;
  if (
    !Array.isArray(shape) ||
    shape.length !== 4 ||
    !shape.every((d) => Number.isSafeInteger(d) && d > 0) ||
    typeof header.length !== "number" ||
    !Array.isArray(header.samples)
  ) {
    return damaged("bad header");
  }
  const dataStart = Math.ceil((12 + headerLength) / 8) * 8;
  const elements = (shape as number[]).reduce((a, d) => a * d, 1);
  if (bytes.length - dataStart !== elements * 8)
    damaged(`${bytes.length - dataStart} data bytes for ${elements} sums`);
  const sum = new Float64Array(elements);
  new Uint8Array(sum.buffer).set(bytes.subarray(dataStart));
  return {
    length: header.length,
    shape: shape as [number, number, number, number],
    sum,
    samples: header.samples as SampleRecord[],
  };
}
