/**
 * The checkpoint's tokenizer: `tokenizer.json` run by @huggingface/tokenizers (a pure-JS implementation of the
 * Rust `tokenizers` pipeline), with the special tokens of `tokenizer_config.json`.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { MoaError } from "@moa/core";

export const E_TOKENIZER = "E_TOKENIZER";

export interface EncodeOptions {
  /** Apply the post-processor's special tokens (e.g. BOS); default true, as Hugging Face `encode` does. */
  readonly addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** Drop special tokens (BOS, EOS, pad, …) from the text; default true. */
  readonly skipSpecialTokens?: boolean;
}

/** `tokenizer_config.json` stores special tokens as strings or as serialized AddedTokens (`{content: …}`). */
export function specialTokenText(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (
    typeof value === "object" &&
    value !== null &&
    typeof (value as { content?: unknown }).content === "string"
  ) {
    return (value as { content: string }).content;
  }
  return undefined;
}

export class TextTokenizer {
  readonly bosToken: string | undefined;
  readonly eosToken: string | undefined;
  readonly padToken: string | undefined;
  readonly unkToken: string | undefined;
  private readonly tokenizer: Tokenizer;

  /**
   * @param tokenizerJson parsed `tokenizer.json`
   * @param tokenizerConfig parsed `tokenizer_config.json` (`{}` when the checkpoint has none)
   * @param source file name for error messages
   */
  constructor(
    tokenizerJson: unknown,
    readonly tokenizerConfig: Readonly<Record<string, unknown>>,
    readonly source: string,
  ) {
    if (typeof tokenizerJson !== "object" || tokenizerJson === null || !("model" in tokenizerJson)) {
      throw new MoaError(E_TOKENIZER, `${source}: model: missing; not a tokenizers JSON file`, {
        source,
        field: "model",
      });
    }
    try {
      this.tokenizer = new Tokenizer(tokenizerJson, tokenizerConfig);
    } catch (error) {
      throw new MoaError(E_TOKENIZER, `${source}: model: ${(error as Error).message}`, {
        source,
        field: "model",
      });
    }
    this.bosToken = specialTokenText(tokenizerConfig.bos_token);
    this.eosToken = specialTokenText(tokenizerConfig.eos_token);
    this.padToken = specialTokenText(tokenizerConfig.pad_token);
    this.unkToken = specialTokenText(tokenizerConfig.unk_token);
  }

  /** Loads `tokenizer.json` and `tokenizer_config.json` (optional) from a checkpoint directory. */
  static async fromDir(dir: string): Promise<TextTokenizer> {
    const path = join(dir, "tokenizer.json");
    const json = await readJsonFile(path);
    const configPath = join(dir, "tokenizer_config.json");
    const config = (await readJsonFile(configPath, true)) ?? {};
    if (typeof config !== "object" || Array.isArray(config)) {
      throw new MoaError(E_TOKENIZER, `${configPath}: (root): must be a JSON object`, {
        source: configPath,
        field: "(root)",
      });
    }
    return new TextTokenizer(json, config as Record<string, unknown>, path);
  }

  /** Token ids of `text`. */
  encode(text: string, options: EncodeOptions = {}): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: options.addSpecialTokens ?? true }).ids;
  }

  /** Text of `ids` (empty for no ids). */
  decode(ids: readonly number[] | Int32Array, options: DecodeOptions = {}): string {
    if (ids.length === 0) return "";
    return this.tokenizer.decode(Array.from(ids), {
      skip_special_tokens: options.skipSpecialTokens ?? true,
      clean_up_tokenization_spaces: false,
    });
  }

  tokenToId(token: string): number | undefined {
    return this.tokenizer.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    return this.tokenizer.id_to_token(id);
  }
}

async function readJsonFile(path: string, optional = false): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    if (optional && (error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new MoaError(E_TOKENIZER, `${path}: ${(error as Error).message}`, {
      source: path,
      field: "(file)",
    });
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new MoaError(E_TOKENIZER, `${path}: (root): not valid JSON (${(error as Error).message})`, {
      source: path,
      field: "(root)",
    });
  }
}
