/**
 * @moa/solver — Pareto-optimal MoA plans from a profile (DESIGN.md: The optimisation):
 * `optimizePlans` for the front, `solveInWorker` to run it in a worker with an enforced time
 * limit, `solveMip` for one MIP over a `RuleTable`, `greedyPlan` as a baseline.
 */
export { highsVersion } from "./highs.js";
export type { GqaMode, MipProblem, MipStructure, MipTargets } from "./problem.js";
export type { SolveStats } from "./session.js";
export {
  DEFAULT_PROOF_NODES,
  DEFAULT_REL_GAP,
  type MipOptions,
  type MipSolution,
  solveMip,
} from "./solve.js";
export { buildRuleTable, type RuleTable, type RuleTableOptions } from "./table.js";
export {
  type OptimizeOptions,
  optimizePlans,
  type ParetoPoint,
  type ParetoResult,
  type ParetoStats,
  type ProgressEvent,
} from "./pareto.js";
export { solveInWorker } from "./inWorker.js";
export { type GreedyPlan, greedyPlan } from "./greedy.js";
