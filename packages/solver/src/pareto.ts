import { availableParallelism } from "node:os";
import {
  candidateGrid,
  type ElasticRule,
  makePlan,
  type ModelShape,
  MoaError,
  type MoaPlan,
  type MoaProfile,
} from "@moa/core";
import { highsRuntime } from "./highs.js";
import type { GqaMode, MipTargets } from "./problem.js";
import { PointPool } from "./points.js";
import { MipSession, type SolveStats } from "./session.js";
import { DEFAULT_PROOF_NODES, DEFAULT_REL_GAP, type MipSolution, toSolution } from "./solve.js";
import { buildStructure, type Structure } from "./structure.js";
import { buildRuleTable, type RuleTable } from "./table.js";

export interface OptimizeOptions {
  /** The model the plans are for; the profile has no KV-head count. `layers`/`heads` must match it. */
  shape: ModelShape;
  /** Upper bound on the mean KV density over (layer, KV head), at every constrained length. */
  density: number;
  /** Profiled lengths to optimise (default: all of the profile's). */
  lengths?: number[];
  /** Longer length where the KV density is constrained too (default 2 · max length). */
  extend?: number;
  /** The KV density must be ≥ `lowerRatio · density` at every constrained length (default 0.9; 0 disables). */
  lowerRatio?: number;
  /** At most this many distinct rules among the heads of a layer. */
  maxRulesPerLayer?: number;
  /** GQA planning (default `per-query-head`); see {@link GqaMode}. */
  gqa?: GqaMode;
  /** Epsilon values per secondary length in the Pareto grid (default 2): up to `paretoPoints^(m−1)` grid solves. */
  paretoPoints?: number;
  /** Candidate rules (default `candidateGrid({ lengths, extend })`); rules with `S(extend) > extend` make no sense. */
  grid?: ElasticRule[];
  /** Relative optimality gap each solve proves (default 1e-4). */
  relGap?: number;
  /** HiGHS branch-and-bound nodes per MIP for proving `relGap` (default 5000); past them a point keeps the gap it reached. */
  proofNodes?: number;
  /**
   * Threads that solve the epsilon points, this one included (the others are worker
   * threads), at most one per point; 1 solves them all here. Default: the machine's
   * available parallelism when the problem has at least 1500 (slot, rule) binaries, else 1
   * (a worker's start-up costs more than such points take). The plans do not depend on it.
   */
  threads?: number;
  /** Wall-clock limit for the whole front; past it `optimizePlans` throws `E_TIMEOUT`. */
  timeLimitSeconds?: number;
  /** Called after every solve (anchor or grid point). */
  onProgress?: (event: ProgressEvent) => void;
}

export interface ProgressEvent {
  /** Solves finished so far, and the total planned (anchors + grid). */
  done: number;
  total: number;
  kind: "anchor" | "epsilon";
  /** Whether this solve found a plan (grid points can be infeasible). */
  feasible: boolean;
  /** Summed rule loss per profiled length of the plan found. */
  loss?: Record<string, number>;
  gap?: number;
  seconds: number;
}

export interface ParetoPoint {
  plan: MoaPlan;
  /** Summed rule loss (DESIGN.md: Rule loss) per profiled length. */
  loss: Record<string, number>;
  /** The plan's KV density at every constrained length. */
  kvDensity: Record<string, number>;
  /** The scalar objective solved for this point and its proven relative gap. */
  objective: number;
  gap: number;
  solveSeconds: number;
  /** How this point was found: minimising the loss at one length, or an epsilon-constraint grid point. */
  origin: { kind: "anchor"; length: number } | { kind: "epsilon"; lossUpper: Record<string, number> };
}

export interface ParetoStats {
  rulesInGrid: number;
  /** Decisions: query heads (`per-query-head`) or KV heads (`per-kv-head`). */
  slots: number;
  variablesBeforePruning: number;
  /** (slot, rule) binaries left after dominance pruning (with lower bounds where needed). */
  variablesAfterPruning: number;
  solves: number;
  infeasibleSolves: number;
  /** Solves whose plan was already found, or had the same loss at every length as one found. */
  duplicates: number;
  dominated: number;
  /** Largest proven relative gap among the points. */
  maxGap: number;
  tableSeconds: number;
  solveSeconds: number;
  totalSeconds: number;
  lengths: number[];
  kvLengths: number[];
  perSolve: SolveStats[];
}

export interface ParetoResult {
  /** Non-dominated plans, by ascending loss at the longest profiled length. */
  points: ParetoPoint[];
  stats: ParetoStats;
}

/** Augmentation weight of the secondary losses (AUGMECON): keeps every point Pareto-optimal. */
const AUGMENT = 1e-3;
const DEFAULT_LOWER_RATIO = 0.9;
const DEFAULT_PARETO_POINTS = 2;
/** From this many (slot, rule) binaries on, epsilon points are shared with worker threads by default. */
const PARALLEL_BINARIES = 1500;

function argument(message: string, field: string): never {
  throw new MoaError("E_ARGUMENT", `optimizePlans: ${message}`, { field });
}

interface Resolved {
  lengths: number[];
  extend: number;
  kvLengths: number[];
  grid: ElasticRule[];
  lowerRatio: number;
  gqa: GqaMode;
  paretoPoints: number;
  relGap: number;
  threads: number | undefined;
}

function resolveOptions(profile: MoaProfile, options: OptimizeOptions): Resolved {
  const { shape, density } = options;
  if (typeof shape !== "object" || shape === null)
    argument("shape is required (the model's layers, heads, kvHeads, headDim)", "shape");
  if (shape.layers !== profile.layers || shape.heads !== profile.heads) {
    argument(
      `shape has ${shape.layers} layers × ${shape.heads} heads but the profile has ${profile.layers} × ${profile.heads}`,
      "shape",
    );
  }
  if (!Number.isSafeInteger(shape.kvHeads) || shape.kvHeads < 1 || shape.heads % shape.kvHeads !== 0) {
    argument(`shape.kvHeads = ${shape.kvHeads} must divide shape.heads = ${shape.heads}`, "shape.kvHeads");
  }
  if (typeof density !== "number" || !(density > 0 && density <= 1))
    argument(`density = ${density} must be in (0, 1]`, "density");
  const lengths = [...(options.lengths ?? profile.lengths)].sort((a, b) => a - b);
  if (lengths.length === 0) argument("lengths is empty", "lengths");
  for (const n of lengths) {
    if (!profile.influence.has(n))
      argument(`length ${n} is not profiled (the profile has ${profile.lengths.join(", ")})`, "lengths");
  }
  if (new Set(lengths).size !== lengths.length)
    argument(`lengths ${lengths.join(", ")} repeat a length`, "lengths");
  const longest = lengths[lengths.length - 1]!;
  const extend = options.extend ?? 2 * longest;
  if (!Number.isSafeInteger(extend) || extend < longest)
    argument(`extend = ${extend} must be an integer >= ${longest}`, "extend");
  const kvLengths = [...new Set([...lengths, extend])].sort((a, b) => a - b);
  const grid = options.grid ?? candidateGrid({ lengths, extend });
  if (grid.length === 0) argument("the candidate grid is empty", "grid");
  const lowerRatio = options.lowerRatio ?? DEFAULT_LOWER_RATIO;
  if (!(lowerRatio >= 0 && lowerRatio <= 1))
    argument(`lowerRatio = ${lowerRatio} must be in [0, 1]`, "lowerRatio");
  const k = options.maxRulesPerLayer;
  if (k !== undefined && (!Number.isSafeInteger(k) || k < 1))
    argument(`maxRulesPerLayer = ${k} must be a positive integer`, "maxRulesPerLayer");
  const gqa = options.gqa ?? "per-query-head";
  if (gqa !== "per-query-head" && gqa !== "per-kv-head")
    argument(`gqa = ${String(gqa)} must be "per-query-head" or "per-kv-head"`, "gqa");
  const paretoPoints = options.paretoPoints ?? DEFAULT_PARETO_POINTS;
  if (!Number.isSafeInteger(paretoPoints) || paretoPoints < 0)
    argument(`paretoPoints = ${paretoPoints} must be an integer >= 0`, "paretoPoints");
  const relGap = options.relGap ?? DEFAULT_REL_GAP;
  if (!(relGap >= 0 && relGap < 1)) argument(`relGap = ${relGap} must be in [0, 1)`, "relGap");
  const proof = options.proofNodes;
  if (proof !== undefined && !(Number.isSafeInteger(proof) && proof >= 0)) {
    argument(`proofNodes = ${proof} must be an integer >= 0`, "proofNodes");
  }
  const limit = options.timeLimitSeconds;
  if (limit !== undefined && !(limit > 0))
    argument(`timeLimitSeconds = ${limit} must be > 0`, "timeLimitSeconds");
  const threads = options.threads;
  if (threads !== undefined && !(Number.isSafeInteger(threads) && threads >= 1))
    argument(`threads = ${threads} must be a positive integer`, "threads");
  return { lengths, extend, kvLengths, grid, lowerRatio, gqa, paretoPoints, relGap, threads };
}

/**
 * The least and the most KV density any plan of this grid reaches at each KV length,
 * each length on its own: every slot at its narrowest (widest) rule there.
 */
export function densityRange(st: Structure): { least: number[]; most: number[] } {
  const { R, K, tok } = st;
  const least: number[] = [];
  const most: number[] = [];
  for (let k = 0; k < K; k++) {
    let narrow = Number.POSITIVE_INFINITY;
    let wide = 0;
    for (let r = 0; r < R; r++) {
      narrow = Math.min(narrow, tok[r * K + k]!);
      wide = Math.max(wide, tok[r * K + k]!);
    }
    // Every KV head caches at least the narrowest rule (its widest head can't be narrower).
    least.push(narrow / st.kvLengths[k]!);
    most.push(wide / st.kvLengths[k]!);
  }
  return { least, most };
}

function infeasibleMessage(st: Structure, density: number, lowerRatio: number): string {
  const { least, most } = densityRange(st);
  const fmt = (x: number) => x.toFixed(4);
  const ranges = st.kvLengths.map((n, k) => `${n}: ${fmt(least[k]!)}–${fmt(most[k]!)}`).join(", ");
  const lo = lowerRatio * density;
  const tooLow = st.kvLengths.filter((_, k) => least[k]! > density);
  const tooHigh = st.kvLengths.filter((_, k) => most[k]! < lo);
  let why: string;
  if (tooLow.length > 0) {
    why = `density ${density} is below the minimum achievable KV density at ${tooLow.join(", ")}`;
  } else if (tooHigh.length > 0) {
    why = `the lower bound ${fmt(lo)} (lowerRatio ${lowerRatio} × density) is above the maximum achievable KV density at ${tooHigh.join(", ")}`;
  } else {
    why = `no plan keeps the KV density in [${fmt(lo)}, ${density}] at all of ${st.kvLengths.join(", ")} at once`;
  }
  return `optimizePlans: infeasible budget: ${why}. Achievable KV density per length (min–max): ${ranges}. Raise --density, lower lowerRatio, or widen the grid.`;
}

function record(lengths: readonly number[], values: readonly number[]): Record<string, number> {
  const out: Record<string, number> = {};
  lengths.forEach((n, i) => {
    out[String(n)] = values[i]!;
  });
  return out;
}

/** Equal within the tolerance `dominates` uses, at every length. */
function sameLosses(a: readonly number[], b: readonly number[]): boolean {
  return a.every((x, j) => Math.abs(x - b[j]!) <= 1e-12 * Math.max(Math.abs(x), Math.abs(b[j]!)));
}

function kvSum(f: { solution: { kvDensity: readonly number[] } }): number {
  return f.solution.kvDensity.reduce((sum, d) => sum + d, 0);
}

function dominates(a: readonly number[], b: readonly number[]): boolean {
  let strict = false;
  for (let j = 0; j < a.length; j++) {
    const tol = 1e-12 * Math.max(Math.abs(a[j]!), Math.abs(b[j]!));
    if (a[j]! > b[j]! + tol) return false;
    if (a[j]! < b[j]! - tol) strict = true;
  }
  return strict;
}

/**
 * DESIGN.md: The optimisation — the Pareto front of plans over the profiled lengths at a
 * KV-density budget. First one *anchor* per length (its loss minimised, the others with a
 * small weight so the point is Pareto-optimal), then the epsilon-constraint grid: minimise
 * the loss at the longest length subject to the loss at each shorter length ≤ ε, with
 * `paretoPoints` values of ε per length spread between the anchors. Identical plans are
 * merged and dominated ones dropped. Every solve proves `relGap`.
 */
export async function optimizePlans(profile: MoaProfile, options: OptimizeOptions): Promise<ParetoResult> {
  const t0 = performance.now();
  const resolved = resolveOptions(profile, options);
  const deadline =
    options.timeLimitSeconds === undefined ? Number.POSITIVE_INFINITY : t0 + options.timeLimitSeconds * 1000;
  const { lengths, kvLengths, grid, lowerRatio, gqa } = resolved;
  const table: RuleTable = buildRuleTable(profile, { rules: grid, lossLengths: lengths, kvLengths });
  const tableSeconds = (performance.now() - t0) / 1000;
  const highs = await highsRuntime();
  const st = buildStructure({
    table,
    kvHeads: options.shape.kvHeads,
    gqa,
    ...(options.maxRulesPerLayer === undefined ? {} : { maxRulesPerLayer: options.maxRulesPerLayer }),
  });
  const session = new MipSession(highs, st);
  const m = lengths.length;
  const primary = m - 1;
  const secondary = lengths.map((_, j) => j).filter((j) => j !== primary);
  const gridSize = m === 1 ? 0 : resolved.paretoPoints ** secondary.length;
  const total = m + gridSize;
  const densityUpper = kvLengths.map(() => options.density);
  const densityLower = kvLengths.map(() => lowerRatio * options.density);
  const perSolve: SolveStats[] = [];
  let done = 0;
  let infeasibleSolves = 0;

  const sessionOptions = {
    relGap: resolved.relGap,
    deadline,
    proofNodes: options.proofNodes ?? DEFAULT_PROOF_NODES,
  };
  const targetsFor = (weights: number[], lossUpper?: (number | undefined)[]): MipTargets => ({
    weights,
    densityUpper,
    densityLower,
    ...(lossUpper ? { lossUpper } : {}),
  });
  const timeoutError = (error: unknown): unknown =>
    error instanceof MoaError && error.code === "E_TIMEOUT"
      ? new MoaError(
          "E_TIMEOUT",
          `optimizePlans: the Pareto front did not finish within the time limit of ${options.timeLimitSeconds} s (timeLimitSeconds); ${done} of ${total} solves done`,
          { field: "timeLimitSeconds" },
        )
      : error;
  const report = (solution: MipSolution, kind: ProgressEvent["kind"], seconds: number) => {
    done++;
    options.onProgress?.({
      done,
      total,
      kind,
      feasible: solution.status !== "infeasible",
      ...(solution.status !== "infeasible"
        ? { loss: record(lengths, solution.loss), gap: solution.gap }
        : {}),
      seconds,
    });
  };

  const scale = Array.from(st.scale);
  const weightsFor = (main: number) => lengths.map((_, j) => (j === main ? 1 : AUGMENT) / scale[j]!);
  interface Found {
    solution: MipSolution;
    seconds: number;
    origin: ParetoPoint["origin"];
  }
  const found: Found[] = [];
  const wanted = resolved.threads ?? (st.slots * st.R >= PARALLEL_BINARIES ? availableParallelism() : 1);
  const threads = Math.max(1, Math.min(wanted, gridSize));
  // Started before the anchors so that the workers' start-up overlaps them.
  const pool =
    gridSize > 0
      ? new PointPool(
          highs,
          st,
          {
            table,
            kvHeads: options.shape.kvHeads,
            gqa,
            ...(options.maxRulesPerLayer === undefined ? {} : { maxRulesPerLayer: options.maxRulesPerLayer }),
          },
          threads,
        )
      : undefined;
  try {
    const anchors: MipSolution[] = [];
    for (let j = 0; j < m; j++) {
      const started = performance.now();
      const weights = weightsFor(j);
      let solution: MipSolution;
      try {
        solution = toSolution(session, session.solve(targetsFor(weights), sessionOptions), weights);
      } catch (error) {
        throw timeoutError(error);
      }
      const seconds = (performance.now() - started) / 1000;
      perSolve.push(solution.stats);
      report(solution, "anchor", seconds);
      if (solution.status === "infeasible") {
        throw new MoaError("E_INFEASIBLE", infeasibleMessage(st, options.density, lowerRatio), {
          field: "density",
        });
      }
      anchors.push(solution);
      found.push({ solution, seconds, origin: { kind: "anchor", length: lengths[j]! } });
    }
    if (pool !== undefined) {
      const normalised = (s: MipSolution, j: number) => s.loss[j]! / scale[j]!;
      const P = resolved.paretoPoints;
      const values = secondary.map((j) => {
        const ideal = normalised(anchors[j]!, j);
        const nadir = Math.max(...anchors.map((a) => normalised(a, j)));
        return Array.from({ length: P }, (_, t) => ideal + ((nadir - ideal) * (t + 1)) / (P + 1));
      });
      const bounds = Array.from({ length: gridSize }, (_, index) => {
        const lossUpper: (number | undefined)[] = lengths.map(() => undefined);
        let rest = index;
        secondary.forEach((j, i) => {
          lossUpper[j] = values[i]![rest % P]! * scale[j]!;
          rest = Math.floor(rest / P);
        });
        return lossUpper;
      });
      const weights = weightsFor(primary);
      // Every epsilon point starts from the state after the anchors, not from the points
      // before it: its plan is the same whichever thread solves it, and in whatever order.
      let results: Awaited<ReturnType<PointPool["solve"]>>;
      try {
        results = await pool.solve(
          session.snapshot(),
          bounds.map((lossUpper) => targetsFor(weights, lossUpper)),
          sessionOptions,
          (_, result) => report(toSolution(session, result, weights), "epsilon", result.stats.seconds),
        );
      } catch (error) {
        throw timeoutError(error);
      }
      results.forEach((result, index) => {
        const solution = toSolution(session, result, weights);
        perSolve.push(solution.stats);
        if (solution.status === "infeasible") {
          infeasibleSolves++;
          return;
        }
        const lossUpper = bounds[index]!;
        const upper: Record<string, number> = {};
        for (const j of secondary) upper[String(lengths[j])] = lossUpper[j]!;
        found.push({
          solution,
          seconds: result.stats.seconds,
          origin: { kind: "epsilon", lossUpper: upper },
        });
      });
    }
  } finally {
    session.dispose();
    await pool?.close();
  }

  // Merge identical plans, drop dominated ones, order by the loss at the longest length.
  const unique: Found[] = [];
  const seen = new Set<string>();
  for (const f of found) {
    const key = f.solution.headRules!.join(",");
    if (seen.has(key)) continue;
    seen.add(key);
    unique.push(f);
  }
  const nonDominated = unique.filter(
    (f) => !unique.some((g) => g !== f && dominates(g.solution.loss, f.solution.loss)),
  );
  // Epsilon points solved from the same state can land on different plans with the same loss at every length
  // (ties in the rule table): one Pareto point, so one plan — the least KV memory summed over the KV lengths,
  // then the first found (both orders are deterministic).
  const front: Found[] = [];
  for (const f of nonDominated) {
    const same = front.findIndex((g) => sameLosses(g.solution.loss, f.solution.loss));
    if (same < 0) front.push(f);
    else if (kvSum(f) < kvSum(front[same]!)) front[same] = f;
  }
  front.sort((a, b) => {
    for (let j = m - 1; j >= 0; j--) {
      const d = a.solution.loss[j]! - b.solution.loss[j]!;
      if (d !== 0) return d;
    }
    return 0;
  });

  const version = (await highsRuntime()).version.string;
  const geometry = { blockSize: profile.blockSize, sinkTokens: profile.sinkTokens };
  const points: ParetoPoint[] = front.map((f) => {
    const rules: ElasticRule[][] = [];
    const heads = f.solution.headRules!;
    for (let l = 0; l < profile.layers; l++) {
      rules.push(
        Array.from({ length: profile.heads }, (_, h) => ({ ...grid[heads[l * profile.heads + h]!]! })),
      );
    }
    const loss = record(lengths, f.solution.loss);
    const provenance: Record<string, unknown> = {
      profileLengths: lengths,
      extend: resolved.extend,
      profileModel: profile.model,
      calibration: profile.calibration,
      solver: {
        name: "@moa/solver",
        highs: version,
        gqa,
        density: options.density,
        lowerRatio,
        ...(options.maxRulesPerLayer === undefined ? {} : { maxRulesPerLayer: options.maxRulesPerLayer }),
        rulesInGrid: grid.length,
        origin: f.origin,
        loss,
        gap: f.solution.gap,
      },
    };
    const plan = makePlan(options.shape, rules, kvLengths, provenance, geometry);
    return {
      plan,
      loss,
      kvDensity: record(kvLengths, f.solution.kvDensity),
      objective: f.solution.objective,
      gap: f.solution.gap,
      solveSeconds: f.seconds,
      origin: f.origin,
    };
  });
  const totalSeconds = (performance.now() - t0) / 1000;
  return {
    points,
    stats: {
      rulesInGrid: grid.length,
      slots: st.slots,
      variablesBeforePruning: st.slots * st.R,
      variablesAfterPruning: Math.max(
        ...perSolve.map((s) => s.optionsAfterPruning),
        session.optionsAfterPruning,
      ),
      solves: perSolve.length,
      infeasibleSolves,
      duplicates: found.length - unique.length + nonDominated.length - front.length,
      dominated: unique.length - nonDominated.length,
      maxGap: Math.max(0, ...points.map((p) => p.gap)),
      tableSeconds,
      solveSeconds: totalSeconds - tableSeconds,
      totalSeconds,
      lengths,
      kvLengths,
      perSolve,
    },
  };
}
