import type { Highs, Model } from "highs";
import type { Structure } from "./structure.js";

/** One unit's choice: a rule per slot, with its normalised losses and its cache per KV length. */
export interface Pattern {
  unit: number;
  rules: Int32Array;
  nloss: Float64Array;
  tokens: Int32Array;
}

export function patternKey(p: Pattern): string {
  return `${p.unit}:${p.rules.join(",")}`;
}

export function makePattern(st: Structure, unit: number, rules: Int32Array): Pattern {
  const { R, K, m, tok } = st;
  const nloss = new Float64Array(m);
  const tokens = new Int32Array(K);
  for (let i = 0; i < rules.length; i++) {
    const s = unit * st.slotsPerUnit + i;
    const r = rules[i]!;
    for (let j = 0; j < m; j++) nloss[j]! += st.nloss[j]![s * R + r]!;
    for (let k = 0; k < K; k++) tokens[k] = Math.max(tokens[k]!, tok[r * K + k]!);
  }
  return { unit, rules: Int32Array.from(rules), nloss, tokens };
}

export interface MasterResult {
  status: number;
  objective: number;
  /** Column values; patterns start at {@link Master.firstPattern}. */
  x: Float64Array;
  /** Row duals: KV rows, loss rows, then one convexity row per unit. */
  dual: Float64Array;
  /** Σ of the artificial columns (0 when the restricted master is feasible). */
  artificial: number;
}

/**
 * The restricted master LP of the Dantzig–Wolfe decomposition: one convexity row per unit,
 * the KV-density rows (Σ_units tokens/n, one per KV length) and the loss rows
 * (Σ normalised loss, one per loss length), columns = unit patterns generated so far plus
 * two big-M artificial columns per side row so the LP is always feasible. It lives in one
 * persistent HiGHS model so every re-solve starts from the previous basis.
 */
export class Master {
  readonly model: Model;
  readonly st: Structure;
  readonly sideRows: number;
  readonly firstPattern: number;
  readonly patterns: Pattern[] = [];
  readonly unitColumns: number[][];
  private readonly keys = new Map<string, number>();
  private weights: Float64Array;
  private bigM: number;

  constructor(highs: Highs, st: Structure) {
    this.st = st;
    const { K, m, units } = st;
    this.sideRows = K + m;
    this.firstPattern = 2 * this.sideRows;
    this.unitColumns = Array.from({ length: units }, () => []);
    this.weights = new Float64Array(m);
    this.bigM = 1e4;
    const numRows = this.sideRows + units;
    const numCols = this.firstPattern;
    const starts = new Int32Array(numCols + 1);
    const indices = new Int32Array(numCols);
    const values = new Float64Array(numCols);
    for (let i = 0; i < this.sideRows; i++) {
      indices[2 * i] = i;
      values[2 * i] = 1;
      indices[2 * i + 1] = i;
      values[2 * i + 1] = -1;
    }
    for (let c = 0; c <= numCols; c++) starts[c] = c;
    const rowLower = new Float64Array(numRows).fill(Number.NEGATIVE_INFINITY);
    const rowUpper = new Float64Array(numRows).fill(Number.POSITIVE_INFINITY);
    for (let u = 0; u < units; u++) {
      rowLower[this.sideRows + u] = 1;
      rowUpper[this.sideRows + u] = 1;
    }
    this.model = highs.createModel({
      numCols,
      numRows,
      colCost: new Float64Array(numCols).fill(this.bigM),
      colLower: new Float64Array(numCols),
      colUpper: new Float64Array(numCols).fill(Number.POSITIVE_INFINITY),
      rowLower,
      rowUpper,
      matrix: { format: "csc", numRows, numCols, starts, indices, values },
    });
    this.model.options.set({ output_flag: false, small_matrix_value: 1e-12, random_seed: 0 });
  }

  get penalty(): number {
    return this.bigM;
  }

  /** Side-row bounds: KV rows in Σ tokens/n, loss rows in Σ normalised loss. */
  setBounds(lower: Float64Array, upper: Float64Array): void {
    this.model.changeRowsBounds({ kind: "range", from: 0, to: this.sideRows - 1 }, lower, upper);
  }

  private patternCost(p: Pattern): number {
    let c = 0;
    for (let j = 0; j < this.st.m; j++) c += this.weights[j]! * p.nloss[j]!;
    return c;
  }

  setWeights(weights: Float64Array): void {
    this.weights = Float64Array.from(weights);
    if (this.patterns.length === 0) return;
    const costs = Float64Array.from(this.patterns, (p) => this.patternCost(p));
    this.model.changeColsCost(
      { kind: "range", from: this.firstPattern, to: this.firstPattern + this.patterns.length - 1 },
      costs,
    );
  }

  setPenalty(bigM: number): void {
    this.bigM = bigM;
    this.model.changeColsCost(
      { kind: "range", from: 0, to: this.firstPattern - 1 },
      new Float64Array(this.firstPattern).fill(bigM),
    );
  }

  has(p: Pattern): boolean {
    return this.keys.has(patternKey(p));
  }

  /** Adds the patterns not already present; returns how many were added. */
  add(patterns: readonly Pattern[]): number {
    const fresh: Pattern[] = [];
    for (const p of patterns) {
      const key = patternKey(p);
      if (this.keys.has(key)) continue;
      this.keys.set(key, this.firstPattern + this.patterns.length + fresh.length);
      fresh.push(p);
    }
    if (fresh.length === 0) return 0;
    const { K, m, kvLengths } = this.st;
    const starts = new Int32Array(fresh.length + 1);
    const indices: number[] = [];
    const values: number[] = [];
    fresh.forEach((p, c) => {
      for (let k = 0; k < K; k++) {
        if (p.tokens[k]! !== 0) {
          indices.push(k);
          values.push(p.tokens[k]! / kvLengths[k]!);
        }
      }
      for (let j = 0; j < m; j++) {
        if (p.nloss[j]! !== 0) {
          indices.push(K + j);
          values.push(p.nloss[j]!);
        }
      }
      indices.push(this.sideRows + p.unit);
      values.push(1);
      starts[c + 1] = indices.length;
    });
    this.model.addCols({
      cost: Float64Array.from(fresh, (p) => this.patternCost(p)),
      lower: new Float64Array(fresh.length),
      upper: new Float64Array(fresh.length).fill(Number.POSITIVE_INFINITY),
      matrix: {
        format: "csc",
        numRows: this.sideRows + this.st.units,
        numCols: fresh.length,
        starts,
        indices: Int32Array.from(indices),
        values: Float64Array.from(values),
      },
    });
    for (const p of fresh) {
      this.unitColumns[p.unit]!.push(this.firstPattern + this.patterns.length);
      this.patterns.push(p);
    }
    return fresh.length;
  }

  solve(timeLimit: number): MasterResult {
    this.model.options.set("time_limit", Math.max(timeLimit, 0.001));
    const { modelStatus } = this.model.run();
    const solution = this.model.getSolution();
    let artificial = 0;
    for (let c = 0; c < this.firstPattern; c++) artificial += solution.colValue[c]!;
    return {
      status: modelStatus,
      objective: this.model.getObjectiveValue(),
      x: solution.colValue,
      dual: solution.rowDual,
      artificial,
    };
  }

  dispose(): void {
    this.model.dispose();
  }
}
