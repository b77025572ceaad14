import { defineConfig } from "vitest/config";

export default defineConfig({
  // Server tests share one CPU model per file; files run one at a time so load-test timings are not
  // distorted by another file's model on a 2-core CI machine.
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: "forks",
    fileParallelism: false,
  },
});
