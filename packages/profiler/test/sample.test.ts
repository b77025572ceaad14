import { generateText, type Model } from "@moa/runtime";
import { describe, expect, it } from "vitest";
import { answerMask, buildSample, defaultCalibration, PromptFrame } from "../src/index.js";
import { nanoModel } from "./helpers.js";

const model = await nanoModel();
const frame = PromptFrame.of(model);
const source = defaultCalibration();

describe("calibration samples with dense-model answers", () => {
  it("are exactly the length asked, prompt then the model's own greedy continuation", async () => {
    for (const [length, index] of [
      [256, 0],
      [512, 1],
      [512, 2],
    ] as const) {
      const sample = await buildSample(model, frame, source, {
        length,
        index,
        answerTokens: 16,
        seedName: `test/${length}/${index}`,
      });
      expect(sample.ids.length).toBe(length);
      expect(sample.answerStart).toBe(length - 16);
      const prompt = sample.ids.slice(0, sample.answerStart);
      const again = await generateText(model, prompt, { maxNewTokens: 16, temperature: 0 });
      expect(sample.ids.slice(sample.answerStart)).toEqual(again.tokens);
      expect(sample.answer).toBe(again.text);
      const mask = answerMask(sample);
      expect(mask.reduce((a, b) => a + b, 0)).toBe(16);
      expect(mask[sample.answerStart - 1]).toBe(0);
    }
  });

  it("answers retrieval at 512 tokens as the fixtures say moa-nano does (the expected number)", async () => {
    for (const index of [0, 1, 3, 5]) {
      const sample = await buildSample(model, frame, source, {
        length: 512,
        index,
        answerTokens: 8,
        seedName: `retrieval/${index}`,
      });
      expect(sample.expected).toMatch(/^\d{5}$/);
      expect(sample.answer).toContain(sample.expected);
    }
  });

  it("refits the prompt when the model ends its answer early, so prompt + answer still fill the length", async () => {
    // A model whose end-of-sequence token is ">": a lines answer "NNNNN>" ends after 6 tokens.
    const close = model.tokenizer.encode(">", { addSpecialTokens: false })[0]!;
    const stopsEarly = Object.create(model, {
      config: { value: { ...model.config, eosTokenIds: [close] } },
    }) as Model;
    const sample = await buildSample(stopsEarly, frame, source, {
      length: 512,
      index: 0,
      answerTokens: 16,
      seedName: "early/0",
    });
    expect(sample.ids.length).toBe(512);
    expect(sample.ids[511]).toBe(close);
    expect(sample.answerStart).toBe(512 - 6);
    expect(sample.answer).toBe(`${sample.expected}>`);
  });
});
