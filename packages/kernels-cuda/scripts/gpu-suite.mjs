#!/usr/bin/env node
// The GPU correctness suite in one command (`pnpm test:gpu`): bundles test/gpu/kernels.gpu.ts (every CUDA op
// against the CPU reference) and ../runtime/test/gpu/fixtures.gpu.ts (the fixtures on CUDA against
// transformers' reference vectors, MoA on CUDA against MoA on the CPU) into dist-gpu/*.test.mjs, then runs
// them with node:test. The bundle step also writes dist-gpu/e2e-decode.mjs (bench/e2e-decode.ts) and
// dist-gpu/attention-backward.mjs (bench/attention-backward.bench.ts: timings of the profiling attention), so one
// folder carries every GPU program to a machine without pnpm.
// It needs a GPU and the CUDA addon (`pnpm build` on a machine with nvcc); exits non-zero on any failure.
//
//   node scripts/gpu-suite.mjs              bundle, then run
//   node scripts/gpu-suite.mjs --bundle     only bundle (to carry the suite to a GPU machine without pnpm)
//   node scripts/gpu-suite.mjs --prebuilt   only run an existing bundle
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const packageRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..");
// dist-gpu/ sits one level below the package root, as dist/ does, so the bundles find build/Release/*.node
// and the repository's fixtures/ at the same relative paths as the sources.
const outDir = join(packageRoot, "dist-gpu");
const args = new Set(process.argv.slice(2));

async function bundle() {
  // esbuild comes with tsup (a workspace dev dependency).
  const requireFromTsup = createRequire(createRequire(import.meta.url).resolve("tsup"));
  const esbuild = requireFromTsup("esbuild");
  await esbuild.build({
    entryPoints: {
      "kernels.test": join(packageRoot, "test/gpu/kernels.gpu.ts"),
      "fixtures.test": join(packageRoot, "../runtime/test/gpu/fixtures.gpu.ts"),
      "e2e-decode": join(packageRoot, "../../bench/e2e-decode.ts"),
      "profile-speed": join(packageRoot, "../../bench/profile-speed.ts"),
      "attention-backward": join(packageRoot, "bench/attention-backward.bench.ts"),
    },
    outdir: outDir,
    outExtension: { ".js": ".mjs" },
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    logLevel: "warning",
    // bench/ (repository root) resolves workspace packages as the runtime does.
    nodePaths: [join(packageRoot, "../runtime/node_modules")],
    banner: {
      js: 'import { createRequire as __moaRequire } from "node:module"; const require = __moaRequire(import.meta.url);',
    },
  });
}

function run() {
  if (!existsSync(outDir)) {
    console.error(`${outDir} does not exist; bundle the suite first (node scripts/gpu-suite.mjs --bundle)`);
    process.exit(1);
  }
  const files = readdirSync(outDir)
    .filter((name) => name.endsWith(".test.mjs"))
    .sort()
    .reverse() // kernels first: it says whether the device works at all
    .map((name) => join(outDir, name));
  const result = spawnSync(
    process.execPath,
    ["--test", "--test-concurrency=1", "--test-reporter=spec", ...files],
    {
      stdio: "inherit",
      env: { ...process.env, MOA_BACKEND: "" },
    },
  );
  process.exit(result.status ?? 1);
}

if (!args.has("--prebuilt")) await bundle();
if (!args.has("--bundle")) run();
