import { describe, expect, it } from "vitest";
import { ApiError, parseChatRequest, parseCompletionRequest } from "../src/index.js";

function rejection(parse: () => unknown): ApiError {
  try {
    parse();
  } catch (error) {
    if (error instanceof ApiError) return error;
    throw error;
  }
  throw new Error("expected the request to be rejected");
}

describe("request validation", () => {
  it("fills OpenAI's defaults: temperature 1, top_p 1, n 1, no stop, no stream, no seed", () => {
    const request = parseCompletionRequest({ model: "m", prompt: "hi" });
    expect(request).toMatchObject({
      model: "m",
      temperature: 1,
      topP: 1,
      topK: 0,
      n: 1,
      stop: [],
      stream: false,
      includeUsage: false,
      echo: false,
      maxTokens: undefined,
      seed: undefined,
      prompts: [{ text: "hi" }],
    });
  });

  it("reads every prompt form: text, texts, token ids, lists of token ids", () => {
    expect(parseCompletionRequest({ model: "m", prompt: ["a", "b"] }).prompts).toEqual([
      { text: "a" },
      { text: "b" },
    ]);
    expect(parseCompletionRequest({ model: "m", prompt: [1, 2] }).prompts).toEqual([{ ids: [1, 2] }]);
    expect(parseCompletionRequest({ model: "m", prompt: [[1], [2, 3]] }).prompts).toEqual([
      { ids: [1] },
      { ids: [2, 3] },
    ]);
    expect(rejection(() => parseCompletionRequest({ model: "m", prompt: [1, "a"] })).param).toBe("prompt");
    expect(rejection(() => parseCompletionRequest({ model: "m", prompt: [] })).param).toBe("prompt");
  });

  it("names the parameter of every range and type error", () => {
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ temperature: -0.1 }, "temperature"],
      [{ temperature: 2.5 }, "temperature"],
      [{ temperature: "hot" }, "temperature"],
      [{ top_p: 0 }, "top_p"],
      [{ top_p: 1.5 }, "top_p"],
      [{ n: 0 }, "n"],
      [{ n: 17 }, "n"],
      [{ max_tokens: 0 }, "max_tokens"],
      [{ max_tokens: 1.5 }, "max_tokens"],
      [{ seed: 0.5 }, "seed"],
      [{ stop: ["a", "b", "c", "d", "e"] }, "stop"],
      [{ stop: [""] }, "stop"],
      [{ stop: 3 }, "stop"],
      [{ stream: "yes" }, "stream"],
      [{ stream_options: { include_usage: true } }, "stream_options"],
      [{ model: 3 }, "model"],
      [{ logprobs: 2 }, "logprobs"],
      [{ best_of: 3 }, "best_of"],
      [{ presence_penalty: 0.5 }, "presence_penalty"],
      [{ frequency_penalty: 1 }, "frequency_penalty"],
      [{ logit_bias: { "1": 5 } }, "logit_bias"],
      [{ suffix: "end" }, "suffix"],
    ];
    for (const [fields, param] of cases) {
      const error = rejection(() => parseCompletionRequest({ model: "m", prompt: "x", ...fields }));
      expect(error.status, JSON.stringify(fields)).toBe(400);
      expect(error.param, JSON.stringify(fields)).toBe(param);
      expect(error.type).toBe("invalid_request_error");
    }
  });

  it("accepts the 'off' values of parameters it does not implement", () => {
    const request = parseCompletionRequest({
      model: "m",
      prompt: "x",
      presence_penalty: 0,
      frequency_penalty: 0,
      logit_bias: {},
      best_of: 1,
      logprobs: null,
      suffix: null,
      user: "someone",
      some_future_field: true,
    });
    expect(request.prompts).toEqual([{ text: "x" }]);
  });

  it("chat: reads messages, text parts and max_completion_tokens; refuses tools, images and bad roles", () => {
    const request = parseChatRequest({
      model: "m",
      messages: [
        { role: "system", content: "Be brief." },
        {
          role: "user",
          content: [
            { type: "text", text: "a" },
            { type: "text", text: "b" },
          ],
          name: "ann",
        },
        { role: "assistant", content: null },
      ],
      max_completion_tokens: 7,
      max_tokens: 99,
      stream: true,
      stream_options: { include_usage: true },
    });
    expect(request.messages).toEqual([
      { role: "system", content: "Be brief." },
      { role: "user", content: "ab", name: "ann" },
      { role: "assistant", content: "" },
    ]);
    expect(request.maxTokens).toBe(7);
    expect(request.includeUsage).toBe(true);
    const user = [{ role: "user", content: "x" }];
    expect(rejection(() => parseChatRequest({ model: "m", messages: [] })).param).toBe("messages");
    expect(rejection(() => parseChatRequest({ model: "m" })).param).toBe("messages");
    expect(
      rejection(() => parseChatRequest({ model: "m", messages: [{ role: "robot", content: "x" }] })).param,
    ).toBe("messages[0].role");
    const image = {
      role: "user",
      content: [{ type: "image_url", image_url: { url: "https://example.com/a.png" } }],
    };
    expect(rejection(() => parseChatRequest({ model: "m", messages: [image] })).param).toBe(
      "messages[0].content[0]",
    );
    expect(
      rejection(() => parseChatRequest({ model: "m", messages: user, tools: [{ type: "function" }] })).param,
    ).toBe("tools");
    expect(rejection(() => parseChatRequest({ model: "m", messages: user, logprobs: true })).param).toBe(
      "logprobs",
    );
    expect(
      rejection(() =>
        parseChatRequest({ model: "m", messages: user, response_format: { type: "json_object" } }),
      ).param,
    ).toBe("response_format");
    expect(
      parseChatRequest({ model: "m", messages: user, tools: [], logprobs: false }).messages,
    ).toHaveLength(1);
  });

  it("refuses a body that is not a JSON object", () => {
    expect(rejection(() => parseCompletionRequest([1, 2])).code).toBe("invalid_json");
    expect(rejection(() => parseChatRequest("text")).code).toBe("invalid_json");
  });
});
