import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { isCorrect, parseAnswer } from "../src/index.js";

describe("answer parsing", () => {
  it("takes the first run of digits", () => {
    expect(parseAnswer("12345>")).toBe("12345");
    expect(parseAnswer(" 12345. Remember it.")).toBe("12345");
    expect(parseAnswer("the key is 4 or 12345")).toBe("4");
    expect(parseAnswer("12 345")).toBe("12");
    expect(parseAnswer("no number")).toBeUndefined();
    expect(parseAnswer("")).toBeUndefined();
  });

  it("matches only the exact number", () => {
    expect(isCorrect("12345>", "12345")).toBe(true);
    expect(isCorrect("1234>", "12345")).toBe(false);
    expect(isCorrect("123456>", "12345")).toBe(false);
    expect(isCorrect("012345", "12345")).toBe(false);
    expect(isCorrect(">", "12345")).toBe(false);
  });

  it("accepts any 5-digit answer followed by text that starts with a non-digit", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 10000, max: 99999 }),
        fc.string(),
        fc.constantFrom(">", ".", " ", "\n", "a"),
        (n, tail, sep) => {
          expect(isCorrect(`${n}${sep}${tail}`, String(n))).toBe(true);
          expect(isCorrect(`${sep === " " ? "" : " "}${n}${sep}${tail}`, String(n))).toBe(true);
        },
      ),
    );
  });
});
