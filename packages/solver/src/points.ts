import { Worker } from "node:worker_threads";
import { MoaError } from "@moa/core";
import type { Highs } from "highs";
import type { MipStructure, MipTargets } from "./problem.js";
import { MipSession, type SessionResult, type SessionState } from "./session.js";
import type { Structure } from "./structure.js";
import { workerSource } from "./workerSource.js";

export interface PointWorkerInput {
  structure: MipStructure;
}

/** A batch of points for a worker: it takes indices from `next` until they run out. */
export interface PointBatch {
  state: SessionState;
  tasks: MipTargets[];
  /** Shared by every thread of the batch: `Atomics.add(next, 0, 1)` claims the next point. */
  next: Int32Array;
  relGap: number;
  proofNodes: number;
  /** Epoch milliseconds (`performance.timeOrigin + performance.now()`), Infinity for none. */
  deadline: number;
}

export type PointReply =
  | { type: "result"; id: number; result: SessionResult }
  | { type: "error"; error: { message: string; code?: string } }
  | { type: "idle" };

export interface PointOptions {
  relGap: number;
  proofNodes: number;
  /** `performance.now()` deadline of this thread, Infinity for none. */
  deadline: number;
}

/** Solves the point at `index` in a session restored from `state`. */
export function solvePoint(
  highs: Highs,
  st: Structure,
  state: SessionState,
  targets: MipTargets,
  options: PointOptions,
): SessionResult {
  const session = new MipSession(highs, st, state);
  try {
    return session.solve(targets, options);
  } finally {
    session.dispose();
  }
}

/**
 * Solves independent points of a front, each in a session restored from the same state
 * (the one after the anchors): a point's plan depends only on that state and its targets,
 * never on which thread solved it or what that thread solved before, so the front is the
 * same with any number of threads. This thread and `threads − 1` workers (started at
 * construction, so their start-up overlaps the anchors) claim points from a shared counter.
 */
export class PointPool {
  private readonly workers: Worker[] = [];
  /** Workers that have exited: their points fall to this thread. */
  private readonly gone = new Set<Worker>();

  constructor(
    private readonly highs: Highs,
    private readonly st: Structure,
    structure: MipStructure,
    threads: number,
  ) {
    if (threads <= 1) return;
    const { source, eval: evaluate } = workerSource("pointWorker");
    const input: PointWorkerInput = { structure };
    for (let i = 1; i < threads; i++) {
      const worker = new Worker(source, { workerData: input, eval: evaluate });
      // A worker that fails (to start, say) must not crash the process: it is only missed.
      worker.on("error", () => {});
      worker.once("exit", () => this.gone.add(worker));
      this.workers.push(worker);
    }
  }

  /**
   * Solves every task from `state`; `onResult` fires as each finishes (any order), results
   * come back in task order. A point whose worker exited before answering is solved here
   * (with the same result); an error a solve raised, in any thread, is thrown.
   */
  async solve(
    state: SessionState,
    tasks: readonly MipTargets[],
    options: PointOptions,
    onResult: (index: number, result: SessionResult) => void,
  ): Promise<SessionResult[]> {
    const results: SessionResult[] = new Array(tasks.length);
    const next = new Int32Array(new SharedArrayBuffer(4));
    const batch: PointBatch = {
      state,
      tasks: [...tasks],
      next,
      relGap: options.relGap,
      proofNodes: options.proofNodes,
      deadline: performance.timeOrigin + options.deadline,
    };
    let failure: Error | undefined;
    // Each worker answers with its results, then "idle" once the counter has run out.
    const finished = this.workers
      .filter((worker) => !this.gone.has(worker))
      .map(
        (worker) =>
          new Promise<void>((resolve) => {
            const stop = (error?: Error) => {
              failure ??= error;
              worker.removeAllListeners("message");
              worker.off("exit", exited);
              // Claim every remaining point so that this thread stops too.
              if (error !== undefined) Atomics.store(next, 0, tasks.length);
              resolve();
            };
            worker.on("message", (reply: PointReply) => {
              if (reply.type === "result") {
                results[reply.id] = reply.result;
                onResult(reply.id, reply.result);
              } else if (reply.type === "error") {
                const { message, code } = reply.error;
                stop(code !== undefined ? new MoaError(code, message) : new Error(message));
              } else stop();
            });
            // Exited before answering: its unanswered points are solved here afterwards.
            const exited = () => stop();
            worker.once("exit", exited);
            worker.postMessage(batch);
          }),
      );
    const solveHere = (id: number) => {
      results[id] = solvePoint(this.highs, this.st, state, tasks[id]!, options);
      onResult(id, results[id]!);
    };
    try {
      for (let id = Atomics.add(next, 0, 1); id < tasks.length; id = Atomics.add(next, 0, 1)) solveHere(id);
    } catch (error) {
      failure ??= error as Error;
      Atomics.store(next, 0, tasks.length);
    }
    await Promise.all(finished);
    if (failure !== undefined) throw failure;
    // Points claimed by a worker that exited before answering.
    for (let id = 0; id < tasks.length; id++) if (results[id] === undefined) solveHere(id);
    return results;
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
