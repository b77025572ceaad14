/**
 * Chat templates: the Jinja template a checkpoint ships in `tokenizer_config.json` (`chat_template`, a string
 * or a list of named templates) or in `chat_template.jinja`, rendered with @huggingface/jinja and the variables
 * transformers' `apply_chat_template` provides (messages, add_generation_prompt, special tokens, tools).
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Template } from "@huggingface/jinja";
import { MoaError } from "@moa/core";
import { specialTokenText } from "./tokenizer.js";

export const E_CHAT_TEMPLATE = "E_CHAT_TEMPLATE";

export interface ChatMessage {
  readonly role: string;
  readonly content: string;
  readonly [key: string]: unknown;
}

export interface RenderOptions {
  /** Append the assistant turn opener, as for generation (default true). */
  readonly addGenerationPrompt?: boolean;
  /** Tool definitions, passed to the template as `tools`. */
  readonly tools?: readonly unknown[];
  /** Further template variables (e.g. `enable_thinking`). */
  readonly variables?: Readonly<Record<string, unknown>>;
}

export class ChatTemplate {
  private readonly template: Template;

  constructor(
    readonly source: string,
    readonly text: string,
    private readonly specialTokens: Readonly<Record<string, string>> = {},
  ) {
    try {
      this.template = new Template(text);
    } catch (error) {
      throw new MoaError(E_CHAT_TEMPLATE, `${source}: chat_template: ${(error as Error).message}`, {
        source,
        field: "chat_template",
      });
    }
  }

  /** The prompt text for a conversation. Special tokens come out as text: encode it without adding them. */
  render(messages: readonly ChatMessage[], options: RenderOptions = {}): string {
    for (const [i, message] of messages.entries()) {
      if (typeof message?.role !== "string" || typeof message.content !== "string") {
        throw new MoaError(E_CHAT_TEMPLATE, `messages[${i}]: needs string role and content`, {
          source: "messages",
          field: `messages[${i}]`,
        });
      }
    }
    try {
      return this.template.render({
        ...this.specialTokens,
        ...options.variables,
        messages: messages.map((m) => ({ ...m })),
        add_generation_prompt: options.addGenerationPrompt ?? true,
        ...(options.tools !== undefined ? { tools: [...options.tools] } : {}),
      });
    } catch (error) {
      throw new MoaError(E_CHAT_TEMPLATE, `${this.source}: chat_template: ${(error as Error).message}`, {
        source: this.source,
        field: "chat_template",
      });
    }
  }
}

const SPECIAL_TOKEN_FIELDS = ["bos_token", "eos_token", "pad_token", "unk_token", "sep_token", "cls_token"];

/**
 * The chat template of a parsed `tokenizer_config.json`, or undefined when it has none.
 * A list of named templates picks `name` (default "default").
 */
export function chatTemplateFromConfig(
  tokenizerConfig: Readonly<Record<string, unknown>>,
  source: string,
  name = "default",
): ChatTemplate | undefined {
  const specialTokens: Record<string, string> = {};
  for (const field of SPECIAL_TOKEN_FIELDS) {
    const text = specialTokenText(tokenizerConfig[field]);
    if (text !== undefined) specialTokens[field] = text;
  }
  const raw = tokenizerConfig.chat_template;
  if (raw === undefined || raw === null) return undefined;
  if (typeof raw === "string") return new ChatTemplate(source, raw, specialTokens);
  if (Array.isArray(raw)) {
    const entry = raw.find(
      (t: unknown) => typeof t === "object" && t !== null && (t as { name?: unknown }).name === name,
    ) as { template?: unknown } | undefined;
    if (entry === undefined || typeof entry.template !== "string") {
      throw new MoaError(
        E_CHAT_TEMPLATE,
        `${source}: chat_template: no template named ${JSON.stringify(name)}`,
        {
          source,
          field: "chat_template",
        },
      );
    }
    return new ChatTemplate(source, entry.template, specialTokens);
  }
  throw new MoaError(
    E_CHAT_TEMPLATE,
    `${source}: chat_template: must be a string or a list of {name, template}`,
    {
      source,
      field: "chat_template",
    },
  );
}

/**
 * The chat template of a checkpoint directory: `chat_template.jinja` when present (transformers ≥ 4.43 saves
 * it there), else `tokenizer_config.json`'s `chat_template`; undefined when there is neither.
 */
export async function readChatTemplate(
  dir: string,
  tokenizerConfig: Readonly<Record<string, unknown>>,
): Promise<ChatTemplate | undefined> {
  const jinjaPath = join(dir, "chat_template.jinja");
  try {
    const text = await readFile(jinjaPath, "utf8");
    return chatTemplateFromConfig({ ...tokenizerConfig, chat_template: text }, jinjaPath);
  } catch (error) {
    if (error instanceof MoaError) throw error;
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") {
      throw new MoaError(E_CHAT_TEMPLATE, `${jinjaPath}: ${(error as Error).message}`, {
        source: jinjaPath,
        field: "(file)",
      });
    }
  }
  return chatTemplateFromConfig(tokenizerConfig, join(dir, "tokenizer_config.json"));
}
