import { TextTokenizer } from "@moa/runtime";
import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import {
  KEY_WORDS,
  LINES_HEADER,
  linesPrompt,
  linesQuestion,
  needleIndex,
  PASSKEY_FILLER,
  PASSKEY_HEADER,
  passkeyBefore,
  passkeyNeedle,
  passkeyPrompt,
  promptSeed,
  type TokenCounter,
} from "../src/index.js";
import { MOA_NANO } from "./fixtures.js";

let countTokens: TokenCounter;
let tokenizer: TextTokenizer;
beforeAll(async () => {
  tokenizer = await TextTokenizer.fromDir(MOA_NANO);
  countTokens = (text) => tokenizer.encode(text).length;
});

function occurrences(text: string, part: string): number {
  let count = 0;
  for (let at = text.indexOf(part); at >= 0; at = text.indexOf(part, at + 1)) count++;
  return count;
}

const RECORD = /^line ([a-z]{4,9})-([a-z]{4,9}): REGISTER_CONTENT is <(\d{5})>$/;

describe("LongEval lines prompts", () => {
  it("fill the token budget to within one record, and never exceed it", () => {
    for (const maxTokens of [504, 1016, 2040]) {
      for (const depth of [0, 0.5, 1]) {
        const prompt = linesPrompt(
          { maxTokens, depth, seed: promptSeed(1, "lines", maxTokens, 0) },
          countTokens,
        );
        expect(prompt.tokens).toBe(tokenizer.encode(prompt.text).length);
        expect(prompt.tokens).toBeLessThanOrEqual(maxTokens);
        // A record is at most ~25 tokens (two 9-letter words and 5 digits): one more would not fit.
        expect(prompt.tokens).toBeGreaterThan(maxTokens - 30);
      }
    }
  });

  it("have the fixtures' exact format: header, one record per line, the question, 'Answer: <'", () => {
    const prompt = linesPrompt({ maxTokens: 600, depth: 0.25, seed: "format" }, countTokens);
    expect(prompt.text.startsWith(LINES_HEADER)).toBe(true);
    const body = prompt.text.slice(LINES_HEADER.length);
    const lines = body.split("\n");
    const records = lines.slice(0, prompt.units);
    expect(records.every((line) => RECORD.test(line))).toBe(true);
    const queried = RECORD.exec(records[needleIndex(0.25, prompt.units)]!)!;
    const key = `${queried[1]}-${queried[2]}`;
    expect(lines.slice(prompt.units).join("\n")).toBe(linesQuestion(key));
    expect(prompt.text.endsWith("I need the number.\nAnswer: <")).toBe(true);
    expect(prompt.answer).toBe(queried[3]);
  });

  it("put the queried record exactly once, at the requested depth, with distinct keys and values", () => {
    fc.assert(
      fc.property(
        fc.double({ min: 0, max: 1, noNaN: true }),
        fc.integer({ min: 300, max: 900 }),
        fc.nat(),
        (depth, maxTokens, seed) => {
          const prompt = linesPrompt({ maxTokens, depth, seed: `p${seed}` }, countTokens);
          const records = prompt.text.slice(LINES_HEADER.length).split("\n").slice(0, prompt.units);
          const parsed = records.map((line) => RECORD.exec(line)!);
          expect(parsed.every((m) => m !== null && m[1] !== m[2])).toBe(true);
          const keys = parsed.map((m) => `${m[1]}-${m[2]}`);
          expect(new Set(keys).size).toBe(keys.length);
          expect(new Set(parsed.map((m) => m[3])).size).toBe(keys.length);
          const index = Math.round(depth * (prompt.units - 1));
          const needle = prompt.text.slice(prompt.needle.start, prompt.needle.end);
          expect(needle).toBe(records[index]);
          expect(occurrences(prompt.text, `line ${keys[index]}:`)).toBe(1);
          expect(occurrences(prompt.text, `<${prompt.answer}>`)).toBe(1);
          expect(prompt.text.endsWith(linesQuestion(keys[index]!))).toBe(true);
        },
      ),
      { numRuns: 25 },
    );
  });

  it("never use a word in two keys (fixtures/README.md's prompts draw keys from a large vocabulary)", () => {
    for (const maxTokens of [1016, 4088, 8184]) {
      const prompt = linesPrompt(
        { maxTokens, depth: 0.5, seed: promptSeed(0, "lines", maxTokens, 1) },
        countTokens,
      );
      const words = prompt.text
        .slice(LINES_HEADER.length)
        .split("\n")
        .slice(0, prompt.units)
        .flatMap((line) => RECORD.exec(line)!.slice(1, 3));
      expect(words).toHaveLength(2 * prompt.units);
      expect(new Set(words).size).toBe(words.length);
    }
    expect(new Set(KEY_WORDS).size).toBe(KEY_WORDS.length);
    expect(KEY_WORDS.every((word) => /^[a-z]{4,9}$/.test(word))).toBe(true);
  });

  it("are a pure function of the seed", () => {
    const request = { maxTokens: 700, depth: 0.75, seed: promptSeed(3, "lines", 700, 2) };
    const a = linesPrompt(request, countTokens);
    const b = linesPrompt(request, countTokens);
    expect(b).toEqual(a);
    const other = linesPrompt({ ...request, seed: promptSeed(3, "lines", 700, 3) }, countTokens);
    expect(other.text).not.toBe(a.text);
  });
});

describe("passkey prompts", () => {
  it("fill the token budget to within one filler unit, and never exceed it", () => {
    for (const maxTokens of [504, 1016, 2040]) {
      for (const depth of [0, 0.5, 1]) {
        const prompt = passkeyPrompt(
          { maxTokens, depth, seed: promptSeed(1, "passkey", maxTokens, 0) },
          countTokens,
        );
        expect(prompt.tokens).toBe(tokenizer.encode(prompt.text).length);
        expect(prompt.tokens).toBeLessThanOrEqual(maxTokens);
        expect(prompt.tokens).toBeGreaterThan(maxTokens - countTokens(` ${PASSKEY_FILLER}`));
      }
    }
  });

  it("hide the key sentence once, after round(depth · units) filler units (at least one on each side), and end with the question", () => {
    fc.assert(
      fc.property(
        fc.double({ min: 0, max: 1, noNaN: true }),
        fc.integer({ min: 200, max: 900 }),
        fc.nat(),
        (depth, maxTokens, seed) => {
          const prompt = passkeyPrompt({ maxTokens, depth, seed: `k${seed}` }, countTokens);
          expect(prompt.answer).toMatch(/^\d{5}$/);
          const needle = passkeyNeedle(prompt.answer);
          expect(prompt.text.slice(prompt.needle.start, prompt.needle.end)).toBe(needle);
          expect(occurrences(prompt.text, needle)).toBe(1);
          expect(occurrences(prompt.text, prompt.answer)).toBe(2);
          const before = prompt.text.slice(PASSKEY_HEADER.length, prompt.needle.start);
          const expected = Math.max(1, Math.min(prompt.units - 1, Math.round(depth * prompt.units)));
          expect(occurrences(before, PASSKEY_FILLER)).toBe(expected);
          expect(passkeyBefore(depth, prompt.units)).toBe(expected);
          expect(occurrences(prompt.text, PASSKEY_FILLER)).toBe(prompt.units);
          expect(prompt.text.startsWith(PASSKEY_HEADER)).toBe(true);
          expect(prompt.text.endsWith("\nWhat is the pass key? The pass key is ")).toBe(true);
        },
      ),
      { numRuns: 25 },
    );
  });

  it("put filler before the key at depth 0 and after it at depth 1 (fixtures/README.md's format)", () => {
    for (const depth of [0, 1]) {
      const prompt = passkeyPrompt({ maxTokens: 1016, depth, seed: "edge" }, countTokens);
      const before = prompt.text.slice(PASSKEY_HEADER.length, prompt.needle.start);
      const after = prompt.text.slice(prompt.needle.end);
      expect(occurrences(before, PASSKEY_FILLER)).toBe(depth === 0 ? 1 : prompt.units - 1);
      expect(occurrences(after, PASSKEY_FILLER)).toBe(depth === 0 ? prompt.units - 1 : 1);
    }
  });

  it("are a pure function of the seed", () => {
    const request = { maxTokens: 500, depth: 0.5, seed: "same" };
    expect(passkeyPrompt(request, countTokens)).toEqual(passkeyPrompt(request, countTokens));
    expect(passkeyPrompt({ ...request, seed: "other" }, countTokens).answer).not.toBe(
      passkeyPrompt(request, countTokens).answer,
    );
  });

  it("refuse a budget too small for the question", () => {
    expect(() => passkeyPrompt({ maxTokens: 10, depth: 0, seed: "s" }, countTokens)).toThrow(/too small/);
    expect(() => linesPrompt({ maxTokens: 60, depth: 0, seed: "s" }, countTokens)).toThrow(/too small/);
    expect(() => linesPrompt({ maxTokens: 600, depth: 1.5, seed: "s" }, countTokens)).toThrow(/depth/);
  });
});
