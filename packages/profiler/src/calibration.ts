/**
 * Calibration prompts (DESIGN.md: Profile — "calibration samples"): inputs with long-range dependencies whose
 * content is fitted to an exact number of tokens, so a sample fills the profiled length exactly once the dense
 * model's answer is appended.
 *
 * The built-in set mixes synthetic retrieval in the formats of fixtures/README.md (LongEval "lines": recall the
 * value of one record among hundreds; passkey: find a number hidden in filler) with long natural text shipped with
 * the package (English prose and Python source, continued by the model). User data is JSONL of
 * `{"context", "question"?}` (see jsonl.ts).
 */
import { MoaError } from "@moa/core";
import { type CorpusName, corpusDocuments } from "./corpus.js";
import type { PromptFrame } from "./prompt-frame.js";
import { SampleRandom } from "./random.js";
import { KEY_WORDS } from "./words.js";

export type SampleKind = "lines" | "passkey" | "code" | "prose" | "user";

/** The content of one calibration prompt (the frame — BOS or chat turn — not included). */
export interface CalibrationContent {
  kind: SampleKind;
  /** Token ids, exactly as many as requested. */
  ids: number[];
  /** Retrieval samples: the number a correct answer contains. */
  expected?: string;
}

/** Where calibration prompts come from: the built-in set or user data. */
export interface CalibrationSource {
  /** One line for the profile's `calibration` metadata. */
  readonly description: string;
  /** Changes whenever the prompts would (data hash, generator version); part of a resumable run's key. */
  readonly key: string;
  /** The content of sample `index`, exactly `tokens` tokens long, drawn from `random`. */
  content(index: number, tokens: number, frame: PromptFrame, random: SampleRandom): CalibrationContent;
}

function tooShort(kind: string, tokens: number, needed: number): never {
  throw new MoaError(
    "E_CALIBRATION",
    `calibration: a ${kind} sample needs at least ${needed} content tokens, got ${tokens}; profile longer lengths`,
    { source: "calibration", field: "length" },
  );
}

// --- LongEval "lines" -------------------------------------------------------------------------------------

export const LINES_HEADER =
  "Below is a record of lines I want you to remember. Each line begins with 'line <line index>' and contains a " +
  "'<REGISTER_CONTENT>' at the end of the line as a numerical value. For each line index, memorize its " +
  "corresponding <REGISTER_CONTENT>. At the end of the record, I will ask you to retrieve the corresponding " +
  "<REGISTER_CONTENT> of a certain line index. Now the record start:";

interface LineRecord {
  key: string;
  value: string;
  ids: number[];
}

/**
 * A "lines" prompt of exactly `tokens` tokens: as many records as fit, a question about one record at a random
 * depth, and `Answer: <` (base models; the model continues `NNNNN>`). Records are encoded one by one at the
 * pre-tokenizer's own split points (`\n` | `line`), so the ids are the tokenizer's encoding of the text, and the
 * count is made exact by giving other records longer or shorter keys.
 */
export function linesContent(
  tokens: number,
  frame: PromptFrame,
  random: SampleRandom,
  depth?: number,
): CalibrationContent {
  // A rare record set cannot be fitted exactly; a second stream (named after the first) practically always can.
  for (let stream = random, attempt = 1; ; attempt++) {
    const content = fitLines(tokens, frame, stream, depth);
    if (content !== undefined) return content;
    if (attempt === 4) {
      throw new MoaError(
        "E_CALIBRATION",
        `calibration: could not fit a lines sample to exactly ${tokens} tokens`,
        {
          source: "calibration",
          field: "length",
        },
      );
    }
    stream = new SampleRandom(`${random.name}/refit${attempt}`);
  }
}

function fitLines(
  tokens: number,
  frame: PromptFrame,
  random: SampleRandom,
  depth: number | undefined,
): CalibrationContent | undefined {
  const header = frame.encode(LINES_HEADER);
  const cue = frame.chat ? "" : "\nAnswer: <";
  const question = (key: string) =>
    frame.encode(
      `Now the record is over. Tell me what is the <REGISTER_CONTENT> in line ${key}? I need the number.${cue}`,
    );
  const used = new Set<string>();
  const values = new Set<string>();
  const encodeRecord = (key: string, value: string, first: boolean) =>
    frame.encode(`${first ? "\n\n" : ""}line ${key}: REGISTER_CONTENT is <${value}>\n`);
  const newKey = (): string => {
    for (;;) {
      const a = random.pick(KEY_WORDS);
      const b = random.pick(KEY_WORDS);
      const key = `${a}-${b}`;
      if (a !== b && !used.has(key)) {
        used.add(key);
        return key;
      }
    }
  };
  const newRecord = (first: boolean): LineRecord => {
    const key = newKey();
    let value: string;
    do value = String(random.integer(10000, 99999));
    while (values.has(value));
    values.add(value);
    return { key, value, ids: encodeRecord(key, value, first) };
  };

  const budget = tokens - header.length;
  const records: LineRecord[] = [];
  let recordTokens = 0;
  while (recordTokens < budget) {
    const record = newRecord(records.length === 0);
    records.push(record);
    recordTokens += record.ids.length;
  }
  const asked =
    depth === undefined
      ? records[random.integer(0, records.length - 1)]!
      : records[Math.round(depth * (records.length - 1))]!;
  const questionIds = question(asked.key);
  // Drop records from the end (never the asked one, never the first: it carries the blank line) until the
  // question fits.
  while (recordTokens + questionIds.length > budget && records.length > 2) {
    const drop = records[records.length - 1] === asked ? records.length - 2 : records.length - 1;
    recordTokens -= records[drop]!.ids.length;
    used.delete(records[drop]!.key);
    values.delete(records[drop]!.value);
    records.splice(drop, 1);
  }
  if (recordTokens + questionIds.length > budget) {
    tooShort("lines", tokens, tokens - budget + recordTokens + questionIds.length);
  }
  let slack = budget - recordTokens - questionIds.length;
  // Close the gap to exactly `budget`: swap keys of other records for longer ones (slack > 0) or shorter ones
  // (slack < 0), never past zero; when that is stuck, add a record (or drop one) and close the gap from the other
  // side. Records are 17–25 tokens and keys vary by a few, so this takes tens of swaps.
  let stuck = 0;
  for (let attempt = 0; slack !== 0 && attempt < 20000; attempt++) {
    if (stuck >= 60) {
      stuck = 0;
      if (slack > 0) {
        const extra = newRecord(false);
        records.splice(random.integer(1, records.length), 0, extra);
        slack -= extra.ids.length;
      } else {
        const i = random.integer(1, records.length - 1);
        const record = records[i]!;
        if (record === asked || records.length <= 2) continue;
        records.splice(i, 1);
        used.delete(record.key);
        values.delete(record.value);
        slack += record.ids.length;
      }
      continue;
    }
    const i = random.integer(0, records.length - 1);
    const record = records[i]!;
    if (record === asked) continue;
    const key = newKey();
    const ids = encodeRecord(key, record.value, i === 0);
    const left = slack - (ids.length - record.ids.length);
    if (Math.abs(left) < Math.abs(slack) && Math.sign(left) !== -Math.sign(slack)) {
      used.delete(record.key);
      records[i] = { key, value: record.value, ids };
      slack = left;
      stuck = 0;
    } else {
      used.delete(key);
      stuck++;
    }
  }
  if (slack !== 0) return undefined;
  const ids = [...header];
  for (const record of records) ids.push(...record.ids);
  ids.push(...questionIds);
  return { kind: "lines", ids, expected: asked.value };
}

// --- passkey -----------------------------------------------------------------------------------------------

export const PASSKEY_HEADER =
  "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. I will quiz you " +
  "about the important information there.\n";
export const PASSKEY_FILLER =
  "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";

/** Filler token runs per frame: with and without a leading space, long enough for the longest sample so far. */
const fillerCache = new WeakMap<PromptFrame, { plain: number[]; spaced: number[] }>();

function fillerIds(frame: PromptFrame, tokens: number): { plain: number[]; spaced: number[] } {
  let cached = fillerCache.get(frame);
  if (cached === undefined || cached.plain.length < tokens) {
    const unit = frame.encode(` ${PASSKEY_FILLER}`).length;
    const repeats = Math.ceil(tokens / unit) + 2;
    const run = Array<string>(repeats).fill(PASSKEY_FILLER).join(" ");
    cached = { plain: frame.encode(run), spaced: frame.encode(` ${run}`) };
    fillerCache.set(frame, cached);
  }
  return cached;
}

/** A passkey prompt of exactly `tokens` tokens, the key at a random depth of the filler (or at `depth`). */
export function passkeyContent(
  tokens: number,
  frame: PromptFrame,
  random: SampleRandom,
  depth?: number,
): CalibrationContent {
  const key = String(random.integer(10000, 99999));
  const header = frame.encode(PASSKEY_HEADER);
  const needle = frame.encode(` The pass key is ${key}. Remember it. ${key} is the pass key.`);
  const question = frame.encode(
    frame.chat ? "\nWhat is the pass key?" : "\nWhat is the pass key? The pass key is ",
  );
  const filler = tokens - header.length - needle.length - question.length;
  if (filler < 2) tooShort("passkey", tokens, tokens - filler + 2);
  const before = Math.max(1, Math.min(filler - 1, Math.round((depth ?? random.float()) * filler)));
  const run = fillerIds(frame, filler);
  const ids = [
    ...header,
    ...run.plain.slice(0, before),
    ...needle,
    ...run.spaced.slice(0, filler - before),
    ...question,
  ];
  return { kind: "passkey", ids, expected: key };
}

// --- long text ---------------------------------------------------------------------------------------------

/**
 * `tokens` tokens of running text from `documents`, starting at a random document and continuing through the
 * following ones (wrapping around), separated by blank lines; the model's answer continues the text.
 * `encodeDocument(i, leading)` gives a document's ids (cached by the caller).
 */
function runningText(
  count: number,
  tokens: number,
  random: SampleRandom,
  encodeDocument: (index: number, leading: boolean) => readonly number[],
): number[] {
  const ids: number[] = [];
  let doc = random.integer(0, count - 1);
  for (let first = true; ids.length < tokens; first = false, doc = (doc + 1) % count) {
    const piece = encodeDocument(doc, !first);
    ids.push(...piece.slice(0, tokens - ids.length));
  }
  return ids;
}

const documentCache = new WeakMap<PromptFrame, Map<string, number[]>>();

function corpusDocumentIds(frame: PromptFrame, name: CorpusName, index: number, leading: boolean): number[] {
  let cache = documentCache.get(frame);
  if (cache === undefined) {
    cache = new Map();
    documentCache.set(frame, cache);
  }
  const key = `${name}/${index}/${leading}`;
  let ids = cache.get(key);
  if (ids === undefined) {
    const text = corpusDocuments(name)[index]!;
    ids = frame.encode(leading ? `\n\n${text}` : text);
    cache.set(key, ids);
  }
  return ids;
}

/** Running text from a shipped corpus (prose or Python source). */
export function corpusContent(
  name: CorpusName,
  tokens: number,
  frame: PromptFrame,
  random: SampleRandom,
): CalibrationContent {
  const documents = corpusDocuments(name);
  const ids = runningText(documents.length, tokens, random, (i, leading) =>
    corpusDocumentIds(frame, name, i, leading),
  );
  return { kind: name, ids };
}

// --- the built-in set --------------------------------------------------------------------------------------

/** Version of the built-in generators: bump when a prompt changes, so old partial profiles are not resumed. */
export const DEFAULT_CALIBRATION_VERSION = 1;

/**
 * Kinds of the built-in set by sample index (repeating): a third retrieval of lines, a third passkey, the rest
 * natural text — as the fixtures' profiles (6 lines, 3 passkey, 3 code of 12), with prose added.
 */
export const DEFAULT_MIX: readonly SampleKind[] = ["lines", "passkey", "code", "lines", "prose", "passkey"];

/** The built-in calibration set: synthetic retrieval plus shipped prose and code. */
export function defaultCalibration(): CalibrationSource {
  return {
    description: `built-in set v${DEFAULT_CALIBRATION_VERSION} (${DEFAULT_MIX.join(", ")}, repeating)`,
    key: `builtin-v${DEFAULT_CALIBRATION_VERSION}`,
    content(index, tokens, frame, random) {
      const kind = DEFAULT_MIX[index % DEFAULT_MIX.length]!;
      switch (kind) {
        case "lines":
          return linesContent(tokens, frame, random);
        case "passkey":
          return passkeyContent(tokens, frame, random);
        default:
          return corpusContent(kind as CorpusName, tokens, frame, random);
      }
    },
  };
}

// --- validation --------------------------------------------------------------------------------------------

/** Version of the built-in validation set: bump when a prompt changes. */
export const VALIDATION_CALIBRATION_VERSION = 1;

/**
 * Needle depth of validation sample `index`: the van der Corput sequence 1/2, 1/4, 3/4, 1/8, 5/8, 3/8, 7/8, … —
 * the middle of the context first, then a needle three quarters of the context back from the question (which a
 * window of half the context misses), then ever finer.
 */
export function validationDepth(index: number): number {
  let k = index + 1;
  let depth = 0;
  for (let base = 0.5; k > 0; base /= 2, k >>= 1) if (k & 1) depth += base;
  return depth;
}

/** Task of validation sample `index`: lines, passkey, passkey, lines, repeating — each task gets near and far needles. */
export function validationKind(index: number): "lines" | "passkey" {
  return index % 4 === 0 || index % 4 === 3 ? "lines" : "passkey";
}

/**
 * The built-in validation set: what compression can break and a profile can miss — long-range retrieval with
 * the needle inside the context, away from the sink and the local window. Samples are LongEval "lines" and
 * passkey ({@link validationKind}), needles at {@link validationDepth}. Natural text stays in the profile, which the solver already
 * minimises; validation tells apart plans the profile rates alike (or wrongly: its first-order influence of a
 * head that retrieves one far block is small next to a head that spreads its attention thinly over all of them).
 */
export function validationCalibration(): CalibrationSource {
  return {
    description: `built-in validation set v${VALIDATION_CALIBRATION_VERSION} (lines, passkey, passkey, lines, repeating; needles at depths 1/2, 1/4, 3/4, 1/8, …)`,
    key: `builtin-validation-v${VALIDATION_CALIBRATION_VERSION}`,
    content(index, tokens, frame, random) {
      const depth = validationDepth(index);
      return validationKind(index) === "lines"
        ? linesContent(tokens, frame, random, depth)
        : passkeyContent(tokens, frame, random, depth);
    },
  };
}
