export { highsVersion } from "./highs.js";
export type { GqaMode, MipProblem, MipStructure, MipTargets } from "./problem.js";
export type { SolveStats } from "./session.js";
export {
  DEFAULT_PROOF_SECONDS,
  DEFAULT_REL_GAP,
  type MipOptions,
  type MipSolution,
  solveMip,
} from "./solve.js";
export { buildRuleTable, type RuleTable, type RuleTableOptions } from "./table.js";
export {
  densityRange,
  type OptimizeOptions,
  optimizePlans,
  type ParetoPoint,
  type ParetoResult,
  type ParetoStats,
  type ProgressEvent,
} from "./pareto.js";
export { solveInWorker } from "./inWorker.js";
export { type GreedyPlan, greedyPlan } from "./greedy.js";
