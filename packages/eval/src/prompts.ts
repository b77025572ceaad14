/**
 * Retrieval prompts in the formats moa-nano and moa-tiny were trained on (fixtures/README.md):
 * LongEval "lines" (recall the 5-digit value of one line of a record) and passkey retrieval (find a 5-digit key
 * hidden in filler text). Each prompt is sized to a token budget with the model's tokenizer, puts its needle at a
 * requested depth, and is a pure function of its seed.
 */
import { PromptRandom } from "./random.js";
import { KEY_WORDS } from "./words.js";

/** Counts the tokens of a text as the model will see it (the tokenizer's BOS included). */
export type TokenCounter = (text: string) => number;

export type RetrievalTask = "lines" | "passkey";

export interface RetrievalPrompt {
  readonly task: RetrievalTask;
  readonly text: string;
  /** Tokens of `text` with the model's special tokens (BOS). */
  readonly tokens: number;
  /** The 5-digit number the model must produce. */
  readonly answer: string;
  /**
   * Requested depth of the needle in [0, 1]: 0 = first line / start of the filler, 1 = last / end (passkey: at
   * least one filler unit on each side).
   */
  readonly depth: number;
  /** Where the needle (the queried record, or the pass-key sentence) is in `text`: [start, end) characters. */
  readonly needle: { readonly start: number; readonly end: number };
  /** Lines: how many records the prompt holds; passkey: how many filler units. */
  readonly units: number;
}

export interface PromptRequest {
  /** The prompt must have at most this many tokens (BOS included). */
  readonly maxTokens: number;
  readonly depth: number;
  /** The prompt's own seed (see `promptSeed`). */
  readonly seed: string;
}

export const LINES_HEADER =
  "Below is a record of lines I want you to remember. Each line begins with 'line <line index>' and contains " +
  "a '<REGISTER_CONTENT>' at the end of the line as a numerical value. For each line index, memorize its " +
  "corresponding <REGISTER_CONTENT>. At the end of the record, I will ask you to retrieve the corresponding " +
  "<REGISTER_CONTENT> of a certain line index. Now the record start:\n\n";

export function linesRecord(key: string, value: string): string {
  return `line ${key}: REGISTER_CONTENT is <${value}>`;
}

export function linesQuestion(key: string): string {
  return `Now the record is over. Tell me what is the <REGISTER_CONTENT> in line ${key}? I need the number.\nAnswer: <`;
}

export const PASSKEY_HEADER =
  "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. " +
  "I will quiz you about the important information there.\n";

export const PASSKEY_FILLER =
  "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";

export const PASSKEY_QUESTION = "\nWhat is the pass key? The pass key is ";

export function passkeyNeedle(key: string): string {
  return `The pass key is ${key}. Remember it. ${key} is the pass key.`;
}

function fiveDigits(random: PromptRandom): string {
  return String(random.integer(10000, 99999));
}

function checkRequest(request: PromptRequest, where: string): void {
  if (!(request.depth >= 0 && request.depth <= 1)) {
    throw new RangeError(`${where}: depth = ${request.depth}: must be in [0, 1]`);
  }
  if (!Number.isSafeInteger(request.maxTokens) || request.maxTokens < 1) {
    throw new RangeError(`${where}: maxTokens = ${request.maxTokens}: must be a positive integer`);
  }
}

/** The index of the needle among `count` units at `depth` (0 → first, 1 → last). */
export function needleIndex(depth: number, count: number): number {
  return Math.round(depth * Math.max(0, count - 1));
}

/** The largest `count` in [lo, hi] with `fits(count)`, for `fits` monotone (true up to some count); lo − 1 if none. */
function largestFitting(lo: number, hi: number, fits: (count: number) => boolean): number {
  let best = lo - 1;
  while (lo <= hi) {
    const mid = Math.floor((lo + hi) / 2);
    if (fits(mid)) {
      best = mid;
      lo = mid + 1;
    } else hi = mid - 1;
  }
  return best;
}

function buildLines(
  records: ReadonlyArray<{ key: string; value: string }>,
  count: number,
  depth: number,
): { text: string; answer: string; needle: { start: number; end: number } } {
  const query = needleIndex(depth, count);
  let text = LINES_HEADER;
  let needle = { start: 0, end: 0 };
  for (let i = 0; i < count; i++) {
    const record = linesRecord(records[i]!.key, records[i]!.value);
    if (i === query) needle = { start: text.length, end: text.length + record.length };
    text += `${record}\n`;
  }
  const target = records[query]!;
  return { text: text + linesQuestion(target.key), answer: target.value, needle };
}

/**
 * `count` records with distinct keys and distinct 5-digit values. Keys take their words without replacement
 * from a shuffled {@link KEY_WORDS}, so no word appears in two keys until the list runs out (past about 15k
 * tokens of records); then a freshly shuffled list follows (words now recur, each as rarely as the count allows)
 * and a pair that repeats a key is redrawn.
 * fixtures/README.md measured prompts whose keys come from a large vocabulary (almost no shared words); a word
 * shared by two keys makes the task a different, harder one (tell two keys apart by one word).
 */
function linesRecords(random: PromptRandom, count: number): Array<{ key: string; value: string }> {
  const keys = new Set<string>();
  const values = new Set<string>();
  const records: Array<{ key: string; value: string }> = [];
  let deck: string[] = [];
  const draw = (): string => {
    if (deck.length === 0) {
      deck = [...KEY_WORDS];
      for (let i = deck.length - 1; i > 0; i--) {
        const j = random.integer(0, i);
        [deck[i], deck[j]] = [deck[j]!, deck[i]!];
      }
    }
    return deck.pop()!;
  };
  while (records.length < count) {
    const first = draw();
    const second = draw();
    const key = `${first}-${second}`;
    if (first === second || keys.has(key)) continue;
    let value = fiveDigits(random);
    while (values.has(value)) value = fiveDigits(random);
    keys.add(key);
    values.add(value);
    records.push({ key, value });
  }
  return records;
}

/**
 * A LongEval "lines" prompt: as many records as fit in `maxTokens`, keys `<word>-<word>` (no word in two
 * keys, see {@link linesRecords}), distinct 5-digit values, and a question about the record at `depth`.
 * The model should continue with `NNNNN>`.
 */
export function linesPrompt(request: PromptRequest, countTokens: TokenCounter): RetrievalPrompt {
  checkRequest(request, "linesPrompt");
  const random = new PromptRandom(request.seed);
  // Enough records for any budget: each record is well over 8 tokens.
  const capacity = Math.max(1, Math.ceil(request.maxTokens / 8));
  const records = linesRecords(random, capacity);
  // The question names the queried key, whose tokens depend on the count; a count that fits is still found by
  // a search over counts, since more records never take fewer tokens.
  const tokensOf = (count: number) => countTokens(buildLines(records, count, request.depth).text);
  const count = largestFitting(1, capacity, (c) => tokensOf(c) <= request.maxTokens);
  if (count < 1) {
    throw new RangeError(
      `linesPrompt: maxTokens = ${request.maxTokens} is too small for even one record (${tokensOf(1)} tokens)`,
    );
  }
  const built = buildLines(records, count, request.depth);
  return {
    task: "lines",
    text: built.text,
    tokens: countTokens(built.text),
    answer: built.answer,
    depth: request.depth,
    needle: built.needle,
    units: count,
  };
}

/**
 * Filler units before the pass-key sentence: `round(depth · units)`, kept within [1, units − 1] so that filler
 * surrounds the key on both sides, as in fixtures/README.md's format ("… (repeated) The pass key is NNNNN. …
 * (filler repeated)") and the profiler's calibration prompts. At depth 0 with no filler before it, the key right
 * after the task description is another task: dense moa-tiny found it in 2 of 5 prompts at 8k, and in 5 of 5
 * with one filler unit before it.
 */
export function passkeyBefore(depth: number, units: number): number {
  if (units < 2) return Math.round(depth * units);
  return Math.max(1, Math.min(units - 1, Math.round(depth * units)));
}

function buildPasskey(
  key: string,
  units: number,
  depth: number,
): { text: string; needle: { start: number; end: number } } {
  const before = passkeyBefore(depth, units);
  const parts: string[] = [];
  for (let i = 0; i < before; i++) parts.push(PASSKEY_FILLER);
  const needleText = passkeyNeedle(key);
  const prefix = PASSKEY_HEADER + parts.join(" ") + (before > 0 ? " " : "");
  parts.length = 0;
  for (let i = before; i < units; i++) parts.push(PASSKEY_FILLER);
  const suffix = (units > before ? " " : "") + parts.join(" ");
  return {
    text: prefix + needleText + suffix + PASSKEY_QUESTION,
    needle: { start: prefix.length, end: prefix.length + needleText.length },
  };
}

/**
 * A passkey prompt: the filler repeated as often as fits in `maxTokens`, with the pass-key sentence after
 * {@link passkeyBefore} filler units (`round(depth · units)` within [1, units − 1]). The model should continue
 * with `NNNNN.`.
 */
export function passkeyPrompt(request: PromptRequest, countTokens: TokenCounter): RetrievalPrompt {
  checkRequest(request, "passkeyPrompt");
  const random = new PromptRandom(request.seed);
  const key = fiveDigits(random);
  const tokensOf = (units: number) => countTokens(buildPasskey(key, units, request.depth).text);
  if (tokensOf(0) > request.maxTokens) {
    throw new RangeError(
      `passkeyPrompt: maxTokens = ${request.maxTokens} is too small for the question alone (${tokensOf(0)} tokens)`,
    );
  }
  const units = largestFitting(0, Math.ceil(request.maxTokens / 4), (u) => tokensOf(u) <= request.maxTokens);
  const built = buildPasskey(key, units, request.depth);
  return {
    task: "passkey",
    text: built.text,
    tokens: countTokens(built.text),
    answer: key,
    depth: request.depth,
    needle: built.needle,
    units,
  };
}

/** A prompt of either retrieval task. */
export function retrievalPrompt(
  task: RetrievalTask,
  request: PromptRequest,
  countTokens: TokenCounter,
): RetrievalPrompt {
  return task === "lines" ? linesPrompt(request, countTokens) : passkeyPrompt(request, countTokens);
}
