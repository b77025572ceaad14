#!/usr/bin/env node
// Builds the native addons of @moa/kernels-cuda with node-gyp, offline, against the local Node headers.
//
//   build/Release/moa_cpu.node   always: the C++ CPU reference of every op. A failure here fails the install.
//   build/Release/moa_cuda.node  when nvcc is found (and MOA_SKIP_CUDA is not set): the same binding plus the
//                                CUDA kernels (sm_80, sm_90a). A failure here only prints a warning.
//
// Flags: --if-stale  skip the work when both addons are newer than every native source (the package "build").
// Env:   MOA_SKIP_CUDA=1   never build the CUDA addon.
//        NVCC=/path/nvcc   which nvcc to use (default: PATH, $CUDA_HOME/bin, /usr/local/cuda/bin).
//        MOA_BUILD_JOBS=n  parallel compile jobs (default: number of cores).
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, readdirSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { delimiter, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const packageRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const releaseDir = join(packageRoot, "build", "Release");
const cpuAddon = join(releaseDir, "moa_cpu.node");
const cudaAddon = join(releaseDir, "moa_cuda.node");
// Written when the CUDA build failed, so `--if-stale` does not retry it until a native source changes.
const cudaFailedStamp = join(packageRoot, "build", "cuda-build-failed.txt");
const args = new Set(process.argv.slice(2));
const skipCuda = /^(1|true|yes)$/i.test(process.env.MOA_SKIP_CUDA ?? "");

function log(message) {
  process.stderr.write(`@moa/kernels-cuda: ${message}\n`);
}

/** Newest modification time of binding.gyp and the native sources under src/<dirs>. */
function newestSource(dirs) {
  let newest = statSync(join(packageRoot, "binding.gyp")).mtimeMs;
  const walk = (dir) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (/\.(cc|h|cu|cuh)$/.test(entry.name)) newest = Math.max(newest, statSync(path).mtimeMs);
    }
  };
  for (const dir of dirs) walk(join(packageRoot, "src", dir));
  return newest;
}

function upToDate(file, sourcesTime) {
  return existsSync(file) && statSync(file).mtimeMs >= sourcesTime;
}

/** make leaves an addon untouched when nothing it links changed; mark it as checked against the sources. */
function markBuilt(file) {
  const now = new Date();
  utimesSync(file, now, now);
}

function findExecutable(name, extraDirs = []) {
  const dirs = [...(process.env.PATH ?? "").split(delimiter), ...extraDirs].filter(Boolean);
  for (const dir of dirs) {
    const candidate = join(dir, name);
    try {
      if (statSync(candidate).isFile()) return candidate;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}

/** The node-gyp that npm or pnpm put beside this install, or one on PATH. */
function nodeGypCommand() {
  const fromEnv = process.env.npm_config_node_gyp;
  if (fromEnv && existsSync(fromEnv)) return [process.execPath, fromEnv];
  const nodePrefix = resolve(dirname(process.execPath), "..");
  const bundled = [
    join(nodePrefix, "lib", "node_modules", "npm", "node_modules", "node-gyp", "bin", "node-gyp.js"),
    join(nodePrefix, "lib", "node_modules", "pnpm", "dist", "node_modules", "node-gyp", "bin", "node-gyp.js"),
    join(dirname(process.execPath), "node_modules", "npm", "node_modules", "node-gyp", "bin", "node-gyp.js"),
  ].find((path) => existsSync(path));
  if (bundled) return [process.execPath, bundled];
  const onPath = findExecutable(process.platform === "win32" ? "node-gyp.cmd" : "node-gyp");
  if (onPath) return [onPath];
  return undefined;
}

/** Node's own headers, so node-gyp never downloads them: npm's nodedir, else the prefix of this node. */
function nodeHeadersDir() {
  const candidates = [process.env.npm_config_nodedir, resolve(dirname(process.execPath), "..")];
  return candidates.find((dir) => dir && existsSync(join(dir, "include", "node", "node_api.h")));
}

function runNodeGyp(gyp, gypArgs, quiet = false) {
  const [command, ...prefix] = gyp;
  const result = spawnSync(command, [...prefix, ...gypArgs], {
    cwd: packageRoot,
    stdio: quiet ? ["ignore", "pipe", "pipe"] : ["ignore", "inherit", "inherit"],
    encoding: "utf8",
  });
  return { ok: result.status === 0, output: `${result.stdout ?? ""}${result.stderr ?? ""}` };
}

/** nvcc and the folder holding libcudart_static.a, or a reason why the CUDA build is skipped. */
function findCuda() {
  if (skipCuda) return { skip: "MOA_SKIP_CUDA is set" };
  if (process.platform !== "linux")
    return { skip: `the CUDA build is only set up for Linux, not ${process.platform}` };
  const homes = [process.env.CUDA_HOME, process.env.CUDA_PATH, "/usr/local/cuda"].filter(Boolean);
  const nvcc =
    (process.env.NVCC && existsSync(process.env.NVCC) ? process.env.NVCC : undefined) ??
    findExecutable(
      "nvcc",
      homes.map((home) => join(home, "bin")),
    );
  if (!nvcc) return { skip: "nvcc was not found (install the CUDA toolkit to build the GPU kernels)" };
  // nvcc may be a wrapper script; ask it where its libraries are instead of guessing from its path.
  let libDirs = [];
  try {
    const dry = execFileSync(nvcc, ["-dryrun", "-x", "cu", "-c", "/dev/null", "-o", "/dev/null"], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
    });
    const libraries = dry.split("\n").find((line) => line.includes("LIBRARIES="));
    libDirs = [...(libraries ?? "").matchAll(/-L"?([^"\s]+)"?/g)].map((m) => m[1]);
  } catch (error) {
    return { skip: `nvcc at ${nvcc} does not run (${String(error).split("\n")[0]})` };
  }
  const nvccHome = resolve(dirname(nvcc), "..");
  libDirs.push(...homes.map((home) => join(home, "lib64")), join(nvccHome, "lib64"));
  const libDir = libDirs.find((dir) => existsSync(join(dir, "libcudart_static.a")));
  if (!libDir) return { skip: `libcudart_static.a was not found next to ${nvcc}` };
  return { nvcc, libDir: resolve(libDir) };
}

function main() {
  const cpuSourcesTime = newestSource(["cpu", "binding"]);
  const allSourcesTime = newestSource(["cpu", "binding", "cuda"]);
  const cuda = findCuda();
  const wantCuda = cuda.nvcc !== undefined;
  if (
    args.has("--if-stale") &&
    upToDate(cpuAddon, cpuSourcesTime) &&
    (!wantCuda || upToDate(cudaAddon, allSourcesTime) || upToDate(cudaFailedStamp, allSourcesTime))
  ) {
    return;
  }

  const gyp = nodeGypCommand();
  if (!gyp) {
    log(
      "node-gyp was not found. It ships with npm and pnpm; run this through `pnpm install` or `npm install`.",
    );
    process.exit(1);
  }
  const headers = nodeHeadersDir();
  const common = headers ? [`--nodedir=${headers}`] : [];
  const jobs = process.env.MOA_BUILD_JOBS ?? String(availableParallelism());

  // 1. The CPU addon. Its objects are reused by the CUDA target, so step 2 only adds the CUDA parts.
  log(`building the CPU addon (${jobs} jobs${headers ? `, Node headers from ${headers}` : ""})`);
  if (
    !runNodeGyp(gyp, ["configure", ...common, "--", "-Dmoa_with_cuda=0"]).ok ||
    !runNodeGyp(gyp, ["build", `--jobs=${jobs}`]).ok ||
    !existsSync(cpuAddon)
  ) {
    log(
      "the CPU addon failed to build. It needs a C++17 compiler, make and python3 " +
        "(Debian/Ubuntu: apt-get install -y build-essential python3; macOS: xcode-select --install) " +
        "and Node's headers (shipped with Node.js; set npm_config_nodedir if they live elsewhere).",
    );
    process.exit(1);
  }
  markBuilt(cpuAddon);
  log(`built ${cpuAddon}`);

  // 2. The CUDA addon, when nvcc is there. Never fails the install.
  if (!wantCuda) {
    log(`CUDA addon skipped: ${cuda.skip}`);
    rmSync(cudaAddon, { force: true });
    return;
  }
  log(`building the CUDA addon with ${cuda.nvcc} (libraries from ${cuda.libDir})`);
  const cudaDefines = ["-Dmoa_with_cuda=1", `-Dmoa_nvcc=${cuda.nvcc}`, `-Dmoa_cuda_lib_dir=${cuda.libDir}`];
  const configured = runNodeGyp(gyp, ["configure", ...common, "--", ...cudaDefines], true);
  const built = configured.ok ? runNodeGyp(gyp, ["build", `--jobs=${jobs}`], true) : configured;
  if (!built.ok || !existsSync(cudaAddon)) {
    rmSync(cudaAddon, { force: true });
    const tail = built.output.trim().split("\n").slice(-25).join("\n");
    log(`WARNING: the CUDA addon failed to build; the CPU addon will be used.\n${tail}`);
    writeFileSync(cudaFailedStamp, `${new Date().toISOString()}\n${built.output}`);
    // Leave build/ configured for the CPU addon alone, so a later `node-gyp build` does not retry CUDA.
    runNodeGyp(gyp, ["configure", ...common, "--", "-Dmoa_with_cuda=0"], true);
    return;
  }
  rmSync(cudaFailedStamp, { force: true });
  markBuilt(cudaAddon);
  log(`built ${cudaAddon}`);
}

main();
