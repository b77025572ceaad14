import { MoaError } from "@moa/core";
import type { Highs } from "highs";
import { BudgetDp } from "./budget.js";
import { type CompactResult, type SideBounds, solveCompact } from "./compact.js";
import { Master, makePattern, type Pattern } from "./master.js";
import { solvePatternMip } from "./patternMip.js";
import { repairPatterns } from "./repair.js";
import { UnitPricer } from "./pricing.js";
import type { MipTargets } from "./problem.js";
import {
  type Evaluation,
  evaluateAssignment,
  pruneOptions,
  type SlotOptions,
  type Structure,
} from "./structure.js";

/** How one MIP was solved, for benchmarks and for curiosity. */
export interface SolveStats {
  /** (slot, rule) pairs left after dominance pruning: the binaries of the naive model. */
  optionsAfterPruning: number;
  /** KV lengths whose lower bound had to be enforced (see `pruneOptions`). */
  lowerBoundLengths: number[];
  /** Column-generation rounds (master LP solves). */
  rounds: number;
  /** Columns in the master LP at the end. */
  masterColumns: number;
  /** Binaries of the last MIP HiGHS solved (0 when the LP rounding was already within the gap). */
  mipVariables: number;
  /** What certified the answer: the rounded LP, the restricted master MIP, the reduced-cost core, or the compact MIP. */
  certifiedBy: "lp-rounding" | "budget-dp" | "master-mip" | "core-mip" | "compact-mip";
  seconds: number;
}

export interface SessionResult {
  /** `feasible`: the proof stopped at its work limit before reaching `relGap` (see `gap`). */
  status: "optimal" | "feasible" | "infeasible";
  assign: Int32Array | undefined;
  evaluation: Evaluation | undefined;
  /** Normalised objective Σ_j ŵ_j · nloss_j of `assign`. */
  objective: number;
  /** A proven lower bound on the optimum. */
  bound: number;
  /** (objective − bound) / |objective|. */
  gap: number;
  stats: SolveStats;
}

export interface SessionOptions {
  /** Relative optimality gap to prove. */
  relGap: number;
  /** `performance.now()` deadline in ms (Infinity for none). */
  deadline: number;
  /** Solve the compact MIP directly instead of decomposing (tests compare the two). */
  compactOnly?: boolean;
  /**
   * Branch-and-bound nodes HiGHS may spend on each MIP of the proof. A work limit rather
   * than seconds, so that a solve gives the same plan on any machine and under any load.
   */
  proofNodes: number;
}

const LP_TOLERANCE = 1e-9;
const MAX_ROUNDS = 2000;
/** Beyond this many core patterns the core is solved in the compact form instead. */
const MAX_CORE_PATTERNS = 50_000;
/** Times the core is widened when its MIP finds nothing below the threshold. */
const MAX_CORE_ROUNDS = 4;
/** An oversized pattern core falls back to the compact MIP only within this relative gap. */
const COMPACT_CORE_GAP = 1e-3;
/**
 * The first core is this fraction of the span the incumbent needs. A narrow core is small
 * enough for HiGHS to solve quickly and usually holds the optimum; when it does not prove
 * it, every plan outside it is known to cost at least the bound plus its span, so the
 * bound rises and the next core reaches twice as far.
 */
const NARROW_CORE = 0.5;
/**
 * A narrow round stops at a plan whose proof needs a core reaching this fraction of the
 * narrow span farther than the narrow one.
 */
const NARROW_WIDEN = 0.1;

/** The result of a solve that proved no plan meets the constraints. */
function infeasibleResult(stats: SolveStats): SessionResult {
  return {
    status: "infeasible",
    assign: undefined,
    evaluation: undefined,
    objective: Number.POSITIVE_INFINITY,
    bound: Number.POSITIVE_INFINITY,
    gap: 0,
    stats,
  };
}

function timeout(deadline: number): never {
  throw new MoaError("E_TIMEOUT", `the solve ran past its time limit (deadline ${Math.round(deadline)} ms)`);
}

/**
 * Integer KV budgets: Σ_units cached tokens at length n must lie in
 * [ceil(lower·n·units), floor(upper·n·units)] — the mean-density window of DESIGN.md,
 * counted in whole tokens so feasibility is checked exactly.
 */
function tokenBudgets(st: Structure, targets: MipTargets): { lo: Float64Array; up: Float64Array } {
  const lo = new Float64Array(st.K);
  const up = new Float64Array(st.K);
  for (let k = 0; k < st.K; k++) {
    const scale = st.kvLengths[k]! * st.units;
    up[k] = Math.floor(targets.densityUpper[k]! * scale + 1e-6);
    lo[k] = Math.max(0, Math.ceil((targets.densityLower?.[k] ?? 0) * scale - 1e-6));
  }
  return { lo, up };
}

/**
 * What a session carries from solve to solve, as plain data (it crosses to worker threads):
 * the KV lengths whose lower bound is enforced, the solutions found so far and the master's
 * columns in their order. A session restored from it solves the next point exactly as any
 * other restored from it would, whichever thread it runs on.
 */
export interface SessionState {
  exact: boolean[];
  pool: Int32Array[];
  /** Master columns in column order: unit and rule per slot. */
  columns: { unit: number; rules: Int32Array }[];
}

/**
 * A sequence of MIPs over one structure (the points of a Pareto front): the master LP,
 * its columns, the pruned options and earlier solutions carry over from solve to solve.
 */
export class MipSession {
  readonly st: Structure;
  private readonly highs: Highs;
  private master: Master | undefined;
  private readonly pricer: UnitPricer | undefined;
  /** KV lengths whose lower bound is enforced (grows, never shrinks). */
  private readonly exact: boolean[];
  private opts: SlotOptions;
  private readonly pool: Int32Array[] = [];
  private readonly poolKeys = new Set<string>();

  constructor(highs: Highs, st: Structure, state?: SessionState) {
    this.highs = highs;
    this.st = st;
    this.pricer = st.states === undefined ? undefined : new UnitPricer(st);
    this.exact = state === undefined ? new Array<boolean>(st.K).fill(false) : [...state.exact];
    this.opts = pruneOptions(st, this.exact);
    for (const a of state?.pool ?? []) this.remember(a);
    if (state !== undefined && state.columns.length > 0 && this.pricer !== undefined) {
      // A fresh master LP with the same columns in the same order (cold basis).
      this.master = new Master(highs, st);
      this.master.add(state.columns.map((c) => makePattern(st, c.unit, c.rules)));
    }
  }

  /** The state the next solve starts from (see {@link SessionState}). */
  snapshot(): SessionState {
    return {
      exact: [...this.exact],
      pool: this.pool.map((a) => Int32Array.from(a)),
      columns: (this.master?.patterns ?? []).map((p) => ({ unit: p.unit, rules: Int32Array.from(p.rules) })),
    };
  }

  get optionsAfterPruning(): number {
    return this.opts.rule.length;
  }

  dispose(): void {
    this.master?.dispose();
    this.master = undefined;
  }

  private remember(assign: Int32Array): void {
    const key = assign.join(",");
    if (this.poolKeys.has(key)) return;
    this.poolKeys.add(key);
    this.pool.push(Int32Array.from(assign));
  }

  solve(targets: MipTargets, options: SessionOptions): SessionResult {
    const t0 = performance.now();
    const st = this.st;
    const { K, m } = st;
    const weights = Float64Array.from(targets.weights, (w, j) => w * st.scale[j]!);
    const lossUpper = new Float64Array(m).fill(Number.POSITIVE_INFINITY);
    for (let j = 0; j < m; j++) {
      const e = targets.lossUpper?.[j];
      if (e !== undefined && e < Number.POSITIVE_INFINITY) {
        const scaled = e / st.scale[j]!;
        lossUpper[j] = scaled + 1e-9 * Math.max(Math.abs(scaled), 1e-6);
      }
    }
    const budget = tokenBudgets(st, targets);
    const wantsLower = Array.from(budget.lo, (t) => t > 0);
    for (;;) {
      const bounds: SideBounds = {
        weights,
        lossUpper,
        kvUpper: Float64Array.from(budget.up, (t, k) => (t + 0.5) / st.kvLengths[k]!),
        kvLower: Float64Array.from(budget.lo, (t, k) =>
          this.exact[k] && wantsLower[k] ? (t - 0.5) / st.kvLengths[k]! : Number.NEGATIVE_INFINITY,
        ),
        exactCap: this.exact.map((e, k) => e && wantsLower[k]!),
      };
      const feasible = (e: Evaluation, all: boolean): boolean => {
        for (let k = 0; k < K; k++) {
          if (e.tokens[k]! > budget.up[k]!) return false;
          if ((all || this.exact[k]) && e.tokens[k]! < budget.lo[k]!) return false;
        }
        for (let j = 0; j < m; j++) if (e.nloss[j]! > lossUpper[j]! + 1e-12) return false;
        return e.distinctPerLayer <= (st.maxRulesPerLayer ?? Number.POSITIVE_INFINITY);
      };
      const result =
        (options.compactOnly || this.pricer === undefined
          ? undefined
          : this.solveDecomposed(bounds, feasible, options)) ?? this.solveWhole(bounds, feasible, options);
      if (result.status === "infeasible" || result.evaluation === undefined) {
        return { ...result, stats: { ...result.stats, seconds: (performance.now() - t0) / 1000 } };
      }
      // The relaxation dropped the lower bounds outside `exact`; enforce those it violates.
      let grew = false;
      for (let k = 0; k < K; k++) {
        if (wantsLower[k] && !this.exact[k] && result.evaluation.tokens[k]! < budget.lo[k]!) {
          this.exact[k] = true;
          grew = true;
        }
      }
      if (!grew) {
        this.remember(result.assign!);
        return { ...result, stats: { ...result.stats, seconds: (performance.now() - t0) / 1000 } };
      }
      this.opts = pruneOptions(st, this.exact);
    }
  }

  private baseStats(): SolveStats {
    return {
      optionsAfterPruning: this.opts.rule.length,
      lowerBoundLengths: this.st.kvLengths.filter((_, k) => this.exact[k]),
      rounds: 0,
      masterColumns: this.master?.patterns.length ?? 0,
      mipVariables: 0,
      certifiedBy: "compact-mip",
      seconds: 0,
    };
  }

  private objectiveOf(e: Evaluation, weights: Float64Array): number {
    let z = 0;
    for (let j = 0; j < this.st.m; j++) z += weights[j]! * e.nloss[j]!;
    return z;
  }

  private remaining(deadline: number): number {
    const left = (deadline - performance.now()) / 1000;
    if (left <= 0) timeout(deadline);
    return Number.isFinite(left) ? left : 1e7;
  }

  /** The compact MIP over all pruned options, solved by HiGHS alone. */
  private solveWhole(
    bounds: SideBounds,
    feasible: (e: Evaluation, all: boolean) => boolean,
    options: SessionOptions,
  ): SessionResult {
    const stats = this.baseStats();
    let best: { assign: Int32Array; e: Evaluation; z: number } | undefined;
    for (const a of this.pool) {
      const e = evaluateAssignment(this.st, a);
      const z = this.objectiveOf(e, bounds.weights);
      if (feasible(e, false) && (best === undefined || z < best.z)) best = { assign: a, e, z };
    }
    // Without any plan yet, finding one matters more than the proof budget: use the deadline.
    const res = solveCompact(this.highs, this.st, this.opts, bounds, {
      relGap: options.relGap,
      timeLimit: this.remaining(options.deadline),
      // Without any plan yet, finding one matters more than the work limit.
      ...(best === undefined ? {} : { maxNodes: options.proofNodes }),
      start: best?.assign,
    });
    stats.mipVariables = res.variables;
    return this.finish(
      res,
      best,
      Number.NEGATIVE_INFINITY,
      bounds,
      feasible,
      stats,
      options,
      Number.POSITIVE_INFINITY,
    );
  }

  /** Turns a compact-MIP result into a session result, with the bound `min(HiGHS bound, outside)`. */
  private finish(
    res: CompactResult,
    incumbent: { assign: Int32Array; e: Evaluation; z: number } | undefined,
    lpBound: number,
    bounds: SideBounds,
    feasible: (e: Evaluation, all: boolean) => boolean,
    stats: SolveStats,
    options: SessionOptions,
    outside: number,
  ): SessionResult {
    let best = incumbent;
    if (res.assign !== undefined) {
      const e = evaluateAssignment(this.st, res.assign);
      const z = this.objectiveOf(e, bounds.weights);
      if (feasible(e, false) && (best === undefined || z < best.z))
        best = { assign: Int32Array.from(res.assign), e, z };
    }
    if (res.status === "limit" && performance.now() >= options.deadline) timeout(options.deadline);
    if (best === undefined) {
      if (res.status === "limit") {
        throw new MoaError(
          "E_SOLVER",
          "HiGHS stopped before finding any plan and without proving infeasibility",
        );
      }
      return infeasibleResult(stats);
    }
    const bound = Math.min(best.z, Math.max(lpBound, Math.min(res.bound, outside)));
    const gap = relativeGap(best.z, bound);
    return {
      status: gap <= options.relGap ? "optimal" : "feasible",
      assign: best.assign,
      evaluation: best.e,
      objective: best.z,
      bound,
      gap,
      stats,
    };
  }

  private initialPatterns(): Pattern[] {
    const st = this.st;
    const pricer = this.pricer!;
    const { R, K, m, slots } = st;
    const C = st.states!.count;
    const out: Pattern[] = [];
    const pattern = new Int32Array(st.slotsPerUnit);
    const slotCost = new Float64Array(slots * R);
    const capCost = new Float64Array(C);
    // The least-loss choice, then the narrowest choice at each KV length (least loss among equals).
    for (let pass = -1; pass < K; pass++) {
      for (let i = 0; i < slots * R; i++) {
        let c = 0;
        for (let j = 0; j < m; j++) c += st.nloss[j]![i]!;
        slotCost[i] = pass < 0 ? c : 1e-9 * c;
      }
      for (let s = 0; s < C; s++)
        capCost[s] = pass < 0 ? 0 : st.states!.tokens[s * K + pass]! / st.kvLengths[pass]!;
      for (let u = 0; u < st.units; u++) {
        pricer.price(u, this.opts, slotCost, capCost, pattern);
        out.push(makePattern(st, u, pattern));
      }
    }
    return out;
  }

  /**
   * Dantzig–Wolfe column generation for the LP bound, then an integer solution certified
   * against it: the rounded LP, else the MIP over the generated columns, else the core of
   * options whose reduced cost is below the gap (any better solution lies in that core).
   */
  private solveDecomposed(
    bounds: SideBounds,
    feasible: (e: Evaluation, all: boolean) => boolean,
    options: SessionOptions,
  ): SessionResult | undefined {
    const st = this.st;
    const { R, K, m, slots, units, slotsPerUnit: spu } = st;
    const C = st.states!.count;
    const stats = this.baseStats();
    if (this.master === undefined) {
      this.master = new Master(this.highs, st);
      this.master.add(this.initialPatterns());
    }
    const master = this.master;
    const sideLower = new Float64Array(K + m);
    const sideUpper = new Float64Array(K + m);
    for (let k = 0; k < K; k++) {
      sideLower[k] = bounds.kvLower[k]!;
      sideUpper[k] = bounds.kvUpper[k]!;
    }
    for (let j = 0; j < m; j++) {
      sideLower[K + j] = Number.NEGATIVE_INFINITY;
      sideUpper[K + j] = bounds.lossUpper[j]!;
    }
    master.setBounds(sideLower, sideUpper);
    // Earlier solutions are good columns for the next point.
    const poolPatterns: Pattern[] = [];
    for (const a of this.pool) {
      for (let u = 0; u < units; u++)
        poolPatterns.push(makePattern(st, u, a.subarray(u * spu, (u + 1) * spu)));
    }
    master.add(poolPatterns);

    const slotCost = new Float64Array(slots * R);
    const capCost = new Float64Array(C);
    const pattern = new Int32Array(spu);
    const y = new Float64Array(K + m);
    let bestBound = Number.NEGATIVE_INFINITY;
    let bestY = new Float64Array(K + m);
    let phaseOne = false;
    let weights = bounds.weights;
    let lastX: Float64Array | undefined;

    const setCosts = (dual: Float64Array, w: Float64Array, clamp = Number.POSITIVE_INFINITY): number => {
      // Lagrangian terms of the side rows, with duals cleaned to the sign their bounds allow
      // (and, in phase one, to the artificials' cost 1 so the bound stays valid).
      let constant = 0;
      for (let i = 0; i < K + m; i++) {
        let v = Math.max(-clamp, Math.min(clamp, dual[i]!));
        if (v > 0 && !(sideLower[i]! > Number.NEGATIVE_INFINITY)) v = 0;
        if (v < 0 && !(sideUpper[i]! < Number.POSITIVE_INFINITY)) v = 0;
        y[i] = v;
        constant += v > 0 ? v * sideLower[i]! : v < 0 ? v * sideUpper[i]! : 0;
      }
      for (let s = 0; s < slots; s++) {
        for (let r = 0; r < R; r++) {
          let c = 0;
          for (let j = 0; j < m; j++) c += (w[j]! - y[K + j]!) * st.nloss[j]![s * R + r]!;
          slotCost[s * R + r] = c;
        }
      }
      const capTokens = st.states!.tokens;
      for (let c = 0; c < C; c++) {
        let v = 0;
        for (let k = 0; k < K; k++) v -= (y[k]! * capTokens[c * K + k]!) / st.kvLengths[k]!;
        capCost[c] = v;
      }
      return constant;
    };

    master.setWeights(weights);
    // The artificials' price must exceed any dual the real rows can have; scale it with
    // the objective (raw weights can make it anything) and raise it if it proves too low.
    let penalty =
      1e4 *
      Math.max(
        1e-12,
        weights.reduce((a, w) => a + w, 0),
      );
    master.setPenalty(penalty);
    for (let round = 0; ; round++) {
      if (round >= MAX_ROUNDS) break;
      const res = master.solve(this.remaining(options.deadline));
      stats.rounds++;
      if (res.status !== this.highs.constants.modelStatus.optimal) {
        if (performance.now() >= options.deadline) timeout(options.deadline);
        throw new MoaError("E_SOLVER", `HiGHS could not solve the master LP (model status ${res.status})`);
      }
      lastX = res.x;
      let bound = setCosts(res.dual, weights, phaseOne ? 1 : Number.POSITIVE_INFINITY);
      const fresh: Pattern[] = [];
      for (let u = 0; u < units; u++) {
        const v = this.pricer!.price(u, this.opts, slotCost, capCost, pattern);
        bound += v;
        if (v - res.dual[K + m + u]! < -LP_TOLERANCE * Math.max(1, Math.abs(v))) {
          fresh.push(makePattern(st, u, pattern));
        }
      }
      if (phaseOne) {
        // Phase one minimises the artificial mass; a positive Lagrangian bound proves infeasibility.
        if (bound > LP_TOLERANCE) {
          stats.masterColumns = master.patterns.length;
          return infeasibleResult(stats);
        }
        if (res.artificial <= LP_TOLERANCE || master.add(fresh) === 0) {
          // Numerically stuck (duals that price known columns as improving): leave it to the compact MIP.
          if (res.artificial > LP_TOLERANCE) return undefined;
          // Feasible after all: back to the real objective with a larger penalty.
          phaseOne = false;
          weights = bounds.weights;
          master.setWeights(weights);
          penalty *= 100;
          master.setPenalty(penalty);
        }
        continue;
      }
      if (res.artificial <= LP_TOLERANCE && bound > bestBound) {
        bestBound = bound;
        bestY = Float64Array.from(y);
      }
      const converged = res.objective - bound <= LP_TOLERANCE * Math.max(1, Math.abs(res.objective));
      if (res.artificial <= LP_TOLERANCE && (converged || fresh.length === 0)) break;
      if (master.add(fresh) === 0) {
        if (res.artificial <= LP_TOLERANCE) break;
        // The penalised LP is optimal with artificials in use: decide feasibility.
        phaseOne = true;
        weights = new Float64Array(m);
        master.setWeights(weights);
        master.setPenalty(1);
      }
    }
    stats.masterColumns = master.patterns.length;

    // Integer solutions: earlier solutions, then the LP rounded unit by unit.
    let best: { assign: Int32Array; e: Evaluation; z: number } | undefined;
    const consider = (assign: Int32Array): void => {
      const e = evaluateAssignment(st, assign);
      const z = this.objectiveOf(e, bounds.weights);
      if (feasible(e, false) && (best === undefined || z < best.z))
        best = { assign: Int32Array.from(assign), e, z };
    };
    for (const a of this.pool) consider(a);
    // Candidates per unit for the repair heuristic: the master's columns.
    const candidates: Pattern[][] = master.unitColumns.map((cols) =>
      cols.map((c) => master.patterns[c - master.firstPattern]!),
    );
    const repairFrom = (start: Int32Array) => {
      const picked = repairPatterns(st, candidates, start, bounds);
      if (picked === undefined) return;
      const assign = new Int32Array(slots);
      for (let u = 0; u < units; u++) assign.set(candidates[u]![picked[u]!]!.rules, u * spu);
      consider(assign);
    };
    if (lastX !== undefined) {
      const rounded = new Int32Array(slots);
      const start = new Int32Array(units);
      for (let u = 0; u < units; u++) {
        const cols = master.unitColumns[u]!;
        let pick = 0;
        for (let i = 1; i < cols.length; i++) if (lastX[cols[i]!]! > lastX[cols[pick]!]!) pick = i;
        start[u] = pick;
        rounded.set(candidates[u]![pick]!.rules, u * spu);
      }
      consider(rounded);
      repairFrom(start);
    }
    const within = (): boolean =>
      best !== undefined && best.z - bestBound <= options.relGap * Math.max(Math.abs(best.z), 1e-12);
    const done = (by: SolveStats["certifiedBy"]): SessionResult => {
      stats.certifiedBy = by;
      const b = best!;
      return {
        status: "optimal",
        assign: b.assign,
        evaluation: b.e,
        objective: b.z,
        bound: Math.min(b.z, bestBound),
        gap: relativeGap(b.z, bestBound),
        stats,
      };
    };
    if (within()) return done("lp-rounding");

    // The KV row whose granularity costs the LP bound most: dual price × token step.
    let budgetRow = -1;
    let impact = 0;
    for (let k = 0; k < K; k++) {
      const cost = (Math.abs(bestY[k]!) * st.tokenStep[k]!) / st.kvLengths[k]!;
      if (cost > impact) {
        impact = cost;
        budgetRow = k;
      }
    }
    let dp: BudgetDp | undefined;
    let dpConstant = 0;
    const dpY = Float64Array.from(bestY);
    if (budgetRow >= 0) {
      dpY[budgetRow] = 0;
      dpConstant = setCosts(dpY, bounds.weights);
      const n = st.kvLengths[budgetRow]!;
      const lo =
        bounds.kvLower[budgetRow]! > Number.NEGATIVE_INFINITY
          ? Math.ceil(bounds.kvLower[budgetRow]! * n - 1e-6)
          : 0;
      const up = Math.floor(bounds.kvUpper[budgetRow]! * n + 1e-6);
      dp = BudgetDp.solve(st, this.pricer!, this.opts, slotCost, capCost, budgetRow, lo, up);
      if (dp !== undefined) {
        if (dp.bound === Number.POSITIVE_INFINITY) {
          return infeasibleResult(stats);
        }
        bestBound = Math.max(bestBound, dp.bound + dpConstant);
        consider(dp.assign);
        // The DP's plan meets its row exactly; repair the others from there.
        const start = new Int32Array(units);
        for (let u = 0; u < units; u++) {
          const p = makePattern(st, u, dp.assign.subarray(u * spu, (u + 1) * spu));
          start[u] = candidates[u]!.length;
          candidates[u]!.push(p);
        }
        repairFrom(start);
      }
    }
    // The other KV rows with a price: each gives its own bound and its own fixing test.
    const extraDps: { k: number; dp: BudgetDp; y: Float64Array; constant: number }[] = [];
    if (dp !== undefined && !within()) {
      for (let k = 0; k < K; k++) {
        // A row's DP can raise the bound by about one token step at its price: skip the cheap ones.
        const impact = (Math.abs(bestY[k]!) * st.tokenStep[k]!) / st.kvLengths[k]!;
        if (k === budgetRow || !(impact > 0.5 * options.relGap * Math.abs(best?.z ?? bestBound))) continue;
        const yk = Float64Array.from(bestY);
        yk[k] = 0;
        const constant = setCosts(yk, bounds.weights);
        const n = st.kvLengths[k]!;
        const lo =
          bounds.kvLower[k]! > Number.NEGATIVE_INFINITY ? Math.ceil(bounds.kvLower[k]! * n - 1e-6) : 0;
        const up = Math.floor(bounds.kvUpper[k]! * n + 1e-6);
        const extra = BudgetDp.solve(st, this.pricer!, this.opts, slotCost, capCost, k, lo, up);
        if (extra === undefined || !Number.isFinite(extra.bound)) continue;
        bestBound = Math.max(bestBound, extra.bound + constant);
        extraDps.push({ k, dp: extra, y: yk, constant });
      }
    }
    if (within()) return done("budget-dp");

    // Rounding with tightened rows: the LP with some slack kept back rounds to plans that
    // fit the real rows; try a few margins while the rounding is short of the gap.
    for (const margin of [0.003, 0.01, 0.03]) {
      if (within()) break;
      const tightUpper = Float64Array.from(sideUpper, (v, i) => {
        if (!Number.isFinite(v)) return v;
        const width = i < K ? margin * 0.1 : margin;
        return v - width * Math.abs(v);
      });
      master.setBounds(sideLower, tightUpper);
      let res = master.solve(this.remaining(options.deadline));
      for (let round = 0; round < 20; round++) {
        if (res.status !== this.highs.constants.modelStatus.optimal) break;
        setCosts(res.dual, weights);
        const fresh: Pattern[] = [];
        for (let u = 0; u < units; u++) {
          const v = this.pricer!.price(u, this.opts, slotCost, capCost, pattern);
          if (v - res.dual[K + m + u]! < -LP_TOLERANCE * Math.max(1, Math.abs(v)))
            fresh.push(makePattern(st, u, pattern));
        }
        if (master.add(fresh) === 0) break;
        res = master.solve(this.remaining(options.deadline));
      }
      master.setBounds(sideLower, sideUpper);
      if (res.status !== this.highs.constants.modelStatus.optimal || res.artificial > LP_TOLERANCE) continue;
      candidates.splice(
        0,
        units,
        ...master.unitColumns.map((cols) => cols.map((c) => master.patterns[c - master.firstPattern]!)),
      );
      const start = new Int32Array(units);
      for (let u = 0; u < units; u++) {
        const cols = master.unitColumns[u]!;
        let top = 0;
        for (let i = 1; i < cols.length; i++) if (res.x[cols[i]!]! > res.x[cols[top]!]!) top = i;
        start[u] = top;
      }
      repairFrom(start);
    }
    if (within()) return done("lp-rounding");

    // The MIP over the generated columns: a heuristic for a better plan (and so a narrower
    // core). With the budget DP's fixing tests a narrow core is tried first (see
    // NARROW_CORE); this MIP only runs when that core is too large.
    let masterMipRun = false;
    const masterMip = (): boolean => {
      masterMipRun = true;
      const masterPatterns = master.unitColumns.map((cols) =>
        cols.map((c) => master.patterns[c - master.firstPattern]!),
      );
      const rmip = solvePatternMip(this.highs, st, masterPatterns, bounds, {
        relGap: options.relGap,
        timeLimit: this.remaining(options.deadline),
        maxNodes: options.proofNodes,
        start: best?.assign,
      });
      stats.mipVariables = rmip.variables;
      if (rmip.assign !== undefined) consider(rmip.assign);
      return within();
    };
    if ((dp === undefined || best === undefined) && masterMip()) return done("master-mip");

    // Reduced-cost fixing. For any solution x, z(x) ≥ L + Σ_u δ_u(x), where L is the
    // bound (Lagrangian, or the budget DP's) and δ_u ≥ 0 the excess of unit u's choice
    // over the best it can do there. A solution better than L + Δ therefore only uses unit
    // choices with δ_u < Δ: the core. Its MIP optimum, if below L + Δ, is the optimum.
    stats.certifiedBy = "core-mip";
    const objective = new Float64Array(slots * R);
    for (let j = 0; j < m; j++) {
      const w = bounds.weights[j]!;
      if (w === 0) continue;
      const table = st.nloss[j]!;
      for (let i = 0; i < objective.length; i++) objective[i]! += w * table[i]!;
    }
    const guarded = st.nloss.filter((_, j) => bounds.lossUpper[j]! < Number.POSITIVE_INFINITY);
    const dominance = st.maxRulesPerLayer === undefined;
    // Option-level excesses under the Lagrangian multipliers, for the compact fallback.
    setCosts(bestY, bounds.weights);
    const delta = new Float64Array(this.opts.rule.length);
    for (let u = 0; u < units; u++) this.pricer!.deltas(u, this.opts, slotCost, capCost, delta);
    let maxDelta = 0;
    for (const d of delta) maxDelta = Math.max(maxDelta, d);
    let lagrangianBound = setCosts(bestY, bounds.weights);
    for (let u = 0; u < units; u++)
      lagrangianBound += this.pricer!.price(u, this.opts, slotCost, capCost, pattern);
    if (!Number.isFinite(bestBound)) bestBound = Math.min(lagrangianBound, best?.z ?? lagrangianBound);
    const fullSpan = (b: { z: number }) =>
      Math.max(b.z - bestBound - 0.5 * options.relGap * Math.abs(b.z), 1e-12);
    let narrow = !masterMipRun;
    let span =
      best !== undefined
        ? fullSpan(best) * (narrow ? NARROW_CORE : 1)
        : Math.max(options.relGap * Math.abs(bestBound), 1e-9) * 10;
    const keepBest = (): SessionResult => {
      const b = best!;
      const gap = relativeGap(b.z, bestBound);
      return {
        status: gap <= options.relGap ? "optimal" : "feasible",
        assign: b.assign,
        evaluation: b.e,
        objective: b.z,
        bound: Math.min(b.z, bestBound),
        gap,
        stats,
      };
    };
    for (let coreRound = 0, narrowRounds = 0; ; coreRound++) {
      const limit = span * (1 + 1e-9) + 1e-12;
      // Option-level test (Lagrangian): is everything in the core?
      const whole =
        bestBound + limit >= lagrangianBound + maxDelta || coreRound - narrowRounds >= MAX_CORE_ROUNDS;
      let res: CompactResult | undefined;
      if (!whole) {
        const core: Pattern[][] = Array.from({ length: units }, () => []);
        let room = MAX_CORE_PATTERNS;
        const collect = (u: number, finalLimit: Float64Array | undefined, slack: number) => {
          if (room < 0) return;
          const list = core[u]!;
          const ok = this.pricer!.core(
            u,
            this.opts,
            slotCost,
            capCost,
            objective,
            guarded,
            slack,
            room,
            dominance,
            (rules) => {
              list.push(makePattern(st, u, rules));
            },
            finalLimit,
          );
          room -= list.length;
          if (!ok) room = -1;
        };
        if (dp !== undefined) {
          // Every other row's DP has its own test; a pattern must pass all of them.
          const tests = extraDps.map((x) => {
            const perUnit: Map<number, number>[] = new Array(units);
            const stateTokens = st.states!.tokens;
            x.dp.limits(bestBound + limit - x.constant - x.dp.bound, (u, lim) => {
              const map = new Map<number, number>();
              for (let c = 0; c < C; c++)
                if (lim[c]! > Number.NEGATIVE_INFINITY) map.set(stateTokens[c * K + x.k]!, lim[c]!);
              perUnit[u] = map;
            });
            return { ...x, perUnit };
          });
          const passes = (p: Pattern): boolean => {
            for (const t of tests) {
              const lim = t.perUnit[p.unit]!.get(p.tokens[t.k]!);
              if (lim === undefined) return false;
              let v = 0;
              for (let j = 0; j < m; j++) v += (bounds.weights[j]! - t.y[K + j]!) * p.nloss[j]!;
              for (let k = 0; k < K; k++) v -= (t.y[k]! * p.tokens[k]!) / st.kvLengths[k]!;
              if (v > lim + 1e-12 * Math.max(1, Math.abs(lim))) return false;
            }
            return true;
          };
          setCosts(dpY, bounds.weights);
          // Thresholds relative to the DP's own value, which excludes the other rows' terms.
          dp.limits(bestBound + limit - dpConstant - dp.bound, (u, finalLimit) => {
            collect(u, finalLimit, 0);
            if (tests.length > 0) core[u] = core[u]!.filter(passes);
            // A canonical column order: HiGHS' path (and time) depends on it, the core's content does not.
            core[u]!.sort(byRules);
          });
        } else {
          setCosts(bestY, bounds.weights);
          for (let u = 0; u < units; u++) {
            collect(u, undefined, bestBound + limit - lagrangianBound);
            core[u]!.sort(byRules);
          }
        }
        if (room >= 0) {
          res = solvePatternMip(this.highs, st, core, bounds, {
            relGap: options.relGap,
            timeLimit: this.remaining(options.deadline),
            maxNodes: options.proofNodes,
            start: best?.assign,
            restarts: false,
            // A narrow round that finds a plan it cannot prove (one that needs a core well beyond
            // this one) stops there: the wider core it needs is solved next, from that plan.
            ...(narrow && best !== undefined
              ? {
                  stopBetween: [
                    (bestBound + (1 + NARROW_WIDEN) * span) / (1 - 0.5 * options.relGap),
                    best.z - 1e-9 * Math.abs(best.z),
                  ] as const,
                }
              : {}),
          });
        } else if (!masterMipRun) {
          // The narrow core is too large already: look for a better plan on the master's
          // columns, then go on with the core that plan needs.
          if (masterMip()) return done("master-mip");
          narrow = false;
          span = fullSpan(best!);
          narrowRounds++;
          continue;
        } else if (best !== undefined) {
          // Too many unit choices for the pattern MIP. Near the bound the compact MIP over the
          // options left by the Lagrangian test is still small enough to prove; far from it,
          // keep the best plan and its gap.
          if (best.z - bestBound > COMPACT_CORE_GAP * Math.abs(best.z)) return keepBest();
        }
      }
      if (res === undefined) {
        // Too many patterns (or everything): the compact model over the options left.
        const keep = bestBound + limit - lagrangianBound;
        const core = restrictOptions(this.opts, slots, (o) => whole || delta[o]! <= keep);
        res = solveCompact(this.highs, st, core, bounds, {
          relGap: options.relGap,
          timeLimit: this.remaining(options.deadline),
          ...(best === undefined ? {} : { maxNodes: options.proofNodes }),
          start: best !== undefined && inOptions(core, best.assign) ? best.assign : undefined,
        });
      }
      stats.mipVariables = res.variables;
      // Solutions outside the core are worth at least bestBound + span.
      const outside = whole ? Number.POSITIVE_INFINITY : bestBound + span;
      // No plan at all yet and the MIP stopped early: the compact MIP gets the whole deadline.
      if (best === undefined && res.assign === undefined && res.status === "limit") return undefined;
      const result = this.finish(res, best, bestBound, bounds, feasible, stats, options, outside);
      if (result.status === "infeasible") {
        if (whole) return result;
        span *= 10;
        continue;
      }
      if (result.gap > options.relGap && res.stopped === true) {
        best = { assign: result.assign!, e: result.evaluation!, z: result.objective };
        bestBound = Math.max(bestBound, result.bound);
        narrow = false;
        span = fullSpan(best);
        narrowRounds++;
        continue;
      }
      // Done: proven, or everything was in the core, or the work limit was reached.
      if (result.gap <= options.relGap || whole || res.status === "limit") return result;
      best = { assign: result.assign!, e: result.evaluation!, z: result.objective };
      if (narrow) {
        // Solved to optimality over the core: every plan costs at least min(its bound,
        // bestBound + span), which `finish` reported. The next core reaches twice as far.
        const reach = bestBound + 2 * span;
        bestBound = Math.max(bestBound, result.bound);
        span = Math.min(reach - bestBound, fullSpan(best));
        if (span >= fullSpan(best)) narrow = false;
        narrowRounds++;
        continue;
      }
      // The narrowest core that can prove the new plan.
      span = Math.max(span * 2, best.z - bestBound - 0.5 * options.relGap * Math.abs(best.z));
    }
  }
}

/** Lexicographic order of two patterns' rules. */
function byRules(a: Pattern, b: Pattern): number {
  for (let i = 0; i < a.rules.length; i++) {
    const d = a.rules[i]! - b.rules[i]!;
    if (d !== 0) return d;
  }
  return 0;
}

export function relativeGap(objective: number, bound: number): number {
  const diff = objective - bound;
  if (!(diff > 0)) return 0;
  return diff / Math.max(Math.abs(objective), 1e-12);
}

function restrictOptions(opts: SlotOptions, slots: number, keep: (o: number) => boolean): SlotOptions {
  const start = new Int32Array(slots + 1);
  const rule: number[] = [];
  for (let s = 0; s < slots; s++) {
    for (let o = opts.start[s]!; o < opts.start[s + 1]!; o++) if (keep(o)) rule.push(opts.rule[o]!);
    start[s + 1] = rule.length;
  }
  return { start, rule: Int32Array.from(rule) };
}

function inOptions(opts: SlotOptions, assign: Int32Array): boolean {
  for (let s = 0; s < assign.length; s++) {
    let found = false;
    for (let o = opts.start[s]!; o < opts.start[s + 1]! && !found; o++) found = opts.rule[o] === assign[s];
    if (!found) return false;
  }
  return true;
}
