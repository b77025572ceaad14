import { defineConfig } from "vitest/config";

export default defineConfig({
  // Server tests run one file at a time, so a load test's timings are not distorted by another file's model on
  // a 2-core CI machine; workers get --expose-gc so the load test can compare memory after a full collection.
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: "forks",
    poolOptions: { forks: { execArgv: ["--expose-gc"] } },
    fileParallelism: false,
  },
});
