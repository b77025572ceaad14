import { highsRuntime } from "./highs.js";
import { checkStructure, checkTargets, type MipProblem } from "./problem.js";
import { MipSession, type SolveStats } from "./session.js";
import { buildStructure, headRules } from "./structure.js";

export interface MipOptions {
  /** Relative optimality gap to prove: (objective − bound) / |objective| (default 1e-6). */
  relGap?: number;
  /** Wall-clock limit in seconds; past it the solve throws `MoaError` `E_TIMEOUT`. */
  timeLimitSeconds?: number;
  /** Skip the decomposition and hand HiGHS the whole compact MIP (slow; a second implementation for tests). */
  compactOnly?: boolean;
}

export interface MipSolution {
  status: "optimal" | "infeasible";
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

export const DEFAULT_REL_GAP = 1e-6;

/** Solves one MIP (DESIGN.md: The optimisation) to a proven relative gap. */
export async function solveMip(problem: MipProblem, options: MipOptions = {}): Promise<MipSolution> {
  checkStructure(problem);
  checkTargets(problem.table, problem);
  const highs = await highsRuntime();
  const st = buildStructure(problem);
  const session = new MipSession(highs, st);
  try {
    const result = session.solve(problem, {
      relGap: options.relGap ?? DEFAULT_REL_GAP,
      deadline:
        options.timeLimitSeconds === undefined
          ? Number.POSITIVE_INFINITY
          : performance.now() + options.timeLimitSeconds * 1000,
      compactOnly: options.compactOnly ?? false,
    });
    return toSolution(session, result, problem.weights);
  } finally {
    session.dispose();
  }
}

export function toSolution(
  session: MipSession,
  result: ReturnType<MipSession["solve"]>,
  weights: readonly number[],
): MipSolution {
  const st = session.st;
  if (result.status === "infeasible" || result.assign === undefined || result.evaluation === undefined) {
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
    status: "optimal",
    headRules: heads,
    objective,
    bound: Math.min(result.bound, objective),
    gap: result.gap,
    loss,
    kvDensity: Array.from(result.evaluation.tokens, (t, k) => t / (st.kvLengths[k]! * st.units)),
    stats: result.stats,
  };
}
