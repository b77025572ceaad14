/**
 * A calibration sample: a prompt and the answer the dense model generates for it (greedy), exactly `length`
 * tokens together. DESIGN.md: Profile — the loss is the mean cross-entropy over the answer tokens, so the answer
 * mask of a sample is the positions `[answerStart, length)`.
 */
import { MoaError } from "@moa/core";
import { generateText, type Model } from "@moa/runtime";
import type { CalibrationSource, SampleKind } from "./calibration.js";
import type { PromptFrame } from "./prompt-frame.js";
import { SampleRandom } from "./random.js";

export interface CalibrationSample {
  kind: SampleKind;
  /** Total tokens: prompt + answer. */
  length: number;
  /** Global index of the sample within its length (the built-in set picks its kind by it). */
  index: number;
  /** Prompt followed by the dense model's answer. */
  ids: number[];
  /** First answer position; the answer mask is `[answerStart, length)`. */
  answerStart: number;
  /** The answer as text. */
  answer: string;
  /** Retrieval samples: the number a correct answer contains. */
  expected?: string;
}

export interface SampleRequest {
  length: number;
  index: number;
  /** Answer tokens to generate (fewer when the model ends its answer earlier). */
  answerTokens: number;
  /** Name of the sample's random stream, e.g. `"0/profile/1024/3"`. */
  seedName: string;
}

/** `[answerStart, length)` as a 0/1 mask over positions. */
export function answerMask(sample: CalibrationSample): Uint8Array {
  const mask = new Uint8Array(sample.length);
  mask.fill(1, sample.answerStart);
  return mask;
}

/**
 * Builds sample `index` at `length` tokens: content from `source` fitted to `length − answerTokens` prompt
 * tokens, then up to `answerTokens` tokens generated greedily by the dense `model`. When the model stops early
 * (its end-of-sequence token, kept as the answer's last token) after `k` tokens, the prompt is rebuilt for a
 * `k`-token answer from the same random stream and the answer generated again, until the two fill the length
 * exactly (k only shrinks, so this ends). Deterministic: the same model and request give the same sample.
 */
export async function buildSample(
  model: Model,
  frame: PromptFrame,
  source: CalibrationSource,
  request: SampleRequest,
): Promise<CalibrationSample> {
  const { length, index } = request;
  let answerTokens = request.answerTokens;
  for (;;) {
    const contentTokens = length - answerTokens - frame.overhead;
    if (contentTokens < 1) {
      throw new MoaError(
        "E_CALIBRATION",
        `calibration: length ${length} leaves no room for a prompt (${answerTokens} answer tokens, ${frame.overhead} template tokens)`,
        { source: "calibration", field: "length" },
      );
    }
    const content = source.content(index, contentTokens, frame, new SampleRandom(request.seedName));
    if (content.ids.length !== contentTokens) {
      throw new MoaError(
        "E_CALIBRATION",
        `calibration: the ${content.kind} generator made ${content.ids.length} tokens for ${contentTokens}`,
        { source: "calibration", field: content.kind },
      );
    }
    const prompt = frame.wrap(content.ids);
    const result = await generateText(model, prompt, { maxNewTokens: answerTokens, temperature: 0, seed: 0 });
    const got = result.tokens.length;
    if (got === answerTokens || got === 0) {
      if (got === 0) {
        throw new MoaError(
          "E_CALIBRATION",
          `calibration: the model generated nothing after a ${prompt.length}-token prompt (is its context ≥ ${length}?)`,
          { source: "calibration", field: "length" },
        );
      }
      return {
        kind: content.kind,
        length,
        index,
        ids: [...prompt, ...result.tokens],
        answerStart: prompt.length,
        answer: result.text,
        ...(content.expected === undefined ? {} : { expected: content.expected }),
      };
    }
    answerTokens = got;
  }
}
