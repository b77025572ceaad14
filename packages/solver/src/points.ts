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

export interface PointRequest {
  id: number;
  state: SessionState;
  targets: MipTargets;
  relGap: number;
  proofNodes: number;
  /** Epoch milliseconds (`performance.timeOrigin + performance.now()`), Infinity for none. */
  deadline: number;
}

export type PointReply =
  | { type: "result"; id: number; result: SessionResult }
  | { type: "error"; id: number; error: { message: string; code?: string } };

export interface PointOptions {
  relGap: number;
  proofNodes: number;
  /** `performance.now()` deadline of this thread, Infinity for none. */
  deadline: number;
}

/**
 * Solves independent points of a front, each in a session restored from the same state
 * (the one after the anchors): a point's plan depends only on that state and its targets,
 * never on which thread solved it or what that thread solved before, so the front is the
 * same with any number of threads. With `threads > 1` the points go to worker threads,
 * started at construction so their start-up overlaps the anchors.
 */
export class PointPool {
  private readonly workers: Worker[] = [];
  private failure: Error | undefined;

  constructor(
    private readonly highs: Highs,
    private readonly st: Structure,
    structure: MipStructure,
    threads: number,
  ) {
    if (threads <= 1) return;
    const { source, eval: evaluate } = workerSource("pointWorker");
    const input: PointWorkerInput = { structure };
    for (let i = 0; i < threads; i++) {
      const worker = new Worker(source, { workerData: input, eval: evaluate });
      // A worker that dies before it is used must not crash the process; solve() reports it.
      worker.on("error", (error) => {
        this.failure ??= error;
      });
      this.workers.push(worker);
    }
  }

  /** Solves every task from `state`; `onResult` fires as each finishes (any order), results come back in task order. */
  async solve(
    state: SessionState,
    tasks: readonly MipTargets[],
    options: PointOptions,
    onResult: (index: number, result: SessionResult) => void,
  ): Promise<SessionResult[]> {
    const results: SessionResult[] = new Array(tasks.length);
    if (this.workers.length === 0) {
      tasks.forEach((targets, index) => {
        const session = new MipSession(this.highs, this.st, state);
        try {
          results[index] = session.solve(targets, options);
        } finally {
          session.dispose();
        }
        onResult(index, results[index]!);
      });
      return results;
    }
    const deadline = performance.timeOrigin + options.deadline;
    let next = 0;
    await new Promise<void>((resolve, reject) => {
      let pending = tasks.length;
      if (pending === 0) resolve();
      const fail = (error: Error) => {
        for (const w of this.workers) w.removeAllListeners("message");
        reject(error);
      };
      if (this.failure !== undefined) return fail(this.failure);
      const feed = (worker: Worker) => {
        if (next >= tasks.length) return;
        const id = next++;
        const request: PointRequest = { id, state, targets: tasks[id]!, ...options, deadline };
        worker.postMessage(request);
      };
      for (const worker of this.workers) {
        worker.on("message", (reply: PointReply) => {
          if (reply.type === "error") {
            const { message, code } = reply.error;
            return fail(code !== undefined ? new MoaError(code, message) : new Error(message));
          }
          results[reply.id] = reply.result;
          onResult(reply.id, reply.result);
          if (--pending === 0) resolve();
          else feed(worker);
        });
        worker.once("error", fail);
        worker.once("exit", (code) => {
          if (pending > 0) fail(new MoaError("E_SOLVER", `a solver worker exited (code ${code}) mid-front`));
        });
        feed(worker);
      }
    });
    return results;
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
