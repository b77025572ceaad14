import { Worker } from "node:worker_threads";
import { MoaError, type MoaProfile } from "@moa/core";
import type { OptimizeOptions, ParetoResult } from "./pareto.js";
import type { WorkerInput, WorkerMessage } from "./worker.js";
import { workerSource } from "./workerSource.js";

/**
 * {@link optimizePlans} in a `node:worker_threads` worker, so the caller's thread stays
 * free (HiGHS blocks the thread it runs on) and the time limit is enforced: at
 * `timeLimitSeconds` the worker is terminated, wherever HiGHS is, and the promise rejects
 * with `MoaError` `E_TIMEOUT`. `onProgress` receives the worker's progress events. The
 * profile is copied into the worker (structured clone).
 */
export function solveInWorker(profile: MoaProfile, options: OptimizeOptions): Promise<ParetoResult> {
  const { onProgress, timeLimitSeconds, ...rest } = options;
  if (timeLimitSeconds !== undefined && !(timeLimitSeconds > 0)) {
    return Promise.reject(
      new MoaError("E_ARGUMENT", `solveInWorker: timeLimitSeconds = ${timeLimitSeconds} must be > 0`, {
        field: "timeLimitSeconds",
      }),
    );
  }
  const input: WorkerInput = { profile, options: rest, progress: onProgress !== undefined };
  const { source, eval: evaluate } = workerSource("worker");
  return new Promise<ParetoResult>((resolve, reject) => {
    const worker = new Worker(source, { workerData: input, eval: evaluate });
    let settled = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const settle = (action: () => void) => {
      if (settled) return;
      settled = true;
      if (timer !== undefined) clearTimeout(timer);
      action();
      void worker.terminate();
    };
    if (timeLimitSeconds !== undefined) {
      timer = setTimeout(() => {
        settle(() =>
          reject(
            new MoaError(
              "E_TIMEOUT",
              `solveInWorker: the solver did not finish within the time limit of ${timeLimitSeconds} s (timeLimitSeconds); the worker was stopped`,
              { field: "timeLimitSeconds" },
            ),
          ),
        );
      }, timeLimitSeconds * 1000);
    }
    worker.on("message", (message: WorkerMessage) => {
      if (message.type === "progress") {
        if (!settled) onProgress?.(message.event);
      } else if (message.type === "result") {
        settle(() => resolve(message.result));
      } else {
        const { name, message: text, code, field, source } = message.error;
        const error =
          code !== undefined
            ? new MoaError(code, text, {
                ...(field !== undefined ? { field } : {}),
                ...(source !== undefined ? { source } : {}),
              })
            : Object.assign(new Error(text), { name });
        settle(() => reject(error));
      }
    });
    worker.on("error", (error) => settle(() => reject(error)));
    worker.on("exit", (code) => {
      settle(() =>
        reject(
          new MoaError("E_SOLVER", `solveInWorker: the solver worker exited (code ${code}) without a result`),
        ),
      );
    });
  });
}
