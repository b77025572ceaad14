import { afterEach, describe, expect, it } from "vitest";
import { loadBackend, nativeStatus } from "../src/index.js";

const savedEnv = process.env.MOA_BACKEND;
afterEach(() => {
  if (savedEnv === undefined) delete process.env.MOA_BACKEND;
  else process.env.MOA_BACKEND = savedEnv;
});

describe("loadBackend", () => {
  it('"cpu" loads the C++ reference, named after its thread count', () => {
    const cpu = loadBackend("cpu");
    expect(cpu.name).toBe("cpu");
    expect(cpu.deviceName).toMatch(/^CPU \(\d+ threads\)$/);
    expect(loadBackend("cpu")).toBe(cpu); // one instance per process
  });

  it("nativeStatus reports the CPU addon and whether CUDA is usable, without crashing on a machine with no driver", () => {
    const status = nativeStatus();
    expect(status.cpu.available).toBe(true);
    expect(status.cpu.path).toMatch(/build[/\\]Release[/\\]moa_cpu\.node$/);
    if (status.cuda.devices === 0) {
      // Either nvcc was absent at install (not built) or the driver reports no GPU: the reason says which.
      expect(status.cuda.error).toMatch(status.cuda.built ? /^no CUDA device: / : /CUDA addon is not built/);
    } else {
      expect(status.cuda.built).toBe(true);
      expect(status.cuda.error).toBeUndefined();
    }
  });

  it('"auto" takes CUDA exactly when a GPU is present, otherwise the CPU reference', () => {
    const expected = nativeStatus().cuda.devices > 0 ? "cuda" : "cpu";
    expect(loadBackend("auto").name).toBe(expected);
    expect(loadBackend().name).toBe(expected);
  });

  it('"cuda" either loads the GPU backend or says why it cannot', () => {
    const status = nativeStatus();
    if (status.cuda.devices > 0) {
      expect(loadBackend("cuda").name).toBe("cuda");
    } else {
      expect(() => loadBackend("cuda")).toThrow(/^@moa\/kernels-cuda: the CUDA backend is unavailable: /);
      expect(() => loadBackend("cuda")).toThrow(status.cuda.error!);
    }
  });

  it("MOA_BACKEND chooses when no preference is passed, and bad values are refused", () => {
    process.env.MOA_BACKEND = "cpu";
    expect(loadBackend().name).toBe("cpu");
    process.env.MOA_BACKEND = "gpu";
    expect(() => loadBackend()).toThrow(/MOA_BACKEND must be auto, cpu or cuda, got "gpu"/);
    expect(() => loadBackend("tpu" as "cpu")).toThrow(/loadBackend\(prefer\) takes "auto", "cpu" or "cuda"/);
  });
});
