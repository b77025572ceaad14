export * from "./baselines.js";
export * from "./constants.js";
export * from "./density.js";
export {
  describeValue,
  fail as throwFieldError,
  MoaError,
  type MoaErrorCode,
  type MoaErrorOptions,
} from "./errors.js";
export * from "./grid.js";
export * from "./mask.js";
export * from "./plan.js";
export * from "./profile.js";
export * from "./rule.js";
export * from "./ruleLoss.js";
export * from "./safetensors.js";
