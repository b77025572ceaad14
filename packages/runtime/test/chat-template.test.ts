import { MoaError } from "@moa/core";
import { describe, expect, it } from "vitest";
import { ChatTemplate, chatTemplateFromConfig } from "../src/chat-template.js";

// The template Llama 3 ships (without tools), as it appears in tokenizer_config.json.
const LLAMA3 =
  "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

// ChatML (Qwen2), which raises on a bad role.
const CHATML =
  "{% for message in messages %}{% if message['role'] not in ['system', 'user', 'assistant'] %}{{ raise_exception('bad role ' + message['role']) }}{% endif %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

const messages = [
  { role: "system", content: "Be brief." },
  { role: "user", content: " Hi! " },
];

describe("chat templates (@huggingface/jinja)", () => {
  it("renders the Llama 3 template with bos_token from tokenizer_config.json", () => {
    const template = chatTemplateFromConfig(
      { chat_template: LLAMA3, bos_token: { content: "<|begin_of_text|>", lstrip: false } },
      "tokenizer_config.json",
    )!;
    expect(template.render(messages)).toBe(
      "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>" +
        "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>" +
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
    );
    expect(template.render(messages, { addGenerationPrompt: false })).not.toContain("assistant");
  });

  it("picks the named template from a list", () => {
    const template = chatTemplateFromConfig(
      {
        chat_template: [
          { name: "default", template: CHATML },
          { name: "tool_use", template: "tools" },
        ],
      },
      "tokenizer_config.json",
    )!;
    expect(template.render([{ role: "user", content: "x" }])).toBe(
      "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n",
    );
  });

  it("is undefined when the checkpoint has none (the fixtures)", () => {
    expect(chatTemplateFromConfig({ bos_token: "<s>" }, "tokenizer_config.json")).toBeUndefined();
  });

  it("turns raise_exception and syntax errors into MoaErrors naming chat_template", () => {
    const template = new ChatTemplate("tokenizer_config.json", CHATML);
    expect(() => template.render([{ role: "tool", content: "x" }])).toThrow(MoaError);
    expect(() => template.render([{ role: "tool", content: "x" }])).toThrow(/chat_template: .*bad role tool/);
    expect(() => new ChatTemplate("tokenizer_config.json", "{% for %}")).toThrow(
      /tokenizer_config\.json: chat_template/,
    );
    expect(() => chatTemplateFromConfig({ chat_template: 3 }, "t.json")).toThrow(/t\.json: chat_template/);
  });
});
