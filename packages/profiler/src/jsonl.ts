/**
 * User calibration data: JSONL, one `{"context": string, "question"?: string}` per line (other keys are ignored,
 * blank lines skipped). The prompt is the context, then a blank line and the question; the dense model's answer
 * to it is what the profile measures. A context longer than a profiled length is cut in the middle (its start
 * and end kept, where instructions and questions usually are); a shorter one is placed at a random depth among
 * other records' contexts, so the question must be answered from far back in the input.
 */
import { createHash } from "node:crypto";
import { basename } from "node:path";
import { MoaError } from "@moa/core";
import type { CalibrationContent, CalibrationSource } from "./calibration.js";
import type { PromptFrame } from "./prompt-frame.js";

export interface CalibrationRecord {
  context: string;
  question?: string;
  /** 1-based line of the record in its file, for messages. */
  line: number;
}

function badLine(source: string, line: number, message: string): never {
  throw new MoaError("E_CALIBRATION_DATA", `${source}:${line}: ${message}`, {
    source,
    field: `line ${line}`,
  });
}

/** Parses calibration JSONL; an error names the file and the line. */
export function parseCalibrationJsonl(text: string, source: string): CalibrationRecord[] {
  const records: CalibrationRecord[] = [];
  const lines = text.split("\n");
  lines.forEach((raw, i) => {
    const line = i + 1;
    if (raw.trim() === "") return;
    let value: unknown;
    try {
      value = JSON.parse(raw);
    } catch (error) {
      badLine(source, line, `not valid JSON (${(error as Error).message})`);
    }
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      badLine(source, line, 'expected an object {"context": "...", "question": "..."}');
    }
    const { context, question } = value as Record<string, unknown>;
    if (typeof context !== "string" || context.trim() === "") {
      badLine(source, line, '"context" must be a non-empty string');
    }
    if (question !== undefined && typeof question !== "string") {
      badLine(source, line, '"question" must be a string when present');
    }
    records.push(question === undefined || question === "" ? { context, line } : { context, question, line });
  });
  if (records.length === 0) {
    throw new MoaError(
      "E_CALIBRATION_DATA",
      `${source}: no records; expected JSONL lines {"context": "..."}`,
      {
        source,
        field: "(file)",
      },
    );
  }
  return records;
}

/** A calibration source over user records (`text` is the file's content, hashed so a resumed run sees the same data). */
export function userCalibration(
  records: readonly CalibrationRecord[],
  source: string,
  text: string,
): CalibrationSource {
  const digest = createHash("sha256").update(text).digest("hex");
  const encoded = new WeakMap<PromptFrame, Map<string, number[]>>();
  const encode = (frame: PromptFrame, key: string, text: string): number[] => {
    let cache = encoded.get(frame);
    if (cache === undefined) {
      cache = new Map();
      encoded.set(frame, cache);
    }
    let ids = cache.get(key);
    if (ids === undefined) {
      ids = frame.encode(text);
      cache.set(key, ids);
    }
    return ids;
  };
  const contextIds = (frame: PromptFrame, r: number, leading: boolean) =>
    encode(frame, `c${r}/${leading}`, `${leading ? "\n\n" : ""}${records[r]!.context}`);

  return {
    description: `user data ${basename(source)} (${records.length} records, sha256 ${digest.slice(0, 12)})`,
    key: `user-v1-${digest}`,
    content(index, tokens, frame, random): CalibrationContent {
      const r = index % records.length;
      const record = records[r]!;
      const question = record.question === undefined ? [] : encode(frame, `q${r}`, `\n\n${record.question}`);
      const need = tokens - question.length;
      if (need < 2) {
        throw new MoaError(
          "E_CALIBRATION",
          `${source}:${record.line}: the question alone takes ${question.length} tokens, more than the ${tokens} content tokens of this length`,
          { source, field: `line ${record.line}` },
        );
      }
      const ownIds = contextIds(frame, r, false);
      if (ownIds.length >= need) {
        // Too long: keep the start and the end.
        const head = Math.ceil(need / 2);
        return {
          kind: "user",
          ids: [...ownIds.slice(0, head), ...ownIds.slice(ownIds.length - (need - head)), ...question],
        };
      }
      // Too short: other records' contexts around it, the record at a random depth.
      const others = records.length === 1 ? [r] : records.map((_, i) => i).filter((i) => i !== r);
      const mean = others.reduce((s, i) => s + contextIds(frame, i, true).length, 0) / others.length;
      const target = random.integer(0, Math.max(0, Math.ceil((need - ownIds.length) / Math.max(1, mean))));
      const pieces: { ids: readonly number[]; own: boolean }[] = [];
      let total = 0;
      let placed = false;
      while (total < need || !placed) {
        const isOwn: boolean = !placed && (pieces.length === target || total >= need);
        const ids = contextIds(frame, isOwn ? r : random.pick(others), pieces.length > 0);
        pieces.push({ ids, own: isOwn });
        placed ||= isOwn;
        total += ids.length;
      }
      // Cut the excess from the last distractors, then (only if the record's own blank-line lead is all that is
      // left over) from the front of the record.
      let excess = total - need;
      for (let i = pieces.length - 1; excess > 0 && i >= 0; i--) {
        const piece = pieces[i]!;
        if (piece.own) continue;
        const cut = Math.min(excess, piece.ids.length);
        pieces[i] = { ids: piece.ids.slice(0, piece.ids.length - cut), own: false };
        excess -= cut;
      }
      const ownIndex = pieces.findIndex((p) => p.own);
      if (excess > 0) pieces[ownIndex] = { ids: pieces[ownIndex]!.ids.slice(excess), own: true };
      const ids: number[] = [];
      for (const piece of pieces) ids.push(...piece.ids);
      ids.push(...question);
      return { kind: "user", ids };
    },
  };
}
