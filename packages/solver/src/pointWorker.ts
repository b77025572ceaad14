/**
 * Worker-thread entry of {@link PointPool}: builds the structure once, then solves the
 * points it is sent, each in a session restored from the state it came with.
 */
import { parentPort, workerData } from "node:worker_threads";
import { MoaError } from "@moa/core";
import { highsRuntime } from "./highs.js";
import type { PointReply, PointRequest, PointWorkerInput } from "./points.js";
import { MipSession } from "./session.js";
import { buildStructure } from "./structure.js";

const port = parentPort;
if (port !== null) {
  const input = workerData as PointWorkerInput;
  const st = buildStructure(input.structure);
  const highs = highsRuntime();
  const post = (reply: PointReply) => port.postMessage(reply);
  port.on("message", (request: PointRequest) => {
    highs.then((runtime) => {
      try {
        const session = new MipSession(runtime, st, request.state);
        try {
          const result = session.solve(request.targets, {
            relGap: request.relGap,
            proofNodes: request.proofNodes,
            // The deadline crosses threads as epoch milliseconds; each thread has its own time origin.
            deadline: request.deadline - performance.timeOrigin,
          });
          post({ type: "result", id: request.id, result });
        } finally {
          session.dispose();
        }
      } catch (error) {
        const e = error instanceof Error ? error : new Error(String(error));
        post({
          type: "error",
          id: request.id,
          error: { message: e.message, ...(e instanceof MoaError ? { code: e.code } : {}) },
        });
      }
    });
  });
}
