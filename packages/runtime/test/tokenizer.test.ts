import { describe, expect, it } from "vitest";
import { TextStream } from "../src/generate.js";
import { TextTokenizer } from "../src/tokenizer.js";
import { fixtureDir, MODEL_NAMES, referenceVectors } from "./fixtures.js";

describe("tokenizer (tokenizer.json via @huggingface/tokenizers)", async () => {
  const tokenizer = await TextTokenizer.fromDir(fixtureDir("moa-nano"));
  const { tokenizer: cases, models } = referenceVectors();

  it.each(cases.map((c, i) => [i, c] as const))("case %i encodes to the reference ids", (_, c) => {
    expect(tokenizer.encode(c.text, { addSpecialTokens: false })).toEqual(c.ids);
  });

  it.each(cases.map((c, i) => [i, c] as const))("case %i decodes back to the reference text", (_, c) => {
    expect(tokenizer.decode(c.ids)).toBe(c.decoded);
  });

  it("adds BOS through the post-processor, as the reference inputs start with it", () => {
    expect(tokenizer.encode("Hello world")).toEqual([0, ...cases[0]!.ids]);
  });

  it.each(MODEL_NAMES)("the %s reference prompt round-trips through decode and encode", async (name) => {
    const own = await TextTokenizer.fromDir(fixtureDir(name));
    const ids = models[name].input_ids;
    expect(own.encode(own.decode(ids))).toEqual(ids);
  });

  it("reads special tokens from tokenizer_config.json", () => {
    expect(tokenizer.bosToken).toBe("<s>");
    expect(tokenizer.eosToken).toBe("</s>");
    expect(tokenizer.tokenToId("</s>")).toBe(1);
    expect(tokenizer.decode([0, 1, 2], { skipSpecialTokens: false })).toBe("<s></s><pad>");
  });

  it("rejects a tokenizer.json without a model, naming the file", () => {
    expect(() => new TextTokenizer({ version: "1.0" }, {}, "x/tokenizer.json")).toThrow(
      /x\/tokenizer\.json: model/,
    );
  });
});

describe("TextStream (incremental detokenization)", async () => {
  const tokenizer = await TextTokenizer.fromDir(fixtureDir("moa-nano"));
  const unicode = referenceVectors().tokenizer.find((c) => c.text.includes("🚀"))!;

  it("releases only whole characters when byte-level tokens split them, and adds up to the text", () => {
    const stream = new TextStream(tokenizer, []);
    const pieces = unicode.ids.map((id, i) => stream.push(id, i === unicode.ids.length - 1));
    expect(pieces.join("")).toBe(unicode.decoded);
    for (const piece of pieces) expect(piece).not.toContain("\uFFFD");
    // Some token really ends inside a character (so the hold-back was exercised).
    expect(pieces.some((p) => p === "")).toBe(true);
  });

  it("holds back a possible stop-string start and cuts before a completed one", () => {
    const ids = tokenizer.encode("line fresh-table: REGISTER_CONTENT is <48213>", {
      addSpecialTokens: false,
    });
    const stream = new TextStream(tokenizer, ["CONTENT is"]);
    let text = "";
    for (const id of ids) {
      text += stream.push(id, false);
      expect(text).not.toContain("CONTENT");
      if (stream.stopped) break;
    }
    expect(stream.stopped).toBe(true);
    expect(text).toBe("line fresh-table: REGISTER_");
    expect(stream.fullText).toBe(text);
  });
});
