/**
 * GPU correctness suite, part 1: every CUDA op against the C++ CPU reference on random inputs (odd sizes,
 * spans that are not multiples of the block, batches of mixed lengths, ring caches that wrap). Runs with
 * node:test on a machine with a GPU (`pnpm test:gpu`); CI has no GPU and runs the CPU suite instead.
 *
 * Where the CUDA op rounds to bf16 on purpose (matmul's x for bf16 weights, attention operands, the bf16 KV
 * cache), the reference gets the same rounded inputs, so what remains is accumulation order and, for prefill
 * attention, P rounded to bf16 before P·V (relative error ~1e-3).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Backend, KvCacheLayer, MoaMask, Tensor } from "../../src/index.js";
import { loadBackend, nativeStatus } from "../../src/index.js";

const cuda = loadBackend("cuda");
const cpu = loadBackend("cpu");

let seed = 0x9e3779b9;
function random(count: number, lo = -1, hi = 1): Float32Array {
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    out[i] = lo + ((hi - lo) * (seed >>> 0)) / 2 ** 32;
  }
  return out;
}

/** Round-to-nearest-even to bf16, returned as f32 values and as bf16 bits. */
function toBf16Bits(values: Float32Array): Uint16Array {
  const words = new Uint32Array(
    values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength),
  );
  return Uint16Array.from(words, (w) => (w + 0x7fff + ((w >>> 16) & 1)) >>> 16);
}
function roundBf16(values: Float32Array): Float32Array {
  const bits = toBf16Bits(values);
  return new Float32Array(Uint32Array.from(bits, (b) => b << 16).buffer);
}
/** Round-to-nearest-even to IEEE half (finite inputs well inside its range; subnormals included). */
function toF16Bits(values: Float32Array): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const x = values[i]!;
    const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
    const a = Math.abs(x);
    if (a === 0) {
      out[i] = sign;
      continue;
    }
    const exp = Math.max(Math.floor(Math.log2(a)), -14);
    // Units of the last place at this exponent: 2^(exp − 10); Math.round ties away from zero, so fix ties.
    const ulps = a / 2 ** (exp - 10);
    let q = Math.round(ulps);
    if (q - ulps === 0.5 && q % 2 === 1) q -= 1;
    const bits = exp === -14 && q < 1024 ? q : ((exp + 15) << 10) + (q - 1024);
    out[i] = sign | bits;
  }
  return out;
}
function f16BitsToFloat(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) {
    const h = bits[i]!;
    const exp = (h >>> 10) & 0x1f;
    const mant = h & 0x3ff;
    const value = exp === 0 ? mant * 2 ** -24 : (1 + mant / 1024) * 2 ** (exp - 15);
    out[i] = h & 0x8000 ? -value : value;
  }
  return out;
}

function host(backend: Backend, t: Tensor): Float32Array {
  return backend.toHost(t) as Float32Array;
}

interface Difference {
  maxAbs: number;
  relative: number;
}
function difference(actual: Float32Array, expected: Float32Array): Difference {
  assert.equal(actual.length, expected.length);
  let maxAbs = 0;
  let num = 0;
  let den = 0;
  for (let i = 0; i < actual.length; i++) {
    const d = Math.abs(actual[i]! - expected[i]!);
    if (!(d <= maxAbs)) maxAbs = Number.isNaN(d) ? Number.POSITIVE_INFINITY : d;
    num += d * d;
    den += expected[i]! * expected[i]!;
  }
  return { maxAbs, relative: Math.sqrt(num / Math.max(den, 1e-30)) };
}
function assertClose(actual: Float32Array, expected: Float32Array, relative: number, what: string): void {
  const d = difference(actual, expected);
  assert.ok(
    d.relative <= relative && Number.isFinite(d.maxAbs),
    `${what}: ‖Δ‖/‖ref‖ = ${d.relative.toExponential(2)} (limit ${relative}), max |Δ| = ${d.maxAbs.toExponential(2)}`,
  );
}

/** The profiler's precisions (src/cuda/backward_precision.cuh) and what each must hold: "split" about fp32's,
 *  "f16" (the default) fp16's 11 significant bits; "f16-mma" is f16 with the attention's wgmma kernels off
 *  (MOA_CUDA_WGMMA=0), so a Hopper GPU checks both attention paths (elsewhere the two are the same run). */
const PRECISIONS = ["split", "f16"] as const;
const ATTENTION_PRECISIONS = [...PRECISIONS, "f16-mma"] as const;
type Precision = (typeof ATTENTION_PRECISIONS)[number];

/** Runs `body` with MOA_CUDA_BACKWARD_PRECISION (and MOA_CUDA_WGMMA) set for `mode`, restoring what was there. */
function withPrecision<T>(mode: Precision | "bf16", body: () => T): T {
  const previous = [process.env.MOA_CUDA_BACKWARD_PRECISION, process.env.MOA_CUDA_WGMMA];
  process.env.MOA_CUDA_BACKWARD_PRECISION = mode === "f16-mma" ? "f16" : mode;
  process.env.MOA_CUDA_WGMMA = mode === "f16-mma" ? "0" : "";
  try {
    return body();
  } finally {
    for (const [name, value] of [
      ["MOA_CUDA_BACKWARD_PRECISION", previous[0]],
      ["MOA_CUDA_WGMMA", previous[1]],
    ] as const) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  }
}

/** Prints a measured error into the suite's log, so a run records the numbers its limits were checked against. */
function report(what: string, d: Difference): void {
  console.log(`  ${what}: ‖Δ‖/‖ref‖ ${d.relative.toExponential(2)}, max |Δ| ${d.maxAbs.toExponential(2)}`);
}

/** A CUDA output tensor poisoned with NaN, so an element the op forgets to write fails the comparison. */
function poisoned(shape: number[]): Tensor {
  const count = shape.reduce((a, b) => a * b, 1);
  return cuda.fromHost("f32", shape, new Float32Array(count).fill(Number.NaN));
}

describe("CUDA backend", () => {
  it("is picked automatically on a GPU machine, and cuBLAS loads", () => {
    const status = nativeStatus();
    assert.ok(status.cuda.devices >= 1, `no CUDA device: ${status.cuda.error}`);
    assert.equal(loadBackend("auto"), cuda);
    assert.equal(cuda.kvCacheDtype, "bf16");
    console.log(`device: ${cuda.deviceName}`);
  });
});

describe("matmul (cuBLAS)", () => {
  for (const [m, n, k] of [
    [1, 1, 1],
    [1, 4096, 4096],
    [37, 80, 96],
    [300, 1000, 257],
    [1025, 384, 1024],
  ] as const) {
    for (const dtype of ["bf16", "f16", "f32"] as const) {
      it(`${m}×${n}×${k}, ${dtype} weights, with and without bias`, () => {
        const x = random(m * k);
        const wValues = random(n * k, -0.1, 0.1);
        const bias = random(n);
        const wData = dtype === "bf16" ? toBf16Bits(wValues) : dtype === "f16" ? toF16Bits(wValues) : wValues;
        // The reference multiplies x rounded as the CUDA op rounds it.
        const xRef = dtype === "bf16" ? roundBf16(x) : dtype === "f16" ? f16BitsToFloat(toF16Bits(x)) : x;
        for (const withBias of [false, true]) {
          const out = poisoned([m, n]);
          const wCuda = cuda.fromHost(dtype, [n, k], wData);
          const bCuda = withBias ? cuda.fromHost("f32", [n], bias) : undefined;
          cuda.matmul(out, cuda.fromHost("f32", [m, k], x), wCuda, bCuda);
          const ref = cpu.empty("f32", [m, n]);
          cpu.matmul(
            ref,
            cpu.fromHost("f32", [m, k], xRef),
            cpu.fromHost(dtype, [n, k], wData),
            withBias ? cpu.fromHost("f32", [n], bias) : undefined,
          );
          assertClose(host(cuda, out), host(cpu, ref), 1e-5, `matmul ${m}×${n}×${k} ${dtype}`);
        }
      });
    }
  }
});

describe("matmul with exact inputs (the profiler's forward)", () => {
  for (const [m, n, k] of [
    [1, 1, 1],
    [37, 80, 96],
    [1025, 384, 1024],
  ] as const) {
    for (const [dtype, mode] of PRECISIONS.flatMap((mode) =>
      (["bf16", "f16"] as const).map((d) => [d, mode] as const),
    )) {
      it(`${m}×${n}×${k}, ${dtype} weights, ${mode}: x is not rounded to bf16`, () => {
        const x = random(m * k).map((value, i) => value * (i % 5 === 0 ? 1e-4 : 30));
        const wValues = random(n * k, -0.1, 0.1);
        const wData = dtype === "bf16" ? toBf16Bits(wValues) : toF16Bits(wValues);
        const bias = random(n);
        const out = poisoned([m, n]);
        withPrecision(mode, () =>
          cuda.matmul(
            out,
            cuda.fromHost("f32", [m, k], x),
            cuda.fromHost(dtype, [n, k], wData),
            cuda.fromHost("f32", [n], bias),
            true,
          ),
        );
        const ref = cpu.empty("f32", [m, n]);
        cpu.matmul(
          ref,
          cpu.fromHost("f32", [m, k], x),
          cpu.fromHost(dtype, [n, k], wData),
          cpu.fromHost("f32", [n], bias),
        );
        const label = `matmul exact ${m}×${n}×${k} ${dtype} ${mode}`;
        report(label, difference(host(cuda, out), host(cpu, ref)));
        assertClose(host(cuda, out), host(cpu, ref), mode === "split" ? 2e-5 : 1e-3, label);
      });
    }
  }
});

describe("pinHalfCopies (operand copies made once for the profiler's GEMMs)", () => {
  it("pinned x and bf16 w give the same bits as fresh conversions, in matmul and matmulBackward", () => {
    const [m, n, k] = [257, 192, 320];
    const x = cuda.fromHost(
      "f32",
      [m, k],
      random(m * k).map((v, i) => v * (i % 7 === 0 ? 1e-5 : 3)),
    );
    const w = cuda.fromHost("bf16", [n, k], toBf16Bits(random(n * k, -0.2, 0.2)));
    const dy = cuda.fromHost("f32", [m, n], random(m * n, -1e-3, 1e-3));
    const run = () => {
      const out = poisoned([m, n]);
      cuda.matmul(out, x, w, undefined, true);
      const dx = poisoned([m, k]);
      cuda.matmulBackward(dx, dy, w);
      return [host(cuda, out), host(cuda, dx)];
    };
    const fresh = run();
    assert.equal(cuda.halfCopyBytes([x, w, w]), 2 * (m * k + n * k));
    for (const pinned of [[w], [x], [x, w]]) {
      const release = cuda.pinHalfCopies(pinned);
      const again = cuda.pinHalfCopies(pinned); // a second holder shares the copies
      const [out, dx] = run();
      release();
      assert.deepEqual(run()[0], fresh[0], "after one of two releases the copy is still right");
      again();
      release(); // twice is harmless
      assert.deepEqual(out, fresh[0], `matmul with ${pinned.length} pinned operand(s)`);
      assert.deepEqual(dx, fresh[1], `matmulBackward with ${pinned.length} pinned operand(s)`);
    }
  });

  it("freeing a pinned tensor drops its copy: a new tensor at the same address is converted afresh", () => {
    const [m, n, k] = [64, 96, 128];
    const x = cuda.fromHost("f32", [m, k], random(m * k));
    const first = cuda.fromHost("bf16", [n, k], toBf16Bits(random(n * k)));
    const release = cuda.pinHalfCopies([first]);
    cuda.free(first);
    release();
    const values = toBf16Bits(random(n * k, -3, 3));
    const second = cuda.fromHost("bf16", [n, k], values);
    const out = poisoned([m, n]);
    cuda.matmul(out, x, second, undefined, true);
    const ref = poisoned([m, n]);
    cuda.matmul(ref, x, cuda.fromHost("bf16", [n, k], values), undefined, true);
    assert.deepEqual(host(cuda, out), host(cuda, ref));
  });
});

describe("pinHalfOutputs (the profiler's GEMM inputs written as their fp16 copies by their ops)", () => {
  /** What `consume` (GEMMs) gives when `produce` writes f32 outputs, pinned after, and when it writes only copies. */
  function bothWays(
    shapes: number[][],
    produce: (outs: Tensor[]) => void,
    consume: (outs: Tensor[]) => Tensor,
  ): [Float32Array, Float32Array] {
    const plain = shapes.map((shape) => poisoned(shape));
    produce(plain);
    const unpinPlain = cuda.pinHalfCopies(plain);
    const expected = host(cuda, consume(plain));
    unpinPlain();
    const pinned = shapes.map((shape) => poisoned(shape));
    const unpin = cuda.pinHalfOutputs(pinned);
    produce(pinned);
    const actual = host(cuda, consume(pinned));
    unpin();
    return [actual, expected];
  }
  const bf16 = (rows: number, cols: number, scale = 0.2) =>
    cuda.fromHost("bf16", [rows, cols], toBf16Bits(random(rows * cols, -scale, scale)));

  // 4096 × 1030: the profiler's shape class; 33 × 7: not a multiple of 4 elements (written, then converted).
  for (const [rows, ff, d] of [
    [4096, 1030, 256],
    [33, 7, 24],
  ] as const) {
    it(`siluMul, siluMulBackward and rmsNorm: the same bits as a conversion of their outputs (${rows}×${ff})`, () => {
      const gate = cuda.fromHost("f32", [rows, ff], random(rows * ff, -9, 9));
      const up = cuda.fromHost("f32", [rows, ff], random(rows * ff, -2, 2));
      const down = bf16(d, ff);
      const [forward, forwardRef] = bothWays(
        [[rows, ff]],
        ([act]) => cuda.siluMul(act!, gate, up),
        ([act]) => {
          const out = poisoned([rows, d]);
          cuda.matmul(out, act!, down, undefined, true);
          return out;
        },
      );
      assert.deepEqual(forward, forwardRef, "down projection of siluMul's copy");
      const dAct = cuda.fromHost("f32", [rows, ff], random(rows * ff, -1e-4, 1e-4));
      const wGate = bf16(ff, d);
      const wUp = bf16(ff, d);
      const [backward, backwardRef] = bothWays(
        [
          [rows, ff],
          [rows, ff],
        ],
        ([dGate, dUp]) => cuda.siluMulBackward(dGate!, dUp!, dAct, gate, up),
        ([dGate, dUp]) => {
          const dh = poisoned([rows, d]);
          cuda.matmulBackward(dh, dGate!, wGate);
          cuda.matmulBackward(dh, dUp!, wUp, true);
          return dh;
        },
      );
      assert.deepEqual(backward, backwardRef, "gate/up backward of siluMulBackward's copies");
      const x = cuda.fromHost("f32", [rows, ff], random(rows * ff, -30, 30));
      const norm = bf16(1, ff, 2);
      const q = bf16(d, ff);
      const [normed, normedRef] = bothWays(
        [[rows, ff]],
        ([h]) => cuda.rmsNorm(h!, x, cuda.reshape(norm, [ff]), 1e-5),
        ([h]) => {
          const out = poisoned([rows, d]);
          cuda.matmul(out, h!, q, undefined, true);
          return out;
        },
      );
      assert.deepEqual(normed, normedRef, "projection of rmsNorm's copy");
    });
  }

  for (const rotaryHalf of [64, 24]) {
    it(`rope in place writes the same copy as a conversion of its result (rotary half ${rotaryHalf} of 64)`, () => {
      const [tokens, heads, d] = [300, 8, 128];
      const x = random(tokens * heads * d, -4, 4);
      const positions = cuda.fromHost(
        "i32",
        [tokens],
        Int32Array.from({ length: tokens }, (_, p) => -p),
      );
      const invFreq = cuda.fromHost(
        "f32",
        [rotaryHalf],
        Float32Array.from({ length: rotaryHalf }, (_, i) => 10000 ** (-i / rotaryHalf)),
      );
      const w = bf16(d * heads, 96);
      const [actual, expected] = bothWays(
        [[tokens, heads, d]],
        ([t]) => {
          cuda.write(t!, x);
          cuda.rope(t!, positions, invFreq, 1);
        },
        ([t]) => {
          const out = poisoned([tokens, 96]);
          cuda.matmulBackward(out, cuda.reshape(t!, [tokens, heads * d]), w);
          return out;
        },
      );
      assert.deepEqual(actual, expected, "projection backward of rope's copy");
    });
  }

  it("a row view of a pinned tensor reads the pin at its offset; reading part of an output pin in f32 fails", () => {
    const [rows, k, n] = [256, 512, 64];
    const x = cuda.fromHost("f32", [rows, k], random(rows * k, -2, 2));
    const w = bf16(n, k);
    const full = poisoned([rows, n]);
    const part = poisoned([156, n]);
    const unpin = cuda.pinHalfCopies([x]);
    cuda.matmul(full, x, w, undefined, true);
    cuda.matmul(part, cuda.rows(x, 100, 156), w, undefined, true);
    unpin();
    assertClose(host(cuda, part), host(cuda, full).subarray(100 * n), 1e-5, "GEMM of a row view of a pin");
    const h = poisoned([rows, k]);
    const unpinH = cuda.pinHalfOutputs([h]);
    cuda.rmsNorm(h, x, cuda.reshape(bf16(1, k, 2), [k]), 1e-5);
    cuda.matmul(part, cuda.rows(h, 100, 156), w, undefined, true);
    assert.ok(host(cuda, part).every(Number.isFinite), "a row view of an output pin reads its copy");
    const f32w = cuda.fromHost("f32", [n, k], random(n * k));
    assert.throws(
      () => cuda.matmul(part, cuda.rows(h, 100, 156), f32w, undefined, true),
      /only the scaled fp16 GEMMs/,
    );
    unpinH();
  });

  it("a GEMM before the op, and a reader of f32, are refused with an error", () => {
    const act = poisoned([8, 16]);
    const unpin = cuda.pinHalfOutputs([act]);
    const out = poisoned([8, 4]);
    assert.throws(() => cuda.matmul(out, act, bf16(4, 16), undefined, true), /before an op wrote it/);
    cuda.siluMul(act, cuda.fromHost("f32", [8, 16], random(128)), cuda.fromHost("f32", [8, 16], random(128)));
    const f32w = cuda.fromHost("f32", [4, 16], random(64));
    assert.throws(() => cuda.matmul(out, act, f32w, undefined, true), /only the scaled fp16 GEMMs/);
    assert.throws(() => cuda.toHost(act), /toHost: reads a tensor pinned by pinHalfOutputs/);
    assert.throws(() => cuda.pinHalfOutputs([act]), /already has a pinned copy/);
    unpin();
    cuda.siluMul(act, cuda.fromHost("f32", [8, 16], random(128)), cuda.fromHost("f32", [8, 16], random(128)));
    cuda.matmul(out, act, f32w, undefined, true); // unpinned: an ordinary f32 tensor again
  });
});

describe("attentionColumnSums (H2O scores) against the CPU reference", () => {
  const cases: [number[], number, number, number][] = [
    [[1, 63, 64, 65], 2, 1, 64],
    [[4100], 6, 2, 64],
    [[700, 1300], 32, 8, 128],
    [[333], 5, 5, 40],
  ];
  for (const [lengths, hq, hkv, d] of cases) {
    it(`sequences ${lengths.join("+")}, ${hq}/${hkv} heads, head ${d}`, () => {
      const tokens = lengths.reduce((a, b) => a + b, 0);
      const cuSeqlens = Int32Array.from([
        0,
        ...lengths.map((_, i) => lengths.slice(0, i + 1).reduce((a, b) => a + b)),
      ]);
      const q = random(tokens * hq * d, -2, 2);
      const k = random(tokens * hkv * d, -2, 2);
      const scale = 1 / Math.sqrt(d);
      const run = (b: Backend) => {
        const out = b.empty("f32", [tokens, hkv]);
        b.attentionColumnSums(
          out,
          b.fromHost("f32", [tokens, hq, d], q),
          b.fromHost("f32", [tokens, hkv, d], k),
          cuSeqlens,
          scale,
        );
        return host(b, out);
      };
      const gpu = run(cuda);
      const ref = run(cpu);
      const label = `attentionColumnSums ${lengths.join("+")} ${hq}/${hkv} d${d}`;
      report(label, difference(gpu, ref));
      assertClose(gpu, ref, 1e-5, label);
      assert.deepEqual(run(cuda), gpu, "deterministic");
    });
  }
});

describe("elementwise ops", () => {
  for (const [rows, dim] of [
    [1, 1],
    [7, 300],
    [130, 4096],
  ] as const) {
    it(`embedding, rmsNorm, siluMul, add, softmax on ${rows}×${dim}`, () => {
      const vocab = 97;
      const table = toBf16Bits(random(vocab * dim));
      const ids = Int32Array.from({ length: rows }, (_, i) => (i * 31 + 5) % vocab);
      const emb = poisoned([rows, dim]);
      cuda.embedding(emb, cuda.fromHost("i32", [rows], ids), cuda.fromHost("bf16", [vocab, dim], table));
      const embRef = cpu.empty("f32", [rows, dim]);
      cpu.embedding(embRef, cpu.fromHost("i32", [rows], ids), cpu.fromHost("bf16", [vocab, dim], table));
      assert.deepEqual(host(cuda, emb), host(cpu, embRef));

      const x = random(rows * dim, -3, 3);
      const w = toBf16Bits(random(dim));
      const norm = poisoned([rows, dim]);
      cuda.rmsNorm(norm, cuda.fromHost("f32", [rows, dim], x), cuda.fromHost("bf16", [dim], w), 1e-5);
      const normRef = cpu.empty("f32", [rows, dim]);
      cpu.rmsNorm(normRef, cpu.fromHost("f32", [rows, dim], x), cpu.fromHost("bf16", [dim], w), 1e-5);
      assertClose(host(cuda, norm), host(cpu, normRef), 1e-6, "rmsNorm");

      const gate = random(rows * dim, -8, 8);
      const act = poisoned([rows, dim]);
      cuda.siluMul(act, cuda.fromHost("f32", [rows, dim], gate), cuda.fromHost("f32", [rows, dim], x));
      const actRef = cpu.empty("f32", [rows, dim]);
      cpu.siluMul(actRef, cpu.fromHost("f32", [rows, dim], gate), cpu.fromHost("f32", [rows, dim], x));
      assertClose(host(cuda, act), host(cpu, actRef), 1e-6, "siluMul");

      cuda.add(act, act, cuda.fromHost("f32", [rows, dim], x));
      cpu.add(actRef, actRef, cpu.fromHost("f32", [rows, dim], x));
      assertClose(host(cuda, act), host(cpu, actRef), 1e-6, "add in place");

      const scores = random(rows * dim, -30, 30);
      const sm = poisoned([rows, dim]);
      cuda.softmax(sm, cuda.fromHost("f32", [rows, dim], scores));
      const smRef = cpu.empty("f32", [rows, dim]);
      cpu.softmax(smRef, cpu.fromHost("f32", [rows, dim], scores));
      assertClose(host(cuda, sm), host(cpu, smRef), 1e-5, "softmax");
    });
  }

  it("rope (full and partial rotary, llama3-style frequencies) matches bit for bit", () => {
    for (const [tokens, heads, headDim, half] of [
      [1, 1, 16, 8],
      [300, 8, 128, 64],
      [33, 4, 64, 16],
    ] as const) {
      const x = random(tokens * heads * headDim, -2, 2);
      const positions = Int32Array.from({ length: tokens }, (_, i) => i * 97 + 13);
      const invFreq = Float32Array.from(
        { length: half },
        (_, i) => 1 / 500000 ** (i / half) / (i % 3 === 0 ? 8 : 1),
      );
      const xc = cuda.fromHost("f32", [tokens, heads, headDim], x);
      cuda.rope(xc, cuda.fromHost("i32", [tokens], positions), cuda.fromHost("f32", [half], invFreq), 0.9);
      const xr = cpu.fromHost("f32", [tokens, heads, headDim], x);
      cpu.rope(xr, cpu.fromHost("i32", [tokens], positions), cpu.fromHost("f32", [half], invFreq), 0.9);
      const d = difference(host(cuda, xc), host(cpu, xr));
      assert.ok(d.maxAbs <= 1e-6, `rope ${tokens}×${heads}×${headDim}: max |Δ| = ${d.maxAbs}`);
    }
  });

  it("embedding rejects an id outside the table with the op's name", () => {
    const table = cuda.fromHost("f32", [4, 8], random(32));
    assert.throws(
      () => cuda.embedding(cuda.empty("f32", [2, 8]), cuda.fromHost("i32", [2], Int32Array.of(1, 4)), table),
      /embedding: ids\[1\] = 4 is outside the table's 4 rows/,
    );
  });
});

/** A plan-like mask with per-head rules (spans deliberately not multiples of the block). */
function maskOf(mode: "block" | "window", heads: number, rng: () => number): MoaMask {
  return {
    mode,
    alpha: Float32Array.from({ length: heads }, () => Math.round(rng() * 300 - 40)),
    beta: Float32Array.from({ length: heads }, () => Math.round(rng() * 8) / 16),
    blockSize: 64,
    sinkTokens: 64,
  };
}

describe("attentionPrefill (tensor-core flash attention with MoA band skipping)", () => {
  const rng = () => random(1, 0, 1)[0]!;
  const cases: Array<{ name: string; lengths: number[]; hq: number; hkv: number; d: number }> = [
    { name: "head 128, GQA 32/8, one sequence of 1000", lengths: [1000], hq: 32, hkv: 8, d: 128 },
    { name: "head 64, GQA 6/2, mixed lengths", lengths: [1, 63, 64, 65, 200, 700], hq: 6, hkv: 2, d: 64 },
    { name: "head 16, MHA, mixed lengths", lengths: [5, 129, 300], hq: 4, hkv: 4, d: 16 },
    { name: "head 32, GQA 4/1", lengths: [257], hq: 4, hkv: 1, d: 32 },
    { name: "head 80 (fallback kernel), GQA 4/2", lengths: [3, 190], hq: 4, hkv: 2, d: 80 },
    { name: "head 128, GQA 8/2, 2100 tokens", lengths: [2100], hq: 8, hkv: 2, d: 128 },
  ];
  for (const c of cases) {
    for (const mode of ["dense", "block", "window"] as const) {
      it(`${c.name}: ${mode}`, () => {
        const tokens = c.lengths.reduce((a, b) => a + b, 0);
        const cu = Int32Array.from([
          0,
          ...c.lengths.map((_, i) => c.lengths.slice(0, i + 1).reduce((a, b) => a + b, 0)),
        ]);
        const q = roundBf16(random(tokens * c.hq * c.d, -2, 2));
        const k = roundBf16(random(tokens * c.hkv * c.d, -2, 2));
        const v = roundBf16(random(tokens * c.hkv * c.d));
        const mask = mode === "dense" ? undefined : maskOf(mode, c.hq, rng);
        const scale = 1 / Math.sqrt(c.d);
        const out = poisoned([tokens, c.hq, c.d]);
        cuda.attentionPrefill(
          out,
          cuda.fromHost("f32", [tokens, c.hq, c.d], q),
          cuda.fromHost("f32", [tokens, c.hkv, c.d], k),
          cuda.fromHost("f32", [tokens, c.hkv, c.d], v),
          cu,
          scale,
          mask,
        );
        const ref = cpu.empty("f32", [tokens, c.hq, c.d]);
        cpu.attentionPrefill(
          ref,
          cpu.fromHost("f32", [tokens, c.hq, c.d], q),
          cpu.fromHost("f32", [tokens, c.hkv, c.d], k),
          cpu.fromHost("f32", [tokens, c.hkv, c.d], v),
          cu,
          scale,
          mask,
        );
        assertClose(host(cuda, out), host(cpu, ref), 8e-3, `${c.name} ${mode}`);
      });
    }
  }
});

function cacheOf(
  backend: Backend,
  dtype: "f32" | "bf16",
  kvHeads: number,
  headDim: number,
  slots: number,
  ringCap: Int32Array,
): KvCacheLayer {
  const sinkTokens = 64;
  const regionOffset = new Int32Array(slots * kvHeads);
  let entries = 0;
  for (let s = 0; s < slots; s++) {
    for (let g = 0; g < kvHeads; g++) {
      regionOffset[s * kvHeads + g] = entries;
      entries += sinkTokens + ringCap[g]!;
    }
  }
  return {
    k: backend.empty(dtype, [entries, headDim]),
    v: backend.empty(dtype, [entries, headDim]),
    kvHeads,
    headDim,
    sinkTokens,
    ringCap,
    regionOffset,
  };
}

describe("kvAppend + attentionDecode (split-K over the sink + ring cache, batched, variable lengths)", () => {
  const rng = () => random(1, 0, 1)[0]!;
  const cases = [
    {
      name: "head 128, GQA 32/8, dense ring",
      hq: 32,
      hkv: 8,
      d: 128,
      lengths: [1, 64, 65, 300, 2500],
      ring: 2600,
    },
    {
      name: "head 128, GQA 32/8, rings that wrap",
      hq: 32,
      hkv: 8,
      d: 128,
      lengths: [70, 900, 2000],
      ring: 0,
    },
    {
      name: "head 64, GQA 6/2 (3 heads per KV head)",
      hq: 6,
      hkv: 2,
      d: 64,
      lengths: [1, 500, 1500],
      ring: 0,
    },
    { name: "head 16, MHA", hq: 4, hkv: 4, d: 16, lengths: [17, 333], ring: 0 },
    { name: "head 80 (fallback kernel), GQA 4/2", hq: 4, hkv: 2, d: 80, lengths: [9, 400], ring: 0 },
    {
      name: "head 128, GQA 64/8 (8 heads per KV head), 20000 tokens",
      hq: 64,
      hkv: 8,
      d: 128,
      lengths: [20000],
      ring: 20000,
    },
  ];
  for (const c of cases) {
    for (const dtype of ["bf16", "f32"] as const) {
      for (const masked of [false, true]) {
        it(`${c.name}, ${dtype} cache, ${masked ? "window mask" : "no mask"}`, () => {
          const batch = c.lengths.length;
          const maxLen = Math.max(...c.lengths);
          const ringCap = Int32Array.from({ length: c.hkv }, (_, g) =>
            c.ring > 0 ? c.ring : 64 * (2 + ((g * 5) % 7)) + (g % 2) * 37,
          );
          const slots = batch + 1;
          const cudaCache = cacheOf(cuda, dtype, c.hkv, c.d, slots, ringCap);
          const cpuCache = cacheOf(cpu, "f32", c.hkv, c.d, slots, ringCap);
          // Sequence b lives in slot b + 1 (slot 0 stays empty), appended in chunks no longer than a ring.
          const chunk = Math.min(...ringCap);
          for (let b = 0; b < batch; b++) {
            const n = c.lengths[b]!;
            const k = random(n * c.hkv * c.d, -2, 2);
            const v = random(n * c.hkv * c.d);
            const kRef = dtype === "bf16" ? roundBf16(k) : k;
            const vRef = dtype === "bf16" ? roundBf16(v) : v;
            for (let p0 = 0; p0 < n; p0 += chunk) {
              const count = Math.min(chunk, n - p0);
              const positions = Int32Array.from({ length: count }, (_, i) => p0 + i);
              const slotList = new Int32Array(count).fill(b + 1);
              const rows = [p0 * c.hkv * c.d, (p0 + count) * c.hkv * c.d] as const;
              cuda.kvAppend(
                cudaCache,
                cuda.fromHost("f32", [count, c.hkv, c.d], k.subarray(...rows)),
                cuda.fromHost("f32", [count, c.hkv, c.d], v.subarray(...rows)),
                slotList,
                positions,
              );
              cpu.kvAppend(
                cpuCache,
                cpu.fromHost("f32", [count, c.hkv, c.d], kRef.subarray(...rows)),
                cpu.fromHost("f32", [count, c.hkv, c.d], vRef.subarray(...rows)),
                slotList,
                positions,
              );
            }
          }
          const q = random(batch * c.hq * c.d, -2, 2);
          const slotsArray = Int32Array.from({ length: batch }, (_, b) => b + 1);
          const seqLens = Int32Array.from(c.lengths);
          const mask = masked ? maskOf("window", c.hq, rng) : undefined;
          const scale = 1 / Math.sqrt(c.d);
          const out = poisoned([batch, c.hq, c.d]);
          cuda.attentionDecode(
            out,
            cuda.fromHost("f32", [batch, c.hq, c.d], q),
            cudaCache,
            slotsArray,
            seqLens,
            scale,
            mask,
          );
          const ref = cpu.empty("f32", [batch, c.hq, c.d]);
          cpu.attentionDecode(
            ref,
            cpu.fromHost("f32", [batch, c.hq, c.d], q),
            cpuCache,
            slotsArray,
            seqLens,
            scale,
            mask,
          );
          assertClose(host(cuda, out), host(cpu, ref), 2e-5, `${c.name} ${dtype}`);
          if (dtype === "f32") {
            assert.ok(
              Buffer.from((cuda.toHost(cudaCache.k) as Float32Array).buffer).equals(
                Buffer.from((cpu.toHost(cpuCache.k) as Float32Array).buffer),
              ),
              "the f32 cache equals the CPU cache bit for bit",
            );
          }
          assert.ok(maxLen > 0);
        });
      }
    }
  }

  it("rejects a slot outside the cache with the op's name", () => {
    const cache = cacheOf(cuda, "bf16", 2, 64, 2, Int32Array.of(64, 64));
    assert.throws(
      () =>
        cuda.attentionDecode(
          cuda.empty("f32", [1, 4, 64]),
          cuda.empty("f32", [1, 4, 64]),
          cache,
          Int32Array.of(2),
          Int32Array.of(1),
          0.1,
        ),
      /attentionDecode: slots\[0\] = 2 is outside the cache's 2 slots/,
    );
  });
});

describe("errors and memory", () => {
  it("toHost into a given array: the same values as a fresh one, in that array", () => {
    const values = random(3 * 1024 * 1024, -5, 5);
    const t = cuda.fromHost("f32", [3, 1024, 1024], values);
    const into = new Float32Array(values.length);
    assert.equal(cuda.toHost(t, into), into);
    assert.deepEqual(into, values);
    assert.throws(() => cuda.toHost(t, new Float32Array(7)), /into holds 28 bytes/);
  });

  it("an allocation larger than the GPU throws a JS error naming the op and the size, and the backend goes on", () => {
    assert.throws(
      () => cuda.empty("f32", [2 ** 40 / 4]),
      /empty: CUDA error 2 \(cudaErrorMemoryAllocation\).*1099511627776 bytes requested/,
    );
    const t = cuda.fromHost("f32", [3], Float32Array.of(1, 2, 3));
    cuda.add(t, t, t);
    assert.deepEqual(Array.from(host(cuda, t)), [2, 4, 6]);
  });

  it("a head dim the kernels do not support is refused with the op's name and sizes", () => {
    const q = cuda.empty("f32", [2, 1, 512]);
    assert.throws(
      () =>
        cuda.attentionPrefill(
          cuda.empty("f32", [2, 1, 512]),
          q,
          cuda.empty("f32", [2, 1, 512]),
          cuda.empty("f32", [2, 1, 512]),
          Int32Array.of(0, 2),
          0.1,
        ),
      /attentionPrefill: head dims above 256 are not supported \[tokens=2, sequences=1, queryHeads=1, kvHeads=1, headDim=512\]/,
    );
  });
});

// ---- the profiling backward (DESIGN.md: Attention influence): every op on the GPU against the CPU reference ----

describe("backward ops (profiling) against the CPU reference", () => {
  for (const [m, n, k] of [
    [1, 1, 1],
    [37, 80, 96],
    [300, 1000, 257],
    [1025, 384, 1024],
  ] as const) {
    for (const [dtype, mode] of PRECISIONS.flatMap((mode) =>
      (["bf16", "f16", "f32"] as const).map((d) => [d, mode] as const),
    )) {
      it(`matmulBackward ${m}×${n}×${k}, ${dtype} weights, ${mode}, overwrite and accumulate, gradients of 1e-7`, () => {
        const wValues = random(n * k, -0.1, 0.1);
        const wData = dtype === "bf16" ? toBf16Bits(wValues) : dtype === "f16" ? toF16Bits(wValues) : wValues;
        // Gradients spanning magnitudes, some far below f16's normal range.
        const dy = random(m * n).map((value, i) => value * (i % 3 === 0 ? 1e-7 : 1));
        const start = random(m * k);
        for (const accumulate of [false, true]) {
          const dx = cuda.fromHost(
            "f32",
            [m, k],
            accumulate ? start : new Float32Array(m * k).fill(Number.NaN),
          );
          withPrecision(mode, () =>
            cuda.matmulBackward(
              dx,
              cuda.fromHost("f32", [m, n], dy),
              cuda.fromHost(dtype, [n, k], wData),
              accumulate,
            ),
          );
          const ref = cpu.fromHost("f32", [m, k], start);
          cpu.matmulBackward(
            ref,
            cpu.fromHost("f32", [m, n], dy),
            cpu.fromHost(dtype, [n, k], wData),
            accumulate,
          );
          const d = difference(host(cuda, dx), host(cpu, ref));
          const label = `matmulBackward ${m}×${n}×${k} ${dtype} ${mode}${accumulate ? " accumulate" : ""}`;
          report(label, d);
          assertClose(
            host(cuda, dx),
            host(cpu, ref),
            mode === "split" || dtype === "f32" ? 1e-4 : 1e-3,
            label,
          );
        }
      });
    }
  }

  for (const [rows, dim] of [
    [1, 1],
    [7, 300],
    [130, 4096],
  ] as const) {
    it(`rmsNormBackward, siluMulBackward on ${rows}×${dim}`, () => {
      const x = random(rows * dim, -3, 3);
      const dy = random(rows * dim);
      const w = toBf16Bits(random(dim));
      const dx = poisoned([rows, dim]);
      cuda.rmsNormBackward(
        dx,
        cuda.fromHost("f32", [rows, dim], dy),
        cuda.fromHost("f32", [rows, dim], x),
        cuda.fromHost("bf16", [dim], w),
        1e-5,
      );
      const dxRef = cpu.empty("f32", [rows, dim]);
      cpu.rmsNormBackward(
        dxRef,
        cpu.fromHost("f32", [rows, dim], dy),
        cpu.fromHost("f32", [rows, dim], x),
        cpu.fromHost("bf16", [dim], w),
        1e-5,
      );
      const dxDiff = difference(host(cuda, dx), host(cpu, dxRef));
      report(`rmsNormBackward ${rows}×${dim}`, dxDiff);
      if (dim === 1) {
        // One element: dx is 0 up to rounding (x / |x| does not change with x), so only the absolute error means
        // anything.
        assert.ok(dxDiff.maxAbs < 1e-6, `rmsNormBackward 1×1: |Δ| = ${dxDiff.maxAbs}`);
      } else {
        assertClose(host(cuda, dx), host(cpu, dxRef), 1e-5, "rmsNormBackward");
      }

      // accumulate: dx += the gradient, the same bits as the gradient and a separate add.
      const start = random(rows * dim, -2, 2);
      const summed = cuda.fromHost("f32", [rows, dim], start);
      cuda.add(summed, summed, dx);
      const fused = cuda.fromHost("f32", [rows, dim], start);
      cuda.rmsNormBackward(
        fused,
        cuda.fromHost("f32", [rows, dim], dy),
        cuda.fromHost("f32", [rows, dim], x),
        cuda.fromHost("bf16", [dim], w),
        1e-5,
        true,
      );
      assert.deepEqual(host(cuda, fused), host(cuda, summed), "rmsNormBackward with accumulate");

      const gate = random(rows * dim, -8, 8);
      const dGate = poisoned([rows, dim]);
      const dUp = poisoned([rows, dim]);
      cuda.siluMulBackward(
        dGate,
        dUp,
        cuda.fromHost("f32", [rows, dim], dy),
        cuda.fromHost("f32", [rows, dim], gate),
        cuda.fromHost("f32", [rows, dim], x),
      );
      const dGateRef = cpu.empty("f32", [rows, dim]);
      const dUpRef = cpu.empty("f32", [rows, dim]);
      cpu.siluMulBackward(
        dGateRef,
        dUpRef,
        cpu.fromHost("f32", [rows, dim], dy),
        cpu.fromHost("f32", [rows, dim], gate),
        cpu.fromHost("f32", [rows, dim], x),
      );
      assertClose(host(cuda, dGate), host(cpu, dGateRef), 1e-5, "siluMulBackward dGate");
      assertClose(host(cuda, dUp), host(cpu, dUpRef), 1e-5, "siluMulBackward dUp");
    });
  }

  for (const [rows, vocab] of [
    [1, 7],
    [5, 1000],
    [33, 32001],
  ] as const) {
    it(`crossEntropy ${rows}×${vocab}: losses and dLogits, a nearly certain target included`, () => {
      const logits = random(rows * vocab, -10, 10);
      const targets = Int32Array.from({ length: rows }, (_, r) => (r * 7919 + 3) % vocab);
      // Row 0's target gets a logit far above the rest (1 − p ≈ 1e-5 or less).
      logits[targets[0]!] = 40;
      const losses = poisoned([rows]);
      const dLogits = poisoned([rows, vocab]);
      cuda.crossEntropy(
        losses,
        dLogits,
        cuda.fromHost("f32", [rows, vocab], logits),
        cuda.fromHost("i32", [rows], targets),
        1 / rows,
      );
      const lossesRef = cpu.empty("f32", [rows]);
      const dLogitsRef = cpu.empty("f32", [rows, vocab]);
      cpu.crossEntropy(
        lossesRef,
        dLogitsRef,
        cpu.fromHost("f32", [rows, vocab], logits),
        cpu.fromHost("i32", [rows], targets),
        1 / rows,
      );
      const d = difference(host(cuda, losses), host(cpu, lossesRef));
      report(`crossEntropy ${rows}×${vocab} losses`, d);
      assertClose(host(cuda, losses), host(cpu, lossesRef), 1e-6, "crossEntropy losses");
      assertClose(host(cuda, dLogits), host(cpu, dLogitsRef), 1e-6, "crossEntropy dLogits");
    });
  }

  it("crossEntropy rejects a target outside the vocabulary with the op's name", () => {
    assert.throws(
      () =>
        cuda.crossEntropy(
          cuda.empty("f32", [2]),
          cuda.empty("f32", [2, 5]),
          cuda.empty("f32", [2, 5]),
          cuda.fromHost("i32", [2], Int32Array.of(1, 5)),
          1,
        ),
      /crossEntropy: targets\[1\] = 5 is outside the vocabulary \[0, 5\)/,
    );
  });
});

interface AttentionCase {
  name: string;
  lengths: number[];
  hq: number;
  hkv: number;
  d: number;
}

const ATTENTION_CASES: AttentionCase[] = [
  { name: "head 64, GQA 6/2, mixed lengths", lengths: [1, 63, 64, 65, 200, 700], hq: 6, hkv: 2, d: 64 },
  { name: "head 128, GQA 32/8, one sequence of 1000", lengths: [1000], hq: 32, hkv: 8, d: 128 },
  { name: "head 128, GQA 8/2, 2100 + 77 tokens", lengths: [2100, 77], hq: 8, hkv: 2, d: 128 },
  { name: "head 64, MHA 4/4, 1500 tokens", lengths: [1500], hq: 4, hkv: 4, d: 64 },
  { name: "head 32 (CPU path on the CUDA backend), MHA 4/4", lengths: [100, 37], hq: 4, hkv: 4, d: 32 },
];

function cuSeqlensOf(lengths: number[]): Int32Array {
  const cu = new Int32Array(lengths.length + 1);
  for (let i = 0; i < lengths.length; i++) cu[i + 1] = cu[i]! + lengths[i]!;
  return cu;
}

/**
 * Worst relative error over the causal blocks above `floor` of their head's total, and the number checked.
 * influence is [sequences, heads, nb, nb].
 */
function influenceError(
  got: Float32Array,
  want: Float32Array,
  sequences: number,
  heads: number,
  nb: number,
  floor: number,
): { worst: number; checked: number } {
  let worst = 0;
  let checked = 0;
  for (let head = 0; head < sequences * heads; head++) {
    let total = 0;
    for (let i = 0; i < nb * nb; i++) total += want[head * nb * nb + i]!;
    for (let i = 0; i < nb * nb; i++) {
      const value = want[head * nb * nb + i]!;
      if (value <= floor * total) continue;
      worst = Math.max(worst, Math.abs(got[head * nb * nb + i]! - value) / value);
      checked++;
    }
  }
  return { worst, checked };
}

describe("attentionBackward options (a profile's last and first layers)", () => {
  for (const [hq, hkv, d] of [
    [8, 2, 128],
    [6, 2, 64],
  ] as const) {
    it(`queryStart equals dOut zeroed before it, gradients false writes only the influence (${hq}/${hkv} heads, head ${d})`, () => {
      const lengths = [1000, 300];
      const tokens = 1300;
      const cu = Int32Array.of(0, 1000, 1300);
      const scale = 1 / Math.sqrt(d);
      const qShape = [tokens, hq, d];
      const kvShape = [tokens, hkv, d];
      const qt = cuda.fromHost("f32", qShape, random(tokens * hq * d, -3, 3));
      const kt = cuda.fromHost("f32", kvShape, random(tokens * hkv * d, -3, 3));
      const vt = cuda.fromHost("f32", kvShape, random(tokens * hkv * d));
      const out = poisoned(qShape);
      const stats = poisoned([tokens, hq, 2]);
      cuda.attentionPrefill(out, qt, kt, vt, cu, scale, undefined, stats);
      const dOut = random(tokens * hq * d);
      const queryStart = 200; // block 3 of both sequences, not on a block edge
      const zeroed = dOut.slice();
      for (const [s, n] of lengths.entries()) {
        zeroed.fill(0, cu[s]! * hq * d, (cu[s]! + Math.min(queryStart, n)) * hq * d);
      }
      const backward = (grad: Float32Array, options?: { queryStart?: number; gradients?: boolean }) => {
        const dq = poisoned(qShape);
        const dk = poisoned(kvShape);
        const dv = poisoned(kvShape);
        const influence = cuda.empty("f32", [2, hq, 16, 16]);
        const dOutT = cuda.fromHost("f32", qShape, grad);
        cuda.attentionBackward(dq, dk, dv, dOutT, qt, kt, vt, out, stats, cu, scale, influence, options);
        return [dq, dk, dv, influence].map((t) => host(cuda, t));
      };
      const want = backward(zeroed);
      const got = backward(dOut, { queryStart });
      // The forward with queryStart: the rows from queryStart's tile on are the same bits, and what the backward
      // reads from it gives the same results.
      const tileStart = Math.floor(queryStart / 64) * 64;
      const partOut = poisoned(qShape);
      const partStats = poisoned([tokens, hq, 2]);
      cuda.attentionPrefill(partOut, qt, kt, vt, cu, scale, undefined, partStats, { queryStart });
      for (const [s, n] of lengths.entries()) {
        const rows = (t: Tensor, width: number) =>
          host(cuda, t).subarray((cu[s]! + tileStart) * width, (cu[s]! + n) * width);
        assert.deepEqual(
          rows(partOut, hq * d),
          rows(out, hq * d),
          `forward queryStart: out of sequence ${s}`,
        );
        assert.deepEqual(
          rows(partStats, hq * 2),
          rows(stats, hq * 2),
          `forward queryStart: stats of sequence ${s}`,
        );
      }
      {
        const dq = poisoned(qShape);
        const dk = poisoned(kvShape);
        const dv = poisoned(kvShape);
        const influence = cuda.empty("f32", [2, hq, 16, 16]);
        const g = cuda.fromHost("f32", qShape, dOut);
        cuda.attentionBackward(dq, dk, dv, g, qt, kt, vt, partOut, partStats, cu, scale, influence, {
          queryStart,
        });
        for (const [i, t] of [dq, dk, dv, influence].entries()) {
          assert.deepEqual(host(cuda, t), got[i], `backward after the forward with queryStart: output ${i}`);
        }
      }
      for (const [i, name] of ["dq", "dk", "dv", "influence"].entries()) {
        assert.deepEqual(got[i], want[i], `queryStart: ${name}`);
      }
      // q, k and v pinned (the profiler keeps their fp16 copies from a layer's forward to its backward): the same bits.
      const unpin = cuda.pinHalfCopies([qt, kt, vt]);
      const pinnedOut = poisoned(qShape);
      const pinnedStats = poisoned([tokens, hq, 2]);
      cuda.attentionPrefill(pinnedOut, qt, kt, vt, cu, scale, undefined, pinnedStats);
      assert.deepEqual(host(cuda, pinnedOut), host(cuda, out), "pinned q, k, v: out");
      assert.deepEqual(host(cuda, pinnedStats), host(cuda, stats), "pinned q, k, v: stats");
      const pinned = backward(dOut, { queryStart });
      unpin();
      for (const [i, name] of ["dq", "dk", "dv", "influence"].entries()) {
        assert.deepEqual(pinned[i], got[i], `pinned q, k, v: ${name}`);
      }
      const full = backward(dOut);
      const influenceOnly = backward(dOut, { gradients: false });
      assert.deepEqual(influenceOnly[3], full[3], "gradients false: influence");
      for (const i of [0, 1, 2])
        assert.ok(influenceOnly[i]!.every(Number.isNaN), `gradients false: output ${i} not written`);
      // And against the CPU reference with the same option.
      const cpuRun = () => {
        const b = cpu;
        const q2 = b.fromHost("f32", qShape, host(cuda, qt));
        const k2 = b.fromHost("f32", kvShape, host(cuda, kt));
        const v2 = b.fromHost("f32", kvShape, host(cuda, vt));
        const o2 = b.empty("f32", qShape);
        const s2 = b.empty("f32", [tokens, hq, 2]);
        b.attentionPrefill(o2, q2, k2, v2, cu, scale, undefined, s2);
        const dq = b.empty("f32", qShape);
        const dk = b.empty("f32", kvShape);
        const dv = b.empty("f32", kvShape);
        const influence = b.empty("f32", [2, hq, 16, 16]);
        b.attentionBackward(
          dq,
          dk,
          dv,
          b.fromHost("f32", qShape, dOut),
          q2,
          k2,
          v2,
          o2,
          s2,
          cu,
          scale,
          influence,
          {
            queryStart,
          },
        );
        return [dq, dk, dv].map((t) => host(b, t));
      };
      const ref = cpuRun();
      for (const [i, name] of ["dq", "dk", "dv"].entries())
        assertClose(got[i]!, ref[i]!, 1e-2, `queryStart vs CPU: ${name}`);
    });
  }
});

describe("profiling attention (stats prefill + attentionBackward with influence) against the CPU reference", () => {
  for (const [c, mode] of ATTENTION_PRECISIONS.flatMap((mode) =>
    ATTENTION_CASES.map((c) => [c, mode] as const),
  )) {
    it(`${c.name}, ${mode}: out and stats, dq/dk/dv, influence added to what is there`, () => {
      const tokens = c.lengths.reduce((a, b) => a + b, 0);
      const cu = cuSeqlensOf(c.lengths);
      const sequences = c.lengths.length;
      // Wide scores (std ≈ 3): rows with an entry above 1/2 (the dominant-entry path) are common.
      const q = random(tokens * c.hq * c.d, -3, 3);
      const k = random(tokens * c.hkv * c.d, -3, 3);
      const v = random(tokens * c.hkv * c.d);
      const dOut = random(tokens * c.hq * c.d);
      const scale = 1 / Math.sqrt(c.d);
      const qShape = [tokens, c.hq, c.d];
      const kvShape = [tokens, c.hkv, c.d];
      // One spare block per side: entries outside the causal blocks must stay as they are.
      const nb = Math.ceil(Math.max(...c.lengths) / 64) + 1;
      const start = random(sequences * c.hq * nb * nb, 0, 1e-3);

      const run = (b: Backend, poison: boolean) => {
        const make = (shape: number[]) => (poison ? poisoned(shape) : b.empty("f32", shape));
        const qt = b.fromHost("f32", qShape, q);
        const kt = b.fromHost("f32", kvShape, k);
        const vt = b.fromHost("f32", kvShape, v);
        const out = make(qShape);
        const stats = make([tokens, c.hq, 2]);
        b.attentionPrefill(out, qt, kt, vt, cu, scale, undefined, stats);
        const dq = make(qShape);
        const dk = make(kvShape);
        const dv = make(kvShape);
        const influence = b.fromHost("f32", [sequences, c.hq, nb, nb], start);
        b.attentionBackward(
          dq,
          dk,
          dv,
          b.fromHost("f32", qShape, dOut),
          qt,
          kt,
          vt,
          out,
          stats,
          cu,
          scale,
          influence,
        );
        return [out, stats, dq, dk, dv, influence].map((t) => host(b, t)) as [
          Float32Array,
          Float32Array,
          Float32Array,
          Float32Array,
          Float32Array,
          Float32Array,
        ];
      };
      const [out, stats, dq, dk, dv, influence] = withPrecision(mode, () => run(cuda, true));
      const [outRef, statsRef, dqRef, dkRef, dvRef, influenceRef] = run(cpu, false);
      // The same on bf16 operands rounded once (MOA_CUDA_BACKWARD_PRECISION=bf16), measured for the record.
      if (mode === "split") {
        const single = withPrecision("bf16", () => run(cuda, true));
        const rounded = influenceError(
          single[5].map((value, i) => value - start[i]!),
          influenceRef.map((value, i) => value - start[i]!),
          sequences,
          c.hq,
          nb,
          1e-4,
        );
        console.log(
          `  ${c.name} (bf16 operands): out ${difference(single[0], outRef).relative.toExponential(2)}, dq ${difference(single[2], dqRef).relative.toExponential(2)}, influence worst ${rounded.worst.toExponential(2)}`,
        );
      }
      const split = mode === "split";
      for (const [what, got, want, limit] of [
        ["out", out, outRef, split ? 1e-4 : 2e-3],
        ["stats", stats, statsRef, split ? 1e-5 : 2e-3],
        ["dq", dq, dqRef, 1e-2],
        ["dk", dk, dkRef, 1e-2],
        ["dv", dv, dvRef, 1e-2],
      ] as const) {
        report(`${c.name} ${mode} ${what}`, difference(got, want));
        assertClose(got, want, limit, `${c.name} ${mode} ${what}`);
      }
      // Outside the causal blocks of each sequence the influence is exactly what it was.
      for (let s = 0; s < sequences; s++) {
        const blocks = Math.ceil(c.lengths[s]! / 64);
        for (let h = 0; h < c.hq; h++) {
          for (let qb = 0; qb < nb; qb++) {
            for (let kb = 0; kb < nb; kb++) {
              if (kb <= qb && qb < blocks) continue;
              const index = ((s * c.hq + h) * nb + qb) * nb + kb;
              assert.equal(influence[index], start[index], `influence[${s}, ${h}, ${qb}, ${kb}] changed`);
            }
          }
        }
      }
      const added = influence.map((value, i) => value - start[i]!);
      const addedRef = influenceRef.map((value, i) => value - start[i]!);
      const { worst, checked } = influenceError(added, addedRef, sequences, c.hq, nb, 1e-4);
      console.log(
        `  ${c.name} ${mode} influence: worst relative error ${worst.toExponential(2)} over ${checked} blocks > 1e-4 of the head's total`,
      );
      assert.ok(checked > 0);
      assert.ok(worst < 0.02, `${c.name}: influence off by ${worst} on a block above 1e-4 of its head`);
    });
  }

  it("attentionBackward at 32768 tokens (32/8 heads, head 128) allocates only memory linear in the tokens", () => {
    const backend = cuda as Backend & { memoryInfo(): { free: number }; releaseScratch(): void };
    const [tokens, hq, hkv, d] = [32768, 32, 8, 128];
    const qShape = [tokens, hq, d];
    const kvShape = [tokens, hkv, d];
    const fill = (shape: number[], lo: number, hi: number) =>
      cuda.fromHost(
        "f32",
        shape,
        random(
          shape.reduce((a, b) => a * b, 1),
          lo,
          hi,
        ),
      );
    const q = fill(qShape, -1, 1);
    const k = fill(kvShape, -1, 1);
    const v = fill(kvShape, -1, 1);
    const dOut = fill(qShape, -1, 1);
    const out = cuda.empty("f32", qShape);
    const stats = cuda.empty("f32", [tokens, hq, 2]);
    const dq = cuda.empty("f32", qShape);
    const dk = cuda.empty("f32", kvShape);
    const dv = cuda.empty("f32", kvShape);
    const nb = tokens / 64;
    const influence = cuda.empty("f32", [1, hq, nb, nb]);
    backend.releaseScratch();
    backend.synchronize();
    const before = backend.memoryInfo().free;
    const cu = Int32Array.of(0, tokens);
    cuda.attentionPrefill(out, q, k, v, cu, 1 / Math.sqrt(d), undefined, stats);
    cuda.attentionBackward(dq, dk, dv, dOut, q, k, v, out, stats, cu, 1 / Math.sqrt(d), influence);
    backend.synchronize();
    const used = before - backend.memoryInfo().free;
    // bf16 hi + lo of q, k, v, dO, four floats per (token, query head) (the row statistics) and the
    // per-query-head fp32 partials of dk and dv (GQA), times the scratch's growth factor of 1.5 (device.cu:
    // scratch), plus the task list and allocator rounding.
    const exact =
      2 * 2 * (2 * tokens * hq * d + 2 * tokens * hkv * d) + 16 * tokens * hq + 2 * 4 * tokens * hq * d;
    const linear = 1.5 * exact + 64 * 2 ** 20;
    const matrix = 4 * tokens * tokens;
    console.log(
      `  attentionBackward n=${tokens}: ${(used / 2 ** 20).toFixed(0)} MiB of scratch (linear bound ${(linear / 2 ** 20).toFixed(0)} MiB; one n×n f32 matrix is ${(matrix / 2 ** 20).toFixed(0)} MiB)`,
    );
    assert.ok(used <= linear, `attentionBackward took ${used} bytes, more than the linear ${linear}`);
    const values = host(cuda, influence);
    assert.ok(values.every(Number.isFinite));
    assert.ok(values[(hq - 1) * nb * nb + (nb - 1) * nb]! > 0);
    for (const t of [q, k, v, dOut, out, stats, dq, dk, dv, influence]) cuda.free(t);
    backend.releaseScratch();
  });
});
