import { MoaError } from "@moa/core";
import type { ChatTemplate, TextTokenizer } from "@moa/runtime";

/** What building a prompt needs from a loaded model (a `Model` from @moa/runtime has both). */
export interface PromptModel {
  readonly tokenizer: TextTokenizer;
  readonly chatTemplate: ChatTemplate | undefined;
}

/** Whether calibration prompts go through the checkpoint's chat template: when it has one (auto), always, never. */
export type ChatMode = "auto" | "on" | "off";

/**
 * The tokens around a prompt's content: `[BOS]` for a base model, or the chat template's user turn and
 * assistant opener. Content is encoded on its own and framed, so a sample's length in tokens is exact: the frame
 * is fixed and the content can be fitted token by token.
 */
export class PromptFrame {
  private constructor(
    private readonly tokenizer: TextTokenizer,
    readonly prefix: readonly number[],
    readonly suffix: readonly number[],
    /** Whether the frame is the chat template's (the content is then a user message). */
    readonly chat: boolean,
  ) {}

  static of(model: PromptModel, mode: ChatMode = "auto"): PromptFrame {
    const { tokenizer, chatTemplate } = model;
    if (mode === "on" && chatTemplate === undefined) {
      throw new MoaError(
        "E_CHAT_TEMPLATE",
        `${tokenizer.source}: the checkpoint has no chat template, so calibration prompts cannot use one; profile without it`,
        { source: tokenizer.source, field: "chat_template" },
      );
    }
    if (chatTemplate !== undefined && mode !== "off") {
      // A marker no tokenizer merges with its neighbours, split out of the rendered template.
      const marker = "\u0000MOA-CONTENT\u0000";
      const rendered = chatTemplate.render([{ role: "user", content: marker }], {
        addGenerationPrompt: true,
      });
      const parts = rendered.split(marker);
      if (parts.length !== 2) {
        throw new MoaError(
          "E_CHAT_TEMPLATE",
          `${chatTemplate.source}: chat_template: the user message appears ${parts.length - 1} times in the rendered prompt; calibration needs it once`,
          { source: chatTemplate.source, field: "chat_template" },
        );
      }
      const encode = (text: string) =>
        text === "" ? [] : tokenizer.encode(text, { addSpecialTokens: false });
      return new PromptFrame(tokenizer, encode(parts[0]!), encode(parts[1]!), true);
    }
    // The post-processor's leading special tokens (BOS); trailing ones (an EOS some tokenizers add) would end
    // the prompt before the answer, so they are left out.
    const withSpecial = tokenizer.encode("a", { addSpecialTokens: true });
    const plain = tokenizer.encode("a", { addSpecialTokens: false });
    let at = 0;
    while (at + plain.length <= withSpecial.length && !startsWith(withSpecial, plain, at)) at++;
    return new PromptFrame(tokenizer, withSpecial.slice(0, Math.min(at, withSpecial.length)), [], false);
  }

  /** Tokens the frame adds around the content. */
  get overhead(): number {
    return this.prefix.length + this.suffix.length;
  }

  /** Token ids of a piece of content (no special tokens). */
  encode(text: string): number[] {
    return text === "" ? [] : this.tokenizer.encode(text, { addSpecialTokens: false });
  }

  /** The whole prompt: frame around the content ids. */
  wrap(content: readonly number[]): number[] {
    return [...this.prefix, ...content, ...this.suffix];
  }

  decode(ids: readonly number[]): string {
    return this.tokenizer.decode(ids);
  }
}

function startsWith(ids: readonly number[], prefix: readonly number[], at: number): boolean {
  for (let i = 0; i < prefix.length; i++) if (ids[at + i] !== prefix[i]) return false;
  return true;
}
