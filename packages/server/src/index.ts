export * from "./errors.js";
export * from "./kv-budget.js";
export * from "./metrics.js";
export * from "./openai-requests.js";
export * from "./scheduler.js";
export * from "./serve.js";
export * from "./server.js";
export * from "./server-metrics.js";
