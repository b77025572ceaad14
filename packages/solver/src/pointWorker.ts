/**
 * Worker-thread entry of {@link PointPool}: builds the structure once, then, for each batch
 * it is sent, claims points from the batch's shared counter and solves each in a session
 * restored from the batch's state.
 */
import { parentPort, workerData } from "node:worker_threads";
import { MoaError } from "@moa/core";
import { highsRuntime } from "./highs.js";
import { type PointBatch, type PointReply, type PointWorkerInput, solvePoint } from "./points.js";
import { buildStructure } from "./structure.js";

const port = parentPort;
if (port !== null) {
  const input = workerData as PointWorkerInput;
  const st = buildStructure(input.structure);
  const highs = highsRuntime();
  const post = (reply: PointReply) => port.postMessage(reply);
  port.on("message", (batch: PointBatch) => {
    highs.then((runtime) => {
      const { next, tasks } = batch;
      // The deadline crosses threads as epoch milliseconds; each thread has its own time origin.
      const options = {
        relGap: batch.relGap,
        proofNodes: batch.proofNodes,
        deadline: batch.deadline - performance.timeOrigin,
      };
      try {
        for (let id = Atomics.add(next, 0, 1); id < tasks.length; id = Atomics.add(next, 0, 1)) {
          post({ type: "result", id, result: solvePoint(runtime, st, batch.state, tasks[id]!, options) });
        }
        post({ type: "idle" });
      } catch (error) {
        const e = error instanceof Error ? error : new Error(String(error));
        post({
          type: "error",
          error: { message: e.message, ...(e instanceof MoaError ? { code: e.code } : {}) },
        });
      }
    });
  });
}
