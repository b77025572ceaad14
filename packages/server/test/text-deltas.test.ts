import { TextStream, TextTokenizer } from "@moa/runtime";
import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import { MOA_NANO } from "./helpers.js";

let tokenizer: TextTokenizer;

beforeAll(async () => {
  tokenizer = await TextTokenizer.fromDir(MOA_NANO);
});

/**
 * Brute force: decode the whole prefix after every token; the text ends before the first stop string to appear.
 * Returns the text and how many tokens were consumed.
 */
function bruteForce(ids: number[], stops: string[]): { text: string; consumed: number } {
  for (let k = 1; k <= ids.length; k++) {
    const text = tokenizer.decode(ids.slice(0, k));
    let cut = -1;
    for (const stop of stops) {
      const at = text.indexOf(stop);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) return { text: text.slice(0, cut), consumed: k };
  }
  return { text: tokenizer.decode(ids), consumed: ids.length };
}

function streamed(ids: number[], stops: string[]): { deltas: string[]; consumed: number; stopped: boolean } {
  const stream = new TextStream(tokenizer, stops);
  const deltas: string[] = [];
  let consumed = 0;
  for (const [i, id] of ids.entries()) {
    deltas.push(stream.push(id, i === ids.length - 1));
    consumed++;
    if (stream.stopped) break;
  }
  return { deltas, consumed, stopped: stream.stopped };
}

// The server streams text through @moa/runtime's TextStream; these are the properties its SSE deltas rely on.
describe("text deltas (runtime TextStream, as the scheduler drives it)", () => {
  it("the deltas add up to the brute-force text, stopping at the same token, for any ids and stop strings", () => {
    const sample = tokenizer.encode(
      "def fibonacci(n):\n    if n < 2:\n        return n  # base case — ünïcödé ✓ 日本語\n    return fibonacci(n - 1)",
      { addSpecialTokens: false },
    );
    const ids = fc.oneof(
      fc.array(fc.integer({ min: 0, max: 4095 }), { minLength: 1, maxLength: 40 }),
      fc.integer({ min: 1, max: sample.length }).map((n) => sample.slice(0, n)),
    );
    // Stop strings drawn from the text itself make matches (and partial matches at a delta's end) common.
    const stops = fc.array(
      fc.oneof(
        fc.string({ minLength: 1, maxLength: 4 }),
        fc.constantFrom("\n", "  ", "return", "n)", "✓", "日本", "fib", "ü"),
      ),
      { maxLength: 4 },
    );
    fc.assert(
      fc.property(ids, stops, (tokens, stopStrings) => {
        const expected = bruteForce(tokens, stopStrings);
        const got = streamed(tokens, stopStrings);
        expect(got.deltas.join("")).toBe(expected.text);
        expect(got.consumed).toBe(expected.consumed);
      }),
      { numRuns: 400 },
    );
  });

  it('stops at a stop string that precedes a character still incomplete (ids 3907, 0; stop " ")', () => {
    // decode([3907]) is ' "' and the first byte of a character: the stop string is already there.
    expect(bruteForce([3907, 0], [" "])).toEqual({ text: "", consumed: 1 });
    expect(streamed([3907, 0], [" "])).toEqual({ deltas: [""], consumed: 1, stopped: true });
  });

  it("never releases the beginning of a stop string before it is decided", () => {
    const ids = tokenizer.encode("alpha beta gamma", { addSpecialTokens: false });
    const stream = new TextStream(tokenizer, ["beta gamma delta"]);
    let released = "";
    for (const id of ids) {
      released += stream.push(id, false);
      // "beta gamma" could still become the stop string: only "alpha " may be out.
      expect("alpha ".startsWith(released)).toBe(true);
    }
    expect(released).toBe("alpha ");
    expect(stream.stopped).toBe(false);
    const dot = tokenizer.encode(".", { addSpecialTokens: false })[0]!;
    expect(released + stream.push(dot, true)).toBe("alpha beta gamma.");
  });

  it("holds back an incomplete UTF-8 character until its last byte arrives", () => {
    const ids = tokenizer.encode("✓✓", { addSpecialTokens: false });
    const stream = new TextStream(tokenizer, []);
    const deltas = ids.map((id, i) => stream.push(id, i === ids.length - 1));
    for (const d of deltas) expect(d).not.toContain("\uFFFD");
    expect(deltas.join("")).toBe("✓✓");
  });
});
