import { defineConfig } from "tsup";

export default defineConfig({
  // The workers are their own entries: solveInWorker starts dist/worker.js, the epsilon points dist/pointWorker.js.
  entry: ["src/index.ts", "src/worker.ts", "src/pointWorker.ts"],
  format: ["esm"],
  dts: true,
  sourcemap: true,
  clean: true,
  target: "node20",
});
