import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  assertPlanMatchesModel,
  computeDensity,
  type ElasticRule,
  isReferencePlan,
  kvDensity,
  kvHeadOf,
  kvHeadTokens,
  kvTokens,
  type ModelShape,
  type MoaPlan,
  makePlan,
  parsePlan,
  parsePlanText,
  planComputeDensity,
  planFromReference,
  planKvBytes,
  planKvDensity,
  planToReference,
  serializePlan,
} from "../src/index.js";
import { expectMoaError, ruleArb } from "./helpers.js";

const shapeArb: fc.Arbitrary<ModelShape> = fc
  .record({
    architecture: fc.constantFrom("llama", "qwen2", "mistral"),
    layers: fc.integer({ min: 1, max: 4 }),
    kvHeads: fc.integer({ min: 1, max: 4 }),
    group: fc.integer({ min: 1, max: 4 }),
    headDim: fc.constantFrom(16, 64, 128),
  })
  .map(({ group, ...s }) => ({ ...s, heads: s.kvHeads * group }));

const rulesFor = (shape: ModelShape) =>
  fc.array(fc.array(ruleArb, { minLength: shape.heads, maxLength: shape.heads }), {
    minLength: shape.layers,
    maxLength: shape.layers,
  });

const planArb: fc.Arbitrary<MoaPlan> = shapeArb.chain((shape) =>
  fc
    .record({
      rules: rulesFor(shape),
      lengths: fc.uniqueArray(fc.integer({ min: 1, max: 40000 }), { maxLength: 4 }),
      provenance: fc.option(fc.dictionary(fc.string({ maxLength: 6 }), fc.jsonValue({ maxDepth: 2 })), {
        nil: undefined,
      }),
    })
    .map(({ rules, lengths, provenance }) => makePlan(shape, rules, lengths, provenance)),
);

const LLAMA: ModelShape = { architecture: "llama", layers: 4, heads: 8, kvHeads: 2, headDim: 64 };

function planJson(): Record<string, unknown> {
  const rules = Array.from({ length: 4 }, (_, l) =>
    Array.from({ length: 8 }, (_, h) => ({ alpha: 64 * (l + h), beta: 0.25 })),
  );
  return JSON.parse(serializePlan(makePlan(LLAMA, rules, [2048, 4096], { solver: "test" })));
}

describe("plan round trips", () => {
  it("serialize → JSON.parse → parsePlan returns the same plan, and serializing again gives the same text", () => {
    fc.assert(
      fc.property(planArb, (plan) => {
        const text = serializePlan(plan);
        const back = parsePlanText(text, "plan.json");
        expect(back).toEqual(plan);
        expect(serializePlan(back)).toBe(text);
        expect(text.endsWith("}\n")).toBe(true);
      }),
      { numRuns: 200 },
    );
  });

  it("keeps provenance keys named __proto__ through serialize → parse", () => {
    const provenance = JSON.parse('{"solver": {"__proto__": 1, "name": "highs"}}') as Record<string, unknown>;
    const plan = makePlan(LLAMA, planJson().rules as ElasticRule[][], [], provenance);
    const back = parsePlanText(serializePlan(plan), "plan.json");
    expect(Object.keys(back.provenance!.solver as object)).toEqual(["__proto__", "name"]);
    expect(back).toEqual(plan);
  });

  it("serializePlan writes the DESIGN.md key order with one rule per line", () => {
    const text = serializePlan(makePlan(LLAMA, planJson().rules as ElasticRule[][], [4096, 2048]));
    const keys = [...text.matchAll(/^ {2}"(\w+)"/gm)].map((m) => m[1]);
    expect(keys).toEqual(["format", "version", "model", "blockSize", "sinkTokens", "rules", "density"]);
    expect(text).toContain('      { "alpha": 64, "beta": 0.25 },\n');
    expect(text.indexOf('"2048"')).toBeLessThan(text.indexOf('"4096"'));
  });

  it("reference format round trip is exact: planToReference(planFromReference(ref)) = ref", () => {
    fc.assert(
      fc.property(
        shapeArb.chain((shape) => fc.tuple(fc.constant(shape), rulesFor(shape))),
        ([shape, rules]) => {
          const ref = {
            alphas: rules.map((l) => l.map((r) => r.alpha)),
            betas: rules.map((l) => l.map((r) => r.beta)),
          };
          expect(isReferencePlan(ref)).toBe(true);
          const plan = planFromReference(ref, shape, "moa_alpha_beta.json", { lengths: [4096] });
          expect(plan.rules).toEqual(rules);
          expect(planToReference(plan)).toEqual(ref);
          expect(
            JSON.parse(JSON.stringify(planToReference(parsePlanText(serializePlan(plan), "p")))),
          ).toEqual(ref);
        },
      ),
      { numRuns: 200 },
    );
  });

  it("isReferencePlan tells the two formats apart", () => {
    expect(isReferencePlan(planJson())).toBe(false);
    expect(isReferencePlan({ alphas: [[1]], betas: [[0]] })).toBe(true);
    expect(isReferencePlan({ alphas: [1], betas: [0] })).toBe(false);
    expect(isReferencePlan(null)).toBe(false);
  });
});

describe("plan densities", () => {
  it("kvHeadTokens is the widest cache among the query heads of a KV head (h → floor(h / group))", () => {
    fc.assert(
      fc.property(planArb, fc.integer({ min: 1, max: 30000 }), (plan, n) => {
        const group = plan.model.heads / plan.model.kvHeads;
        const geom = { blockSize: plan.blockSize, sinkTokens: plan.sinkTokens };
        let sum = 0;
        let bytes = 0;
        for (let layer = 0; layer < plan.model.layers; layer++) {
          const widest = new Array<number>(plan.model.kvHeads).fill(0);
          plan.rules[layer]!.forEach((rule, h) => {
            expect(kvHeadOf(plan, h)).toBe(Math.floor(h / group));
            widest[Math.floor(h / group)] = Math.max(widest[Math.floor(h / group)]!, kvTokens(rule, n, geom));
          });
          widest.forEach((tokens, kv) => {
            expect(kvHeadTokens(plan, layer, kv, n)).toBe(tokens);
            sum += tokens / n;
            bytes += tokens * plan.model.headDim * 2 * 2;
          });
        }
        expect(planKvDensity(plan, n)).toBeCloseTo(sum / (plan.model.layers * plan.model.kvHeads), 12);
        expect(planKvBytes(plan, n)).toBe(bytes);
        expect(planKvBytes(plan, n, { batch: 3, bytesPerElement: 4 })).toBe(bytes * 3 * 2);
      }),
    );
  });

  it("for MHA the plan's KV density is the mean of the heads' KV densities; compute density is the mean over query heads", () => {
    fc.assert(
      fc.property(
        shapeArb
          .map((s) => ({ ...s, kvHeads: s.heads }))
          .chain((shape) => fc.tuple(fc.constant(shape), rulesFor(shape))),
        fc.integer({ min: 1, max: 30000 }),
        ([shape, rules], n) => {
          const plan = makePlan(shape, rules, []);
          const all = rules.flat();
          const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
          expect(planKvDensity(plan, n)).toBeCloseTo(mean(all.map((r) => kvDensity(r, n))), 12);
          expect(planComputeDensity(plan, n)).toBeCloseTo(mean(all.map((r) => computeDensity(r, n))), 12);
        },
      ),
    );
  });

  it("makePlan fills density with planKvDensity at each length", () => {
    fc.assert(
      fc.property(planArb, (plan) => {
        for (const [key, value] of Object.entries(plan.density))
          expect(value).toBe(planKvDensity(plan, Number(key)));
      }),
    );
  });
});

describe("plan validation errors name the file, the field and the value", () => {
  const src = "plan.json";
  // biome-ignore lint/suspicious/noExplicitAny: the tests corrupt parsed JSON at arbitrary depths.
  const edit = (f: (j: Record<string, any>) => void) => {
    const json = planJson();
    f(json);
    return json;
  };

  it("a negative beta, in the documented message form, explaining why", () => {
    const e = expectMoaError(
      () =>
        parsePlan(
          edit((j) => (j.rules[3][7].beta = -0.5)),
          src,
        ),
      "E_PLAN",
      "plan.json: rules[3][7].beta = -0.5: must be in [0, 1]",
      "shrinks the span",
      "KV cache",
    );
    expect(e.source).toBe(src);
    expect(e.field).toBe("rules[3][7].beta");
  });

  it("beta above 1, non-finite or non-numeric alpha, unknown rule fields", () => {
    expectMoaError(
      () =>
        parsePlan(
          edit((j) => (j.rules[0][1].beta = 1.5)),
          src,
        ),
      "E_PLAN",
      "rules[0][1].beta = 1.5",
      "[0, 1]",
    );
    expectMoaError(
      () =>
        parsePlan(
          edit((j) => (j.rules[2][0].alpha = "1024")),
          src,
        ),
      "E_PLAN",
      'rules[2][0].alpha = "1024"',
      "finite number",
    );
    expectMoaError(
      () =>
        parsePlan(
          edit((j) => (j.rules[2][0].alpha = Number.NaN)),
          src,
        ),
      "E_PLAN",
      "rules[2][0].alpha = NaN",
    );
    expectMoaError(
      () =>
        parsePlan(
          edit((j) => (j.rules[1][1].gamma = 1)),
          src,
        ),
      "E_PLAN",
      "rules[1][1].gamma = 1",
      "unknown field",
    );
    expectMoaError(
      () =>
        parsePlan(
          edit((j) => (j.rules[1][1] = [0, 1])),
          src,
        ),
      "E_PLAN",
      "rules[1][1] = [0,1]",
    );
  });

  it("rules dimensions must match the model", () => {
    expectMoaError(
      () =>
        parsePlan(
          edit((j) => j.rules.pop()),
          src,
        ),
      "E_PLAN",
      "rules = ",
      "model.layers = 4",
    );
    expectMoaError(
      () =>
        parsePlan(
          edit((j) => j.rules[2].pop()),
          src,
        ),
      "E_PLAN",
      "rules[2] = ",
      "model.heads = 8",
    );
  });

  it("format, version, unknown fields, and a hint for reference plans", () => {
    expectMoaError(
      () =>
        parsePlan(
          edit((j) => (j.format = "moa")),
          src,
        ),
      "E_PLAN",
      'format = "moa"',
      'must be "moa-plan"',
    );
    expectMoaError(
      () => parsePlan({ alphas: [[0]], betas: [[1]] }, src),
      "E_PLAN",
      "format = undefined",
      "planFromReference",
    );
    expectMoaError(
      () =>
        parsePlan(
          edit((j) => (j.version = 2)),
          src,
        ),
      "E_PLAN",
      "version = 2",
      "must be 1",
    );
    expectMoaError(
      () =>
        parsePlan(
          edit((j) => (j.densities = {})),
          src,
        ),
      "E_PLAN",
      "densities = {}",
      "unknown field",
    );
    expectMoaError(() => parsePlan([], src), "E_PLAN", "(root) = []");
    expectMoaError(() => parsePlanText("{", src), "E_PLAN", 'plan.json: (file) = "{"', "not valid JSON");
  });

  it("model fields: positive integers, heads divisible by kvHeads, architecture named", () => {
    expectMoaError(
      () =>
        parsePlan(
          edit((j) => (j.model.layers = 0)),
          src,
        ),
      "E_PLAN",
      "model.layers = 0",
      "positive integer",
    );
    expectMoaError(
      () =>
        parsePlan(
          edit((j) => (j.model.headDim = 64.5)),
          src,
        ),
      "E_PLAN",
      "model.headDim = 64.5",
    );
    expectMoaError(
      () =>
        parsePlan(
          edit((j) => (j.model.kvHeads = 3)),
          src,
        ),
      "E_PLAN",
      "model.kvHeads = 3",
      "must divide model.heads = 8",
    );
    expectMoaError(
      () =>
        parsePlan(
          edit((j) => (j.model.architecture = "")),
          src,
        ),
      "E_PLAN",
      'model.architecture = ""',
    );
    expectMoaError(
      () =>
        parsePlan(
          edit((j) => (j.model.vocab = 1)),
          src,
        ),
      "E_PLAN",
      "model.vocab = 1",
      "unknown field",
    );
  });

  it("geometry: blockSize and sinkTokens positive, sinkTokens a multiple of blockSize", () => {
    expectMoaError(
      () =>
        parsePlan(
          edit((j) => (j.blockSize = 0)),
          src,
        ),
      "E_PLAN",
      "blockSize = 0",
    );
    expectMoaError(
      () =>
        parsePlan(
          edit((j) => (j.sinkTokens = 96)),
          src,
        ),
      "E_PLAN",
      "sinkTokens = 96",
      "multiple of blockSize = 64",
    );
    expectMoaError(
      () =>
        parsePlan(
          edit((j) => (j.sinkTokens = -64)),
          src,
        ),
      "E_PLAN",
      "sinkTokens = -64",
    );
  });

  it("density: integer length keys, values in [0, 1] that agree with the rules", () => {
    expectMoaError(
      () =>
        parsePlan(
          edit((j) => (j.density["2k"] = 0.5)),
          src,
        ),
      "E_PLAN",
      'density["2k"] = 0.5',
      "positive integer length",
    );
    expectMoaError(
      () =>
        parsePlan(
          edit((j) => (j.density["2048"] = 1.5)),
          src,
        ),
      "E_PLAN",
      'density["2048"] = 1.5',
      "[0, 1]",
    );
    expectMoaError(
      () =>
        parsePlan(
          edit((j) => (j.density["2048"] = 0.1)),
          src,
        ),
      "E_PLAN",
      'density["2048"] = 0.1',
      "disagrees with the KV density of the rules",
    );
    expectMoaError(
      () =>
        parsePlan(
          edit((j) => (j.provenance = "cli")),
          src,
        ),
      "E_PLAN",
      'provenance = "cli"',
      "must be an object",
    );
  });

  it("reference import: dimensions and values checked with the reference field names", () => {
    const ref = planToReference(parsePlan(planJson(), src));
    expectMoaError(
      () => planFromReference({ ...ref, betas: ref.betas.slice(1) }, LLAMA, "ref.json"),
      "E_PLAN",
      "ref.json: betas = ",
      "4 layers",
    );
    expectMoaError(
      () => planFromReference({ ...ref, alphas: ref.alphas.map((l) => l.slice(1)) }, LLAMA, "ref.json"),
      "E_PLAN",
      "alphas[0] = ",
      "8 values",
    );
    const negative = structuredClone(ref);
    negative.betas[1]![2] = -0.1;
    expectMoaError(
      () => planFromReference(negative, LLAMA, "ref.json"),
      "E_PLAN",
      "ref.json: betas[1][2] = -0.1: must be in [0, 1]",
    );
  });

  it("makePlan rejects bad rules as argument errors", () => {
    expectMoaError(
      () => makePlan(LLAMA, [], [2048]),
      "E_ARGUMENT",
      "makePlan: rules = []",
      "model.layers = 4",
    );
    expectMoaError(
      () => makePlan(LLAMA, parsePlan(planJson(), src).rules, [0]),
      "E_ARGUMENT",
      "makePlan: lengths[0] = 0",
    );
  });
});

describe("plan for another model", () => {
  it("assertPlanMatchesModel passes for the same shape and names each differing field otherwise", () => {
    const plan = parsePlan(planJson(), "plan.json");
    expect(() => assertPlanMatchesModel(plan, { ...LLAMA }, "plan.json")).not.toThrow();
    const e = expectMoaError(
      () => assertPlanMatchesModel(plan, { ...LLAMA, layers: 32, kvHeads: 8 }, "plan.json"),
      "E_PLAN_SHAPE",
      "plan.json: the plan is for another model",
      "model.layers = 4 (the model has 32)",
      "model.kvHeads = 2 (the model has 8)",
    );
    expect(e.message).not.toContain("model.heads");
    expect(e.field).toBe("model.layers,model.kvHeads");
    expectMoaError(
      () => assertPlanMatchesModel(plan, { ...LLAMA, architecture: "qwen2" }, "p"),
      "E_PLAN_SHAPE",
      'model.architecture = "llama" (the model has "qwen2")',
    );
  });
});
