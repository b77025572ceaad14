/**
 * Choosing one plan among the validated Pareto candidates (DESIGN.md: The optimisation — "validate each
 * candidate … and pick the best").
 *
 * A handful of validation samples measures each candidate's loss with noise: two candidates whose validation
 * losses differ by less than that noise are not told apart by it, and picking the lower one anyway is a coin
 * toss (on moa-nano it chose a plan whose profile loss at 512 tokens was 65% above the best candidate's, on a
 * 0.0006-nat lead at 2048).
 * The rule:
 *
 * 1. Only candidates within the budget compete.
 * 2. A candidate's score is its mean excess loss over the dense model's on the validation samples (every
 *    sample, at every validation length, counts once).
 * 3. The candidates whose score is within the noise of the lowest — at most `max(tolerance, z · SE)` above it,
 *    SE the standard error of the per-sample differences to the lowest-scoring candidate, and never more than
 *    `cap` above it — are tied. The cap exists because the spread of validation differences is mostly one
 *    sample where a plan lost the fact the answer needs: that is the failure validation is there to catch, not
 *    noise (on an H100, moa-tiny at 0.5: a candidate 0.16 nats behind on the mean, all of it from one 8k
 *    retrieval sample, counted as tied by SE alone, was chosen, and lost 0.2 of dense's lines and passkey
 *    accuracy at 4k).
 * 4. Among the tied, the one with the least profile regret wins: the largest ratio, over the profiled lengths, of
 *    its rule loss to the least rule loss any competing candidate has there. The profile averages many more
 *    samples than validation does, at every profiled length, so within the validation noise it is the better
 *    evidence, and the minimax ratio prefers a plan near the best at every length to one that wins one length
 *    and loses another. Then the lower score, the lower KV density, the lower index.
 */

export interface SelectionCandidate {
  /** Whether the plan fits the budget (always true without a byte budget). */
  withinBudget: boolean;
  /** Plan loss − dense loss of each validation sample, in the same sample order for every candidate. */
  excess: readonly number[];
  /** The solver's rule loss per profiled length (keys: lengths). */
  profileLoss: Readonly<Record<string, number>>;
  /** KV density (at the validation length), for the last tie-break. */
  kvDensity: number;
}

export interface SelectionOptions {
  /** Nats per answer token below which a score difference never counts (default {@link DEFAULT_TIE_NATS}). */
  tolerance?: number;
  /** Standard errors of the per-sample difference that count as noise (default {@link DEFAULT_TIE_Z}). */
  z?: number;
  /** Nats per answer token above which a score difference is never a tie (default {@link DEFAULT_TIE_CAP_NATS}). */
  cap?: number;
}

/** Score differences up to this many nats per answer token are ties, however many samples agree. */
export const DEFAULT_TIE_NATS = 0.01;
/** A score difference within this many standard errors of the per-sample differences is a tie. */
export const DEFAULT_TIE_Z = 1;
/** Score differences above this many nats per answer token are never ties, whatever the spread. */
export const DEFAULT_TIE_CAP_NATS = 0.05;

export interface Selection {
  /** Index of the chosen candidate, or −1 when none is within the budget. */
  chosen: number;
  /** Index of the lowest-scoring candidate. */
  lowest: number;
  /** Candidates tied with the lowest (it included), in index order. */
  tied: number[];
  /** Mean excess loss per candidate (NaN for those over the budget). */
  score: number[];
  /** Profile regret per candidate (NaN for those over the budget). */
  regret: number[];
  /** One sentence: why this candidate. */
  reason: string;
}

function mean(values: readonly number[]): number {
  return values.reduce((s, v) => s + v, 0) / values.length;
}

/** Standard error of the mean of `values` (0 for fewer than two). */
function standardError(values: readonly number[]): number {
  if (values.length < 2) return 0;
  const m = mean(values);
  const variance = values.reduce((s, v) => s + (v - m) ** 2, 0) / (values.length - 1);
  return Math.sqrt(variance / values.length);
}

/** Applies the selection rule of this module to `candidates`. */
export function selectCandidate(
  candidates: readonly SelectionCandidate[],
  options: SelectionOptions = {},
): Selection {
  const tolerance = options.tolerance ?? DEFAULT_TIE_NATS;
  const z = options.z ?? DEFAULT_TIE_Z;
  const cap = Math.max(options.cap ?? DEFAULT_TIE_CAP_NATS, tolerance);
  const eligible = candidates.map((c, i) => (c.withinBudget ? i : -1)).filter((i) => i >= 0);
  const score = candidates.map((c) => (c.withinBudget ? mean(c.excess) : Number.NaN));
  const regret = candidates.map(() => Number.NaN);
  if (eligible.length === 0) {
    return { chosen: -1, lowest: -1, tied: [], score, regret, reason: "no candidate is within the budget" };
  }
  const samples = candidates[eligible[0]!]!.excess.length;
  for (const i of eligible) {
    if (candidates[i]!.excess.length !== samples) {
      throw new RangeError(
        `selectCandidate: candidate ${i} has ${candidates[i]!.excess.length} validation samples, candidate ${eligible[0]} has ${samples}`,
      );
    }
  }
  let lowest = eligible[0]!;
  for (const i of eligible) {
    if (
      score[i]! < score[lowest]! ||
      (score[i] === score[lowest] && candidates[i]!.kvDensity < candidates[lowest]!.kvDensity)
    ) {
      lowest = i;
    }
  }
  const best = candidates[lowest]!;
  const tied = eligible.filter((i) => {
    if (i === lowest) return true;
    const diff = candidates[i]!.excess.map((e, s) => e - best.excess[s]!);
    return mean(diff) <= Math.min(cap, Math.max(tolerance, z * standardError(diff)));
  });
  const lengths = Object.keys(best.profileLoss);
  const least = new Map(
    lengths.map((n) => [
      n,
      Math.min(...eligible.map((i) => candidates[i]!.profileLoss[n] ?? Number.POSITIVE_INFINITY)),
    ]),
  );
  for (const i of eligible) {
    const ratios = lengths.map((n) => {
      const floor = least.get(n)!;
      const loss = candidates[i]!.profileLoss[n] ?? Number.POSITIVE_INFINITY;
      return floor > 0 ? loss / floor : loss > 0 ? Number.POSITIVE_INFINITY : 1;
    });
    regret[i] = ratios.length === 0 ? 1 : Math.max(...ratios);
  }
  let chosen = tied[0]!;
  for (const i of tied) {
    const a = candidates[i]!;
    const b = candidates[chosen]!;
    if (
      regret[i]! < regret[chosen]! ||
      (regret[i] === regret[chosen] &&
        (score[i]! < score[chosen]! || (score[i] === score[chosen] && a.kvDensity < b.kvDensity)))
    ) {
      chosen = i;
    }
  }
  const reason =
    tied.length === 1
      ? `lowest validation loss, ahead of every other candidate by more than the noise (max(${tolerance} nats, ${z} SE), at most ${cap} nats)`
      : chosen === lowest
        ? `lowest validation loss; ${tied.length - 1} other candidate(s) within the noise, and it also has the least profile regret (${regret[chosen]!.toFixed(3)})`
        : `within the noise of the lowest validation loss (candidate ${lowest}) and the least profile regret among the ${tied.length} tied (${regret[chosen]!.toFixed(3)} against ${regret[lowest]!.toFixed(3)})`;
  return { chosen, lowest, tied, score, regret, reason };
}
