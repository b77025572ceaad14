/**
 * Worker-thread entry of {@link solveInWorker}: runs `optimizePlans` on the profile and
 * options it was started with and posts progress events, then the result or the error.
 */
import { parentPort, workerData } from "node:worker_threads";
import { MoaError, type MoaProfile } from "@moa/core";
import { type OptimizeOptions, optimizePlans } from "./pareto.js";

export interface WorkerInput {
  profile: MoaProfile;
  options: Omit<OptimizeOptions, "onProgress" | "timeLimitSeconds">;
  progress: boolean;
}

export type WorkerMessage =
  | { type: "progress"; event: import("./pareto.js").ProgressEvent }
  | { type: "result"; result: import("./pareto.js").ParetoResult }
  | {
      type: "error";
      error: { name: string; message: string; code?: string; field?: string; source?: string };
    };

const port = parentPort;
if (port !== null) {
  const input = workerData as WorkerInput;
  const post = (message: WorkerMessage) => port.postMessage(message);
  optimizePlans(input.profile, {
    ...input.options,
    ...(input.progress ? { onProgress: (event) => post({ type: "progress", event }) } : {}),
  }).then(
    (result) => post({ type: "result", result }),
    (error: unknown) => {
      const e = error instanceof Error ? error : new Error(String(error));
      post({
        type: "error",
        error: {
          name: e.name,
          message: e.message,
          ...(e instanceof MoaError ? { code: e.code } : {}),
          ...(e instanceof MoaError && e.field !== undefined ? { field: e.field } : {}),
          ...(e instanceof MoaError && e.source !== undefined ? { source: e.source } : {}),
        },
      });
    },
  );
}
