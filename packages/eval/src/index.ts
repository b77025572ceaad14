export * from "./evaluate.js";
export * from "./h2o.js";
export * from "./perplexity.js";
export * from "./plots.js";
export * from "./prompts.js";
export * from "./random.js";
export * from "./score.js";
export * from "./svg-plot.js";
export { KEY_WORDS } from "./words.js";
