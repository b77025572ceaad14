import { defineConfig } from "tsup";

export default defineConfig({
  // The worker is its own entry: solveInWorker starts dist/worker.js beside dist/index.js.
  entry: ["src/index.ts", "src/worker.ts"],
  format: ["esm"],
  dts: true,
  sourcemap: true,
  clean: true,
  target: "node20",
});
