import { MoaError } from "@moa/core";
import { describe, expect, it } from "vitest";
import { PromptFrame, parseCalibrationJsonl, SampleRandom, userCalibration } from "../src/index.js";
import { nanoTokenizer } from "./helpers.js";

const tokenizer = await nanoTokenizer();
const frame = PromptFrame.of({ tokenizer, chatTemplate: undefined });

function errorOf(action: () => unknown): MoaError {
  try {
    action();
  } catch (error) {
    return error as MoaError;
  }
  throw new Error("expected an error");
}

describe("calibration JSONL", () => {
  it("reads records with their line numbers, skipping blank lines and ignoring other keys", () => {
    const text = '{"context": "one"}\n\n{"context": "two", "question": "q?", "id": 7}\n';
    expect(parseCalibrationJsonl(text, "data.jsonl")).toEqual([
      { context: "one", line: 1 },
      { context: "two", question: "q?", line: 3 },
    ]);
  });

  it.each([
    ['{"context": "ok"}\n{"context": "broken"\n', "data.jsonl:2: not valid JSON"],
    ['{"context": "ok"}\n{"question": "no context"}\n', 'data.jsonl:2: "context" must be a non-empty string'],
    ['{"context": "ok"}\n\n["a"]\n', "data.jsonl:3: expected an object"],
    ['{"context": "ok", "question": 3}\n', 'data.jsonl:1: "question" must be a string'],
    ["\n\n", "data.jsonl: no records"],
  ])("names the file and line of a bad record: %j", (text, message) => {
    const error = errorOf(() => parseCalibrationJsonl(text, "data.jsonl"));
    expect(error).toBeInstanceOf(MoaError);
    expect(error.code).toBe("E_CALIBRATION_DATA");
    expect(error.message).toContain(message);
  });
});

describe("user calibration prompts", () => {
  const sentence = (i: number) => `Record ${i} says the lighthouse keeper counted ${100 + i} gannets.`;
  const records = Array.from({ length: 5 }, (_, i) => ({
    context: Array.from({ length: 4 }, () => sentence(i)).join(" "),
    question: `How many gannets did record ${i} count?`,
    line: i + 1,
  }));
  const text = JSON.stringify(records);
  const source = userCalibration(records, "data.jsonl", text);

  it("fits a short context among other records' contexts, once, at a random depth, with its question last", () => {
    const depths: number[] = [];
    for (let s = 0; s < 6; s++) {
      const content = source.content(2, 600, frame, new SampleRandom(`user/${s}`));
      expect(content.ids.length).toBe(600);
      const decoded = frame.decode(content.ids);
      expect(decoded.split(records[2]!.context).length - 1).toBe(1);
      expect(decoded.endsWith(`\n\n${records[2]!.question}`)).toBe(true);
      depths.push(decoded.indexOf(records[2]!.context) / decoded.length);
    }
    expect(new Set(depths.map((d) => d.toFixed(2))).size).toBeGreaterThan(1);
  });

  it("cuts a long context in the middle, keeping its start and its end", () => {
    const long = [
      { context: `START ${Array.from({ length: 200 }, (_, i) => sentence(i)).join(" ")} END`, line: 1 },
    ];
    const content = userCalibration(long, "long.jsonl", "x").content(0, 300, frame, new SampleRandom("u"));
    expect(content.ids.length).toBe(300);
    const decoded = frame.decode(content.ids);
    expect(decoded.startsWith("START Record 0 says")).toBe(true);
    expect(decoded.endsWith("gannets. END")).toBe(true);
  });

  it("changes its key when the data changes, and describes the file", () => {
    expect(source.key).not.toBe(userCalibration(records, "data.jsonl", `${text} `).key);
    expect(source.description).toMatch(/^user data data\.jsonl \(5 records, sha256 [0-9a-f]{12}\)$/);
  });
});
