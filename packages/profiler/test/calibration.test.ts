import { ChatTemplate } from "@moa/runtime";
import { describe, expect, it } from "vitest";
import {
  corpusDocuments,
  DEFAULT_MIX,
  defaultCalibration,
  linesContent,
  PromptFrame,
  passkeyContent,
  SampleRandom,
  validationCalibration,
  validationDepth,
  validationKind,
} from "../src/index.js";
import { nanoTokenizer } from "./helpers.js";

const tokenizer = await nanoTokenizer();
const frame = PromptFrame.of({ tokenizer, chatTemplate: undefined });

function sameIds(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

describe("the built-in calibration set", () => {
  it("frames a base model's prompt with BOS only", () => {
    expect(frame.prefix).toEqual([0]);
    expect(frame.suffix).toEqual([]);
    expect(frame.chat).toBe(false);
  });

  it("fills exactly the requested tokens with the tokenizer's own encoding of the text, for every kind", () => {
    const source = defaultCalibration();
    for (const tokens of [239, 495, 1007, 2031]) {
      DEFAULT_MIX.forEach((kind, index) => {
        const content = source.content(index, tokens, frame, new SampleRandom(`t/${tokens}/${index}`));
        expect(content.kind).toBe(kind);
        expect(content.ids.length).toBe(tokens);
        // Re-encoding the decoded text gives the same ids: no token-level seams a model never saw.
        expect(sameIds(frame.encode(frame.decode(content.ids)), content.ids)).toBe(true);
      });
    }
  });

  it("is a pure function of the stream name: same name, same ids; another name, other ids", () => {
    const source = defaultCalibration();
    for (let index = 0; index < DEFAULT_MIX.length; index++) {
      const a = source.content(index, 700, frame, new SampleRandom("seed/profile/768/0"));
      const b = source.content(index, 700, frame, new SampleRandom("seed/profile/768/0"));
      const c = source.content(index, 700, frame, new SampleRandom("seed/profile/768/1"));
      expect(sameIds(a.ids, b.ids)).toBe(true);
      expect(sameIds(a.ids, c.ids)).toBe(false);
    }
  });

  it("lines: distinct keys and values, the question asks one record, and its value is the expected answer", () => {
    for (let s = 0; s < 8; s++) {
      const content = linesContent(900, frame, new SampleRandom(`lines/${s}`));
      const text = frame.decode(content.ids);
      const records = [...text.matchAll(/^line ([a-z]+-[a-z]+): REGISTER_CONTENT is <(\d{5})>$/gm)];
      expect(records.length).toBeGreaterThan(20);
      const keys = records.map((m) => m[1]!);
      expect(new Set(keys).size).toBe(keys.length);
      expect(new Set(records.map((m) => m[2])).size).toBe(records.length);
      const asked = /in line ([a-z]+-[a-z]+)\? I need the number\.\nAnswer: <$/.exec(text);
      expect(asked).not.toBeNull();
      const record = records.find((m) => m[1] === asked![1]);
      expect(record?.[2]).toBe(content.expected);
      expect(text.startsWith("Below is a record of lines")).toBe(true);
    }
  });

  it("passkey: the key is stated twice inside the filler and the prompt ends with the question", () => {
    const content = passkeyContent(800, frame, new SampleRandom("passkey/0"));
    const text = frame.decode(content.ids);
    const key = content.expected!;
    expect(key).toMatch(/^\d{5}$/);
    expect(text).toContain(`The pass key is ${key}. Remember it. ${key} is the pass key.`);
    expect(text.endsWith("\nWhat is the pass key? The pass key is ")).toBe(true);
    const depth = text.indexOf(key) / text.length;
    expect(depth).toBeGreaterThan(0.02);
    expect(depth).toBeLessThan(0.98);
  });

  it("validation: lines, passkey, passkey, lines, needles mid-context first (depths 1/2, 1/4, 3/4, 1/8, …)", () => {
    expect(Array.from({ length: 8 }, (_, i) => validationDepth(i))).toEqual([
      0.5, 0.25, 0.75, 0.125, 0.625, 0.375, 0.875, 0.0625,
    ]);
    expect(Array.from({ length: 8 }, (_, i) => validationKind(i))).toEqual([
      "lines",
      "passkey",
      "passkey",
      "lines",
      "lines",
      "passkey",
      "passkey",
      "lines",
    ]);
    const source = validationCalibration();
    for (let index = 0; index < 6; index++) {
      const content = source.content(index, 1500, frame, new SampleRandom(`validation/${index}`));
      expect(content.ids).toHaveLength(1500);
      expect(content.kind).toBe(validationKind(index));
      const text = frame.decode(content.ids);
      const depth = validationDepth(index);
      if (content.kind === "lines") {
        const records = [...text.matchAll(/^line ([a-z]+-[a-z]+): REGISTER_CONTENT is <(\d{5})>$/gm)];
        const asked = /in line ([a-z]+-[a-z]+)\? I need the number/.exec(text)![1];
        const at = records.findIndex((m) => m[1] === asked);
        expect(records[at]![2]).toBe(content.expected);
        // Fitting the length may add or drop a few records after the question is chosen.
        expect(Math.abs(at / (records.length - 1) - depth)).toBeLessThan(0.05);
      } else {
        const at = text.indexOf(`The pass key is ${content.expected}`) / text.length;
        expect(Math.abs(at - depth)).toBeLessThan(0.05);
      }
    }
  });

  it("ships prose and Python documents of its own", () => {
    expect(corpusDocuments("prose").length).toBeGreaterThanOrEqual(10);
    expect(corpusDocuments("code").length).toBeGreaterThanOrEqual(10);
    expect(corpusDocuments("code").every((doc) => doc.startsWith('"""'))).toBe(true);
  });

  it("says which length is too short rather than making a malformed sample", () => {
    expect(() => linesContent(120, frame, new SampleRandom("x"))).toThrow(/lines sample needs at least/);
    expect(() => passkeyContent(40, frame, new SampleRandom("x"))).toThrow(/passkey sample needs at least/);
  });
});

describe("a chat template frames the content as the user's message", () => {
  const chatTemplate = new ChatTemplate(
    "test-template",
    "{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}",
    { bos_token: "<s>" },
  );
  const chat = PromptFrame.of({ tokenizer, chatTemplate });

  it("puts the template's turn around the content and keeps the length exact", () => {
    expect(chat.chat).toBe(true);
    expect(chat.prefix[0]).toBe(0);
    const content = linesContent(500, chat, new SampleRandom("chat/0"));
    const prompt = chat.wrap(content.ids);
    expect(prompt.length).toBe(500 + chat.overhead);
    const text = tokenizer.decode(prompt, { skipSpecialTokens: false });
    expect(text.startsWith("<s>[user] Below is a record")).toBe(true);
    // Chat prompts end with the question; the model answers in its own words after the assistant opener.
    expect(text.endsWith("I need the number.\n[assistant]")).toBe(true);
  });

  it("is used only when asked: off gives the base frame, on without a template is an error", () => {
    expect(PromptFrame.of({ tokenizer, chatTemplate }, "off").chat).toBe(false);
    expect(() => PromptFrame.of({ tokenizer, chatTemplate: undefined }, "on")).toThrow(/no chat template/);
  });
});
