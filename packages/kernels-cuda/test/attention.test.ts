import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { KvCacheLayer, MoaMask } from "../src/index.js";
import {
  attendRef,
  attentionPrefillRef,
  backendUnderTest,
  keptRef,
  maskOf,
  maxAbsDiff,
  randomF32,
  rng,
  spanBlocksRef,
} from "./reference.js";

const backend = backendUnderTest();

interface PrefillCase {
  lengths: number[];
  queryHeads: number;
  kvHeads: number;
  headDim: number;
  mask?: MoaMask;
}

function runPrefill(c: PrefillCase, seed: number) {
  const random = rng(seed);
  const tokens = c.lengths.reduce((a, b) => a + b, 0);
  const cuSeqlens = Int32Array.from([
    0,
    ...c.lengths.map((_, i) => c.lengths.slice(0, i + 1).reduce((a, b) => a + b)),
  ]);
  const q = randomF32(random, tokens * c.queryHeads * c.headDim, -2, 2);
  const k = randomF32(random, tokens * c.kvHeads * c.headDim, -2, 2);
  const v = randomF32(random, tokens * c.kvHeads * c.headDim);
  const scale = 1 / Math.sqrt(c.headDim);
  const out = backend.empty("f32", [tokens, c.queryHeads, c.headDim]);
  backend.attentionPrefill(
    out,
    backend.fromHost("f32", [tokens, c.queryHeads, c.headDim], q),
    backend.fromHost("f32", [tokens, c.kvHeads, c.headDim], k),
    backend.fromHost("f32", [tokens, c.kvHeads, c.headDim], v),
    cuSeqlens,
    scale,
    c.mask,
  );
  const expected = attentionPrefillRef(q, k, v, cuSeqlens, c.queryHeads, c.kvHeads, c.headDim, scale, c.mask);
  return maxAbsDiff(backend.toHost(out) as Float32Array, expected);
}

describe("attentionPrefill", () => {
  it("dense causal attention over packed sequences of mixed lengths equals brute force", () => {
    expect(runPrefill({ lengths: [1, 65, 130, 7], queryHeads: 2, kvHeads: 2, headDim: 16 }, 1)).toBeLessThan(
      2e-5,
    );
  });

  it("GQA: query head h reads KV head floor(h·Hkv/Hq)", () => {
    expect(runPrefill({ lengths: [100, 37], queryHeads: 6, kvHeads: 2, headDim: 8 }, 2)).toBeLessThan(2e-5);
    expect(runPrefill({ lengths: [70], queryHeads: 4, kvHeads: 1, headDim: 12 }, 3)).toBeLessThan(2e-5);
  });

  it("block mask (DESIGN.md: each sequence at its own length, sink block + band of nb blocks) equals brute force", () => {
    // Small blocks so that many block boundaries, sinks and bands fall inside short sequences.
    const rules = [
      { alpha: 0, beta: 0 }, // nb = 1: sink + diagonal block only
      { alpha: 40, beta: 0.1 },
      { alpha: -20, beta: 0.5 },
      { alpha: 1e6, beta: 0 }, // dense
    ];
    const mask = maskOf("block", rules, 16, 16);
    expect(
      runPrefill({ lengths: [200, 63, 1, 97], queryHeads: 4, kvHeads: 2, headDim: 8, mask }, 4),
    ).toBeLessThan(2e-5);
  });

  it("block mask at the default geometry (B = G = 64) on lengths that are not multiples of 64", () => {
    const mask = maskOf("block", [
      { alpha: 64, beta: 0.25 },
      { alpha: 0, beta: 0 },
    ]);
    expect(runPrefill({ lengths: [300, 129], queryHeads: 2, kvHeads: 1, headDim: 16, mask }, 5)).toBeLessThan(
      2e-5,
    );
  });

  it("window mask (decode mask per row: j < G or j > i − nb(i+1)·B) equals brute force", () => {
    const mask = maskOf(
      "window",
      [
        { alpha: 10, beta: 0.3 },
        { alpha: 0, beta: 0 },
        { alpha: 33, beta: 0 },
      ],
      8,
      5, // a sink that is not a whole block
    );
    expect(runPrefill({ lengths: [90, 41], queryHeads: 3, kvHeads: 3, headDim: 8, mask }, 6)).toBeLessThan(
      2e-5,
    );
  });

  it("block mask with random rules and geometry equals brute force (property)", () => {
    fc.assert(
      fc.property(
        fc.record({
          seed: fc.integer({ min: 1, max: 1e6 }),
          blockSize: fc.constantFrom(4, 8, 16),
          sinkBlocks: fc.integer({ min: 0, max: 2 }),
          lengths: fc.array(fc.integer({ min: 1, max: 80 }), { minLength: 1, maxLength: 3 }),
          rules: fc.array(
            fc.record({ alpha: fc.integer({ min: -40, max: 80 }), beta: fc.constantFrom(0, 0.125, 0.5, 1) }),
            { minLength: 2, maxLength: 2 },
          ),
          mode: fc.constantFrom("block" as const, "window" as const),
        }),
        ({ seed, blockSize, sinkBlocks, lengths, rules, mode }) => {
          const mask = maskOf(mode, [...rules, ...rules], blockSize, sinkBlocks * blockSize);
          return runPrefill({ lengths, queryHeads: 4, kvHeads: 2, headDim: 4, mask }, seed) < 2e-5;
        },
      ),
      { numRuns: 40 },
    );
  });
});

/** A cache of `slots` sequences, every region sized sink + ringCap[g], filled with NaN (never written = never read). */
function makeCache(slots: number, kvHeads: number, headDim: number, sinkTokens: number, ringCap: Int32Array) {
  const regionOffset = new Int32Array(slots * kvHeads);
  let entries = 0;
  for (let s = 0; s < slots; s++) {
    for (let g = 0; g < kvHeads; g++) {
      regionOffset[s * kvHeads + g] = entries;
      entries += sinkTokens + ringCap[g]!;
    }
  }
  const poison = new Float32Array(entries * headDim).fill(Number.NaN);
  const cache: KvCacheLayer = {
    k: backend.fromHost("f32", [entries, headDim], poison),
    v: backend.fromHost("f32", [entries, headDim], poison),
    kvHeads,
    headDim,
    sinkTokens,
    ringCap,
    regionOffset,
  };
  return cache;
}

function rowsOf(data: Float32Array, start: number, count: number, width: number): Float32Array {
  return data.slice(start * width, (start + count) * width);
}

describe("kvAppend", () => {
  it("places token p at region[p] in the sink and region[G + (p − G) mod ringCap] in the ring", () => {
    const kvHeads = 2;
    const headDim = 3;
    const sink = 4;
    const ringCap = Int32Array.of(5, 3);
    const cache = makeCache(2, kvHeads, headDim, sink, ringCap);
    const tokens = 13;
    // Token p of slot 1 carries the value 1000·slot + 100·g + p in every dim.
    const k = new Float32Array(tokens * kvHeads * headDim);
    for (let p = 0; p < tokens; p++) {
      for (let g = 0; g < kvHeads; g++)
        k.fill(1000 + 100 * g + p, (p * kvHeads + g) * headDim, (p * kvHeads + g + 1) * headDim);
    }
    const kt = backend.fromHost("f32", [tokens, kvHeads, headDim], k);
    const vt = backend.fromHost(
      "f32",
      [tokens, kvHeads, headDim],
      k.map((x) => -x),
    );
    // Append in two calls (a prefill chunk, then single tokens), all into slot 1.
    backend.kvAppend(
      cache,
      backend.rows(kt, 0, 9),
      backend.rows(vt, 0, 9),
      new Int32Array(9).fill(1),
      Int32Array.from({ length: 9 }, (_, i) => i),
    );
    for (let p = 9; p < tokens; p++) {
      backend.kvAppend(
        cache,
        backend.rows(kt, p, 1),
        backend.rows(vt, p, 1),
        Int32Array.of(1),
        Int32Array.of(p),
      );
    }
    const keys = backend.toHost(cache.k) as Float32Array;
    const values = backend.toHost(cache.v) as Float32Array;
    for (let g = 0; g < kvHeads; g++) {
      const region = cache.regionOffset[1 * kvHeads + g]!;
      const cap = ringCap[g]!;
      for (let p = 0; p < tokens; p++) {
        const newest = p < sink || p > tokens - 1 - cap; // still cached after all appends
        if (!newest) continue;
        const entry = region + (p < sink ? p : sink + ((p - sink) % cap));
        expect(Array.from(rowsOf(keys, entry, 1, headDim))).toEqual(
          new Array(headDim).fill(1000 + 100 * g + p),
        );
        expect(Array.from(rowsOf(values, entry, 1, headDim))).toEqual(
          new Array(headDim).fill(-(1000 + 100 * g + p)),
        );
      }
      // Slot 0 was never written.
      const slot0 = rowsOf(keys, cache.regionOffset[g]!, sink + cap, headDim);
      expect(slot0.every(Number.isNaN)).toBe(true);
    }
  });
});

describe("attentionDecode", () => {
  /**
   * Generates `length` tokens one at a time for two sequences sharing a cache: append the token's k/v, decode its
   * query, and compare with the prefill row of the same token.
   */
  function decodeMatchesPrefill(options: {
    seed: number;
    lengths: [number, number];
    queryHeads: number;
    kvHeads: number;
    headDim: number;
    sinkTokens: number;
    ringCap: Int32Array;
    mask?: MoaMask;
    /** Which keys token i attends when decoding (default: the prefill mask's row). */
    expectedKeys?: (h: number, i: number) => number[];
  }): number {
    const { seed, lengths, queryHeads, kvHeads, headDim, sinkTokens, ringCap, mask } = options;
    const random = rng(seed);
    const cache = makeCache(3, kvHeads, headDim, sinkTokens, ringCap);
    const slotsOf = [2, 0]; // sequences live in slots 2 and 0
    const scale = 1 / Math.sqrt(headDim);
    const data = lengths.map((n) => ({
      q: randomF32(random, n * queryHeads * headDim, -2, 2),
      k: randomF32(random, n * kvHeads * headDim, -2, 2),
      v: randomF32(random, n * kvHeads * headDim),
    }));
    // The reference for each sequence: brute-force prefill (window mask rows == decode).
    const reference = data.map((d, s) => {
      const n = lengths[s]!;
      if (!options.expectedKeys) {
        return attentionPrefillRef(
          d.q,
          d.k,
          d.v,
          Int32Array.of(0, n),
          queryHeads,
          kvHeads,
          headDim,
          scale,
          mask,
        );
      }
      const out = new Float64Array(n * queryHeads * headDim);
      for (let i = 0; i < n; i++) {
        for (let h = 0; h < queryHeads; h++) {
          const g = Math.floor((h * kvHeads) / queryHeads);
          const at = (buffer: Float32Array) => (j: number) =>
            buffer.subarray((j * kvHeads + g) * headDim, (j * kvHeads + g + 1) * headDim);
          const query = d.q.subarray((i * queryHeads + h) * headDim, (i * queryHeads + h + 1) * headDim);
          out.set(
            attendRef(query, at(d.k), at(d.v), options.expectedKeys(h, i), scale, headDim),
            (i * queryHeads + h) * headDim,
          );
        }
      }
      return out;
    });

    const qStep = backend.empty("f32", [2, queryHeads, headDim]);
    const kStep = backend.empty("f32", [2, kvHeads, headDim]);
    const vStep = backend.empty("f32", [2, kvHeads, headDim]);
    const outStep = backend.empty("f32", [2, queryHeads, headDim]);
    let worst = 0;
    for (let i = 0; i < Math.max(...lengths); i++) {
      const active = [0, 1].filter((s) => i < lengths[s]!);
      const batch = active.length;
      active.forEach((s, b) => {
        const d = data[s]!;
        backend.write(qStep, rowsOf(d.q, i, 1, queryHeads * headDim), b * queryHeads * headDim);
        backend.write(kStep, rowsOf(d.k, i, 1, kvHeads * headDim), b * kvHeads * headDim);
        backend.write(vStep, rowsOf(d.v, i, 1, kvHeads * headDim), b * kvHeads * headDim);
      });
      const slots = Int32Array.from(active, (s) => slotsOf[s]!);
      backend.kvAppend(
        cache,
        backend.rows(kStep, 0, batch),
        backend.rows(vStep, 0, batch),
        slots,
        new Int32Array(batch).fill(i),
      );
      const out = backend.rows(outStep, 0, batch);
      backend.attentionDecode(
        out,
        backend.rows(qStep, 0, batch),
        cache,
        slots,
        new Int32Array(batch).fill(i + 1),
        scale,
        mask,
      );
      const got = backend.toHost(out) as Float32Array;
      active.forEach((s, b) => {
        const expected = reference[s]!.subarray(i * queryHeads * headDim, (i + 1) * queryHeads * headDim);
        worst = Math.max(worst, maxAbsDiff(rowsOf(got, b, 1, queryHeads * headDim), expected));
      });
    }
    return worst;
  }

  it("over a dense cache equals dense prefill, token by token (GQA, two sequences in one batch)", () => {
    const worst = decodeMatchesPrefill({
      seed: 1,
      lengths: [150, 97],
      queryHeads: 4,
      kvHeads: 2,
      headDim: 8,
      sinkTokens: 64,
      ringCap: Int32Array.of(150 - 64, 150 - 64),
    });
    expect(worst).toBeLessThan(2e-5);
  });

  it("over ring caches smaller than the sequence equals prefill with the window mask, token by token", () => {
    // Each KV head's ring holds the window of its widest query head at the longest length (as the runtime sizes
    // it), which is far shorter than the sequence, so the ring wraps many times.
    const blockSize = 8;
    const sinkTokens = 8;
    const rules = [
      { alpha: 8, beta: 0.1 },
      { alpha: 0, beta: 0 },
      { alpha: 16, beta: 0.2 },
      { alpha: 4, beta: 0.05 },
    ];
    const mask = maskOf("window", rules, blockSize, sinkTokens);
    const maxLength = 200;
    const windowAt = (h: number, n: number) =>
      spanBlocksRef(rules[h]!.alpha, rules[h]!.beta, n, blockSize) * blockSize;
    const ringCap = Int32Array.of(
      Math.max(windowAt(0, maxLength), windowAt(1, maxLength)),
      Math.max(windowAt(2, maxLength), windowAt(3, maxLength)),
    );
    expect(ringCap[0]).toBeLessThan(maxLength - sinkTokens);
    const worst = decodeMatchesPrefill({
      seed: 2,
      lengths: [maxLength, 131],
      queryHeads: 4,
      kvHeads: 2,
      headDim: 8,
      sinkTokens,
      ringCap,
      mask,
    });
    expect(worst).toBeLessThan(2e-5);
  });

  it("with random rules and ring capacities, decode equals window prefill (property)", () => {
    fc.assert(
      fc.property(
        fc.record({
          seed: fc.integer({ min: 1, max: 1e6 }),
          blockSize: fc.constantFrom(4, 8),
          sinkBlocks: fc.integer({ min: 0, max: 2 }),
          length: fc.integer({ min: 1, max: 90 }),
          rules: fc.array(
            fc.record({ alpha: fc.integer({ min: -10, max: 30 }), beta: fc.constantFrom(0, 0.125, 0.25) }),
            { minLength: 2, maxLength: 2 },
          ),
          spare: fc.integer({ min: 0, max: 5 }),
        }),
        ({ seed, blockSize, sinkBlocks, length, rules, spare }) => {
          const sinkTokens = sinkBlocks * blockSize;
          const mask = maskOf("window", rules, blockSize, sinkTokens);
          const widest = Math.max(
            ...rules.map((r) => spanBlocksRef(r.alpha, r.beta, length, blockSize) * blockSize),
          );
          // GQA 2:1, the ring sized by the widest rule (+ spare entries the window never reaches).
          const ringCap = Int32Array.of(widest + spare);
          const worst = decodeMatchesPrefill({
            seed,
            lengths: [length, Math.max(1, length >> 1)],
            queryHeads: 2,
            kvHeads: 1,
            headDim: 4,
            sinkTokens,
            ringCap,
            mask,
          });
          return worst < 2e-5;
        },
      ),
      { numRuns: 30 },
    );
  });

  it("without a mask attends every cached token: the sink plus the last ringCap tokens", () => {
    const sinkTokens = 4;
    const ringCap = Int32Array.of(6);
    const worst = decodeMatchesPrefill({
      seed: 3,
      lengths: [40, 12],
      queryHeads: 2,
      kvHeads: 1,
      headDim: 8,
      sinkTokens,
      ringCap,
      expectedKeys: (_h, i) => {
        const keys: number[] = [];
        for (let j = 0; j <= i; j++) if (j < sinkTokens || j > i - 6) keys.push(j);
        return keys;
      },
    });
    expect(worst).toBeLessThan(2e-5);
  });

  it("with a window wider than the ring reads only the cached part of the window", () => {
    const mask = maskOf("window", [{ alpha: 64, beta: 0 }], 8, 8);
    const worst = decodeMatchesPrefill({
      seed: 4,
      lengths: [60, 30],
      queryHeads: 1,
      kvHeads: 1,
      headDim: 4,
      sinkTokens: 8,
      ringCap: Int32Array.of(16),
      mask,
      expectedKeys: (h, i) => {
        const keys: number[] = [];
        for (let j = 0; j <= i; j++) if (keptRef(mask, h, i + 1, i, j) && (j < 8 || j > i - 16)) keys.push(j);
        return keys;
      },
    });
    expect(worst).toBeLessThan(2e-5);
  });
});
