import { describe, expect, it } from "vitest";
import { describeValue, MoaError, throwFieldError } from "../src/index.js";

describe("MoaError", () => {
  it("carries code, source and field, and is an Error", () => {
    const e = new MoaError("E_PLAN", "plan.json: version = 2: must be 1", {
      source: "plan.json",
      field: "version",
    });
    expect(e).toBeInstanceOf(Error);
    expect(e).toMatchObject({ name: "MoaError", code: "E_PLAN", source: "plan.json", field: "version" });
    expect("source" in new MoaError("E_ARGUMENT", "x")).toBe(false);
  });

  it("throwFieldError writes `source: field = value: reason`", () => {
    expect(() => throwFieldError("E_CONFIG", "config.json", "num_heads", "32", "must be a number")).toThrow(
      'config.json: num_heads = "32": must be a number',
    );
  });

  it("describeValue quotes strings, keeps -0 and NaN visible and cuts long values", () => {
    expect(describeValue("a")).toBe('"a"');
    expect(describeValue(-0)).toBe("-0");
    expect(describeValue(Number.NaN)).toBe("NaN");
    expect(describeValue(undefined)).toBe("undefined (missing)");
    expect(describeValue("x".repeat(200))).toHaveLength(80);
  });
});
