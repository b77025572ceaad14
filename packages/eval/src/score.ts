/**
 * Scoring of retrieval answers: greedy exact match of the number. The answer is the first run of digits in the
 * generated text (LongEval's convention), compared as a string with the expected 5-digit number, so `012345`
 * or `1234` never match `12345`, and anything after the number (`>`, `.`) is ignored.
 */

/** The first run of ASCII digits in `text`, or undefined when there is none. */
export function parseAnswer(text: string): string | undefined {
  const match = /[0-9]+/.exec(text);
  return match === null ? undefined : match[0];
}

/** Whether the generated `text` answers `expected` exactly. */
export function isCorrect(text: string, expected: string): boolean {
  return parseAnswer(text) === expected;
}
