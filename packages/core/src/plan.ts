/**
 * DESIGN.md: Plan file — `moa-plan` JSON: one elastic rule per (layer, query head),
 * the model shape it was made for, the mask geometry and the KV density it reaches.
 */
import { DEFAULT_GEOMETRY, type MaskGeometry } from "./constants.js";
import { planKvDensity } from "./density.js";
import { describeValue, fail, MoaError } from "./errors.js";
import { setOwn } from "./own.js";
import type { ElasticRule } from "./rule.js";

/** The attention shape of a model. `architecture` is the HF config's `model_type` (e.g. "llama"). */
export interface ModelShape {
  architecture: string;
  layers: number;
  /** Query heads per layer. */
  heads: number;
  /** KV heads per layer (`heads` for MHA, fewer for GQA; divides `heads`). */
  kvHeads: number;
  headDim: number;
}

export interface MoaPlan {
  format: "moa-plan";
  version: 1;
  model: ModelShape;
  blockSize: number;
  sinkTokens: number;
  /** `rules[layer][queryHead]`. */
  rules: ElasticRule[][];
  /** Length (decimal string) → the plan's KV density there (DESIGN.md: Definitions). */
  density: Record<string, number>;
  /** How the plan was made (profile lengths, calibration, solver settings…). */
  provenance?: Record<string, unknown>;
}

/** The reference implementation's plan: `alphas[layer][head]`, `betas[layer][head]`. */
export interface ReferencePlan {
  alphas: number[][];
  betas: number[][];
}

export const PLAN_FORMAT = "moa-plan";
export const PLAN_VERSION = 1;

/** Density values written in a plan must agree with the rules to this tolerance. */
const DENSITY_TOLERANCE = 1e-6;

const PLAN_KEYS = ["format", "version", "model", "blockSize", "sinkTokens", "rules", "density", "provenance"];
const MODEL_KEYS = ["architecture", "layers", "heads", "kvHeads", "headDim"] as const;

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function positiveInt(
  obj: Record<string, unknown>,
  key: string,
  field: string,
  source: string,
  code: string,
): number {
  const value = obj[key];
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value <= 0) {
    fail(code, source, field, value, "must be a positive integer");
  }
  return value;
}

function checkRule(raw: unknown, field: string, source: string, code: string): ElasticRule {
  if (!isObject(raw)) fail(code, source, field, raw, 'must be an object { "alpha": number, "beta": number }');
  for (const key of Object.keys(raw)) {
    if (key !== "alpha" && key !== "beta") fail(code, source, `${field}.${key}`, raw[key], "unknown field");
  }
  return {
    alpha: checkAlpha(raw.alpha, `${field}.alpha`, source, code),
    beta: checkBeta(raw.beta, `${field}.beta`, source, code),
  };
}

function checkAlpha(alpha: unknown, field: string, source: string, code: string): number {
  if (typeof alpha !== "number" || !Number.isFinite(alpha))
    fail(code, source, field, alpha, "must be a finite number");
  return alpha === 0 ? 0 : alpha;
}

function checkBeta(beta: unknown, field: string, source: string, code: string): number {
  if (typeof beta !== "number" || !Number.isFinite(beta))
    fail(code, source, field, beta, "must be a finite number in [0, 1]");
  if (beta < 0) {
    fail(
      code,
      source,
      field,
      beta,
      "must be in [0, 1]: a negative beta shrinks the span as n grows, so decode would need tokens the KV cache already evicted",
    );
  }
  if (beta > 1)
    fail(code, source, field, beta, "must be in [0, 1]: the span cannot grow faster than the input");
  return beta === 0 ? 0 : beta;
}

/** Validates a plan object field by field; `code` is E_PLAN for files, E_ARGUMENT for calls. */
function checkPlan(json: unknown, source: string, code: string, checkDensity: boolean): MoaPlan {
  if (!isObject(json)) fail(code, source, "(root)", json, "a plan must be a JSON object");
  if (json.format !== PLAN_FORMAT) {
    const hint = isReferencePlan(json)
      ? ' (this is a reference MoA plan {"alphas", "betas"}: convert it with planFromReference or `moa plan convert`)'
      : "";
    fail(code, source, "format", json.format, `must be "${PLAN_FORMAT}"${hint}`);
  }
  if (json.version !== PLAN_VERSION) fail(code, source, "version", json.version, `must be ${PLAN_VERSION}`);
  for (const key of Object.keys(json)) {
    if (!PLAN_KEYS.includes(key))
      fail(code, source, key, json[key], `unknown field (expected ${PLAN_KEYS.join(", ")})`);
  }

  const rawModel = json.model;
  if (!isObject(rawModel))
    fail(code, source, "model", rawModel, `must be an object with ${MODEL_KEYS.join(", ")}`);
  for (const key of Object.keys(rawModel)) {
    if (!(MODEL_KEYS as readonly string[]).includes(key))
      fail(code, source, `model.${key}`, rawModel[key], "unknown field");
  }
  const architecture = rawModel.architecture;
  if (typeof architecture !== "string" || architecture === "") {
    fail(
      code,
      source,
      "model.architecture",
      architecture,
      'must be a non-empty string (the config\'s model_type, e.g. "llama")',
    );
  }
  const model: ModelShape = {
    architecture,
    layers: positiveInt(rawModel, "layers", "model.layers", source, code),
    heads: positiveInt(rawModel, "heads", "model.heads", source, code),
    kvHeads: positiveInt(rawModel, "kvHeads", "model.kvHeads", source, code),
    headDim: positiveInt(rawModel, "headDim", "model.headDim", source, code),
  };
  if (model.heads % model.kvHeads !== 0) {
    fail(code, source, "model.kvHeads", model.kvHeads, `must divide model.heads = ${model.heads}`);
  }

  const blockSize = positiveInt(json, "blockSize", "blockSize", source, code);
  const sinkTokens = positiveInt(json, "sinkTokens", "sinkTokens", source, code);
  if (sinkTokens % blockSize !== 0) {
    fail(code, source, "sinkTokens", sinkTokens, `must be a multiple of blockSize = ${blockSize}`);
  }

  const rawRules = json.rules;
  if (!Array.isArray(rawRules) || rawRules.length !== model.layers) {
    fail(
      code,
      source,
      "rules",
      rawRules,
      `must be an array of model.layers = ${model.layers} arrays (one per layer)`,
    );
  }
  const rules = rawRules.map((layer: unknown, l) => {
    if (!Array.isArray(layer) || layer.length !== model.heads) {
      fail(
        code,
        source,
        `rules[${l}]`,
        layer,
        `must be an array of model.heads = ${model.heads} rules (one per query head)`,
      );
    }
    return layer.map((rule: unknown, h) => checkRule(rule, `rules[${l}][${h}]`, source, code));
  });

  const rawDensity = json.density;
  if (!isObject(rawDensity))
    fail(code, source, "density", rawDensity, 'must be an object { "<length>": kvDensity }');
  const density: Record<string, number> = {};
  for (const [key, value] of Object.entries(rawDensity)) {
    if (!/^[1-9]\d*$/.test(key))
      fail(
        code,
        source,
        `density[${JSON.stringify(key)}]`,
        value,
        "the key must be a positive integer length",
      );
    if (typeof value !== "number" || !(value >= 0 && value <= 1)) {
      fail(code, source, `density["${key}"]`, value, "must be a number in [0, 1]");
    }
    density[key] = value;
  }

  const plan: MoaPlan = {
    format: PLAN_FORMAT,
    version: PLAN_VERSION,
    model,
    blockSize,
    sinkTokens,
    rules,
    density,
  };
  if (json.provenance !== undefined) {
    if (!isObject(json.provenance)) fail(code, source, "provenance", json.provenance, "must be an object");
    // A JSON round trip: the plan holds exactly what its file will hold (no undefined, no -0).
    try {
      plan.provenance = JSON.parse(JSON.stringify(json.provenance));
    } catch (error) {
      fail(code, source, "provenance", "(object)", `must be JSON-serialisable (${(error as Error).message})`);
    }
  }
  if (checkDensity) {
    for (const [key, value] of Object.entries(density)) {
      const actual = planKvDensity(plan, Number(key));
      if (Math.abs(actual - value) > DENSITY_TOLERANCE) {
        fail(
          code,
          source,
          `density["${key}"]`,
          value,
          `disagrees with the KV density of the rules at ${key} (${actual}); density is derived from the rules, regenerate it (makePlan) instead of editing it`,
        );
      }
    }
  }
  return plan;
}

/**
 * Validates a parsed plan file (DESIGN.md: Plan file) field by field and returns a
 * normalised copy. Errors read `plan.json: rules[3][7].beta = -0.5: must be in [0, 1]…`.
 */
export function parsePlan(json: unknown, source: string): MoaPlan {
  return checkPlan(json, source, "E_PLAN", true);
}

/** Parses plan text (JSON) and validates it: {@link parsePlan} with a precise syntax error. */
export function parsePlanText(text: string, source: string): MoaPlan {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    fail("E_PLAN", source, "(file)", text.slice(0, 40), `is not valid JSON (${(error as Error).message})`);
  }
  return parsePlan(json, source);
}

function sortKeysDeep(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeysDeep);
  if (!isObject(value)) return value;
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(value).sort()) setOwn(out, key, sortKeysDeep(value[key]));
  return out;
}

function indented(value: unknown): string {
  return JSON.stringify(value, null, 2).replaceAll("\n", "\n  ");
}

/**
 * Writes a plan as JSON text: fixed key order (as in DESIGN.md), 2-space indentation,
 * one rule per line, density by ascending length, provenance keys sorted, final newline.
 * The same plan always gives the same bytes.
 */
export function serializePlan(plan: MoaPlan): string {
  const model: ModelShape = {
    architecture: plan.model.architecture,
    layers: plan.model.layers,
    heads: plan.model.heads,
    kvHeads: plan.model.kvHeads,
    headDim: plan.model.headDim,
  };
  const rule = (r: ElasticRule) =>
    `{ "alpha": ${JSON.stringify(r.alpha)}, "beta": ${JSON.stringify(r.beta)} }`;
  const rules = plan.rules
    .map((layer) => `    [\n${layer.map((r) => `      ${rule(r)}`).join(",\n")}\n    ]`)
    .join(",\n");
  const density: Record<string, number> = {};
  for (const key of Object.keys(plan.density).sort((a, b) => Number(a) - Number(b)))
    density[key] = plan.density[key]!;
  const parts = [
    `  "format": ${JSON.stringify(PLAN_FORMAT)}`,
    `  "version": ${PLAN_VERSION}`,
    `  "model": ${indented(model)}`,
    `  "blockSize": ${plan.blockSize}`,
    `  "sinkTokens": ${plan.sinkTokens}`,
    `  "rules": [\n${rules}\n  ]`,
    `  "density": ${indented(density)}`,
  ];
  if (plan.provenance !== undefined) parts.push(`  "provenance": ${indented(sortKeysDeep(plan.provenance))}`);
  return `{\n${parts.join(",\n")}\n}\n`;
}

/**
 * Throws E_PLAN_SHAPE unless the plan was made for a model of this shape; the message
 * names every differing field with both values.
 */
export function assertPlanMatchesModel(plan: MoaPlan, shape: ModelShape, source: string): void {
  const differing = MODEL_KEYS.filter((key) => plan.model[key] !== shape[key]);
  if (differing.length === 0) return;
  const details = differing
    .map(
      (key) =>
        `model.${key} = ${describeValue(plan.model[key])} (the model has ${describeValue(shape[key])})`,
    )
    .join(", ");
  throw new MoaError("E_PLAN_SHAPE", `${source}: the plan is for another model: ${details}`, {
    source,
    field: differing.map((key) => `model.${key}`).join(","),
  });
}

/**
 * Builds a validated plan from rules `[layer][query head]`, filling `density` with the
 * plan's KV density (DESIGN.md: Definitions) at each of `lengths`.
 */
export function makePlan(
  shape: ModelShape,
  rules: ElasticRule[][],
  lengths: number[],
  provenance?: Record<string, unknown>,
  geometry: MaskGeometry = DEFAULT_GEOMETRY,
): MoaPlan {
  return buildPlan(shape, rules, lengths, provenance, geometry, "makePlan", "E_ARGUMENT");
}

function buildPlan(
  shape: ModelShape,
  rules: unknown,
  lengths: number[],
  provenance: Record<string, unknown> | undefined,
  geometry: MaskGeometry,
  source: string,
  code: string,
): MoaPlan {
  lengths.forEach((n, k) => {
    if (!Number.isSafeInteger(n) || n <= 0)
      fail("E_ARGUMENT", source, `lengths[${k}]`, n, "must be a positive integer");
  });
  const raw: Record<string, unknown> = {
    format: PLAN_FORMAT,
    version: PLAN_VERSION,
    model: shape,
    blockSize: geometry.blockSize,
    sinkTokens: geometry.sinkTokens,
    rules,
    density: {},
  };
  if (provenance !== undefined) raw.provenance = provenance;
  const plan = checkPlan(raw, source, code, false);
  for (const n of [...lengths].sort((a, b) => a - b)) plan.density[String(n)] = planKvDensity(plan, n);
  return plan;
}

/** Whether `json` looks like a reference MoA plan `{ "alphas": [[…]], "betas": [[…]] }`. */
export function isReferencePlan(json: unknown): json is ReferencePlan {
  return (
    isObject(json) &&
    json.format === undefined &&
    Array.isArray(json.alphas) &&
    Array.isArray(json.betas) &&
    json.alphas.every(Array.isArray) &&
    json.betas.every(Array.isArray)
  );
}

export interface ReferenceImportOptions {
  /** Lengths to record the KV density at (reference plans carry none; default none). */
  lengths?: number[];
  geometry?: MaskGeometry;
}

/**
 * Imports a reference plan (`alphas[layer][head]`, `betas[layer][head]`, per query head)
 * for a model of `shape`. Alpha and beta values are kept exactly, so
 * `planToReference(planFromReference(ref, …))` equals `ref`.
 */
export function planFromReference(
  ref: ReferencePlan,
  shape: ModelShape,
  source: string,
  options: ReferenceImportOptions = {},
): MoaPlan {
  const code = "E_PLAN";
  if (!isObject(ref))
    fail(code, source, "(root)", ref, 'a reference plan must be an object { "alphas", "betas" }');
  for (const key of ["alphas", "betas"] as const) {
    const table: unknown = ref[key];
    if (!Array.isArray(table) || table.length !== shape.layers) {
      fail(code, source, key, table, `must be an array of ${shape.layers} layers (the model's layers)`);
    }
    table.forEach((row: unknown, l) => {
      if (!Array.isArray(row) || row.length !== shape.heads) {
        fail(
          code,
          source,
          `${key}[${l}]`,
          row,
          `must be an array of ${shape.heads} values (the model's query heads)`,
        );
      }
    });
  }
  const rules = ref.alphas.map((row, l) =>
    row.map((alpha, h) => ({
      alpha: checkAlpha(alpha, `alphas[${l}][${h}]`, source, code),
      beta: checkBeta(ref.betas[l]![h], `betas[${l}][${h}]`, source, code),
    })),
  );
  return buildPlan(
    shape,
    rules,
    options.lengths ?? [],
    { convertedFrom: "reference MoA alphas/betas" },
    options.geometry ?? DEFAULT_GEOMETRY,
    source,
    code,
  );
}

/** Exports a plan in the reference implementation's `{ alphas, betas }` format. */
export function planToReference(plan: MoaPlan): ReferencePlan {
  return {
    alphas: plan.rules.map((layer) => layer.map((r) => r.alpha)),
    betas: plan.rules.map((layer) => layer.map((r) => r.beta)),
  };
}
