/**
 * Perplexity on held-out text: the text is cut into consecutive windows of `n` tokens (BOS + n − 1 text tokens),
 * every token after the first of a window is predicted from the ones before it in the window, and the
 * perplexity is `exp(mean negative log-likelihood)` over all predicted tokens. Every length scores the same
 * stretch of text (shorter lengths use more windows), so the numbers differ only by how much context — and how
 * much of it a method keeps — each prediction had.
 */
import { readFileSync } from "node:fs";

/** The text shipped with the package (data/heldout.txt): original Python source with comments, written for this. */
export function heldoutText(): string {
  return readFileSync(new URL("../data/heldout.txt", import.meta.url), "utf8");
}

/** −log softmax(logits)[target], computed stably. */
export function negativeLogLikelihood(logits: Float32Array, target: number): number {
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  return Math.log(sum) + max - logits[target]!;
}

export interface PerplexityWindows {
  /** Token ids of each window, BOS first, `length` tokens each. */
  readonly windows: number[][];
  /** Predicted tokens over all windows: `windows · (length − 1)`. */
  readonly predicted: number;
}

/**
 * Windows of `length` tokens over `textIds` (the text without BOS): `floor(span / (length − 1))` of them, where
 * `span` tokens of text are scored at every length. Throws when not even one window fits.
 */
export function perplexityWindows(
  textIds: readonly number[],
  bos: number | undefined,
  length: number,
  span: number,
): PerplexityWindows {
  const prefix = bos === undefined ? [] : [bos];
  const perWindow = length - prefix.length;
  const usable = Math.min(span, textIds.length);
  const count = Math.floor(usable / perWindow);
  if (count < 1) {
    throw new RangeError(
      `the perplexity text has ${textIds.length} tokens, fewer than one window of ${length} tokens needs (${perWindow}); give a longer text`,
    );
  }
  const windows = Array.from({ length: count }, (_, w) => [
    ...prefix,
    ...textIds.slice(w * perWindow, (w + 1) * perWindow),
  ]);
  return { windows, predicted: count * (length - 1) };
}
