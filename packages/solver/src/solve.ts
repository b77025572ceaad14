import { MoaError } from "@moa/core";
import { highsRuntime } from "./highs.js";
import { checkStructure, checkTargets, type MipProblem } from "./problem.js";
import { MipSession, type SolveStats } from "./session.js";
import { buildStructure, headRules } from "./structure.js";

export interface MipOptions {
  /** Relative optimality gap to prove: (objective − bound) / |objective| (default 1e-4, HiGHS' own default). */
  relGap?: number;
  /** Wall-clock limit in seconds; past it the solve throws `MoaError` `E_TIMEOUT`. */
  timeLimitSeconds?: number;
  /**
   * Branch-and-bound nodes HiGHS may spend on each MIP that proves the gap (default 5000). A
   * work limit, not seconds, so the answer does not depend on the machine or its load. The
   * LP bound of these problems is usually within 1e-4 of the optimum and no MIP is needed;
   * when it is not and the nodes run out, the best plan is returned with the gap it proved
   * (`status: "feasible"`).
   */
  proofNodes?: number;
  /** Skip the decomposition and hand HiGHS the whole compact MIP (slow; a second implementation for tests). */
  compactOnly?: boolean;
}

export interface MipSolution {
  /**
   * `optimal`: proven within `relGap`. `feasible`: the proof stopped at `proofNodes`;
   * `gap` says how far it got. `infeasible`: proven (no plan satisfies the constraints).
   */
  status: "optimal" | "feasible" | "infeasible";
  /** Rule index (into `table.rules`) per (layer, query head), row-major; absent when infeasible. */
  headRules: Int32Array | undefined;
  /** `Σ_j weights[j] · loss[j]`. */
  objective: number;
  /** Proven lower bound on the optimal objective. */
  bound: number;
  /** `(objective − bound) / |objective|`, ≤ `relGap`. */
  gap: number;
  /** Summed rule loss per loss length (raw, as in the table). */
  loss: number[];
  /** Mean KV density over (layer, KV head) per KV length, counted exactly. */
  kvDensity: number[];
  stats: SolveStats;
}

export const DEFAULT_REL_GAP = 1e-4;
export const DEFAULT_PROOF_NODES = 5000;

/** Solves one MIP (DESIGN.md: The optimisation) to a proven relative gap. */
export async function solveMip(problem: MipProblem, options: MipOptions = {}): Promise<MipSolution> {
  checkStructure(problem);
  checkTargets(problem.table, problem);
  const highs = await highsRuntime();
  const st = buildStructure(problem);
  // HiGHS' tolerances are absolute: solve with the objective scaled to about 1 (its worst case over all
  // plans), so weights of any magnitude give the same plan, then report the bound in the caller's units.
  const scale = objectiveScale(problem);
  const scaled: MipProblem = { ...problem, weights: problem.weights.map((w) => w / scale) };
  const session = new MipSession(highs, st);
  try {
    const result = session.solve(scaled, {
      relGap: options.relGap ?? DEFAULT_REL_GAP,
      deadline:
        options.timeLimitSeconds === undefined
          ? Number.POSITIVE_INFINITY
          : performance.now() + options.timeLimitSeconds * 1000,
      compactOnly: options.compactOnly ?? false,
      proofNodes: options.proofNodes ?? DEFAULT_PROOF_NODES,
    });
    return toSolution(session, { ...result, bound: result.bound * scale }, problem.weights);
  } catch (error) {
    if (error instanceof MoaError) throw error;
    throw new MoaError("E_SOLVER", `solveMip: HiGHS failed: ${(error as Error).message ?? String(error)}`, {
      field: "highs",
    });
  } finally {
    session.dispose();
  }
}

/** Σ_j weights[j] · Σ_heads max_r loss(h, r, n_j): the objective of the worst plan, 1 when that is 0. */
function objectiveScale(problem: MipProblem): number {
  const { table, weights } = problem;
  const rules = table.rules.length;
  let scale = 0;
  table.loss.forEach((loss, j) => {
    let worst = 0;
    for (let h = 0; h * rules < loss.length; h++) {
      let max = 0;
      for (let r = 0; r < rules; r++) max = Math.max(max, loss[h * rules + r]!);
      worst += max;
    }
    scale += weights[j]! * worst;
  });
  return scale > 0 && Number.isFinite(scale) ? scale : 1;
}

export function toSolution(
  session: MipSession,
  result: ReturnType<MipSession["solve"]>,
  weights: readonly number[],
): MipSolution {
  const st = session.st;
  if (result.assign === undefined || result.evaluation === undefined) {
    return {
      status: "infeasible",
      headRules: undefined,
      objective: Number.POSITIVE_INFINITY,
      bound: Number.POSITIVE_INFINITY,
      gap: 0,
      loss: [],
      kvDensity: [],
      stats: result.stats,
    };
  }
  const heads = headRules(st, result.assign);
  // Raw losses recomputed from the table (not scaled back) so they are exact sums.
  const loss = st.table.loss.map((table) => {
    let sum = 0;
    for (let h = 0; h < heads.length; h++) sum += table[h * st.R + heads[h]!]!;
    return sum;
  });
  const objective = loss.reduce((acc, l, j) => acc + weights[j]! * l, 0);
  return {
    status: result.status === "feasible" ? "feasible" : "optimal",
    headRules: heads,
    objective,
    bound: Math.min(result.bound, objective),
    gap: result.gap,
    loss,
    kvDensity: Array.from(result.evaluation.tokens, (t, k) => t / (st.kvLengths[k]! * st.units)),
    stats: result.stats,
  };
}
