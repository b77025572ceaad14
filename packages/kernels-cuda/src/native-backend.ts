import type { Backend, DType, HostArray, KvCacheLayer, MoaMask, Tensor } from "./backend.js";
import { checkShape, lastDim, leadingCount, OpArgs, sameDims, WEIGHT_DTYPES } from "./checks.js";
import type { NativeAddon, NativeCacheArgs, NativeMask, NativeRef } from "./native.js";
import {
  DTYPE_BYTES,
  DTYPE_CODE,
  DTYPES,
  elementCount,
  hostArrayOf,
  hostBytes,
  NativeTensor,
  type Storage,
} from "./tensor.js";

const F32: readonly DType[] = ["f32"];
const I32: readonly DType[] = ["i32"];

/** Resolves a tensor to what the addon receives for it during one call. */
export type RefOf = (t: NativeTensor) => NativeRef;

/**
 * Everything the two backends share: argument checks (in TypeScript, before any native call, so errors name
 * the op and the shapes), tensor views, and the op → addon calls. Subclasses own memory and decide how an op
 * reaches its storage (`execute`).
 */
export abstract class NativeBackend implements Backend {
  abstract readonly name: "cpu" | "cuda";
  abstract readonly deviceName: string;
  abstract readonly kvCacheDtype: "f32" | "bf16";

  protected constructor(protected readonly addon: NativeAddon) {}

  protected abstract allocate(byteLength: number, zero: boolean): Storage;
  protected abstract handleOf(storage: Storage, byteOffset: number, byteLength: number): NativeRef;
  /** A fresh host copy of the tensor's bytes. */
  /** The tensor's bytes, in `into` when given (exactly its size) or a new array. */
  protected abstract readBytes(t: NativeTensor, into?: Uint8Array): Uint8Array;
  protected abstract writeBytes(t: NativeTensor, byteOffset: number, data: Uint8Array): void;
  protected abstract releaseStorage(storage: Storage): void;
  abstract synchronize(): void;
  abstract memoryInfo(): { free: number; total: number };

  /**
   * Calls the addon for one op. `hasKernel` tells whether the op has a kernel for this backend's storage;
   * `outputs` are the tensors it writes (read too, for in-place ops and caches).
   */
  protected abstract execute(
    hasKernel: boolean,
    inputs: readonly NativeTensor[],
    outputs: readonly NativeTensor[],
    call: (ref: RefOf) => void,
  ): void;

  // ---- memory ----

  empty(dtype: DType, shape: readonly number[], options: { readonly uninitialized?: boolean } = {}): Tensor {
    if (!DTYPES.includes(dtype)) throw new TypeError(`empty: unknown dtype ${String(dtype)}`);
    checkShape("empty", shape);
    const byteLength = elementCount(shape) * DTYPE_BYTES[dtype];
    const storage = this.allocate(byteLength, options.uninitialized !== true);
    const device = this.name;
    return new NativeTensor(
      dtype,
      [...shape],
      device,
      byteLength,
      storage,
      0,
      false,
      this.handleOf(storage, 0, byteLength),
    );
  }

  fromHost(dtype: DType, shape: readonly number[], data: HostArray): Tensor {
    if (!DTYPES.includes(dtype)) throw new TypeError(`fromHost: unknown dtype ${String(dtype)}`);
    checkShape("fromHost", shape);
    const bytes = hostBytes("fromHost", dtype, data);
    const expected = elementCount(shape) * DTYPE_BYTES[dtype];
    if (bytes.byteLength !== expected) {
      throw new RangeError(
        `fromHost: ${dtype}[${shape.join(", ")}] needs ${expected / DTYPE_BYTES[dtype]} elements, ` +
          `got ${bytes.byteLength / DTYPE_BYTES[dtype]}`,
      );
    }
    const t = this.empty(dtype, shape) as NativeTensor;
    this.writeBytes(t, 0, bytes);
    return t;
  }

  toHost(t: Tensor, into?: HostArray): HostArray {
    const args = new OpArgs("toHost", this.name, { t });
    const tensor = args.tensor("t", t, DTYPES);
    if (into === undefined) return hostArrayOf(tensor.dtype, this.readBytes(tensor));
    const bytes = hostBytes("toHost", tensor.dtype, into);
    if (bytes.byteLength !== tensor.byteLength) {
      args.fail(`into holds ${bytes.byteLength} bytes, the tensor ${tensor.byteLength}`, RangeError);
    }
    this.readBytes(tensor, bytes);
    return into;
  }

  write(t: Tensor, data: HostArray, elementOffset = 0): void {
    const args = new OpArgs("write", this.name, { t });
    const tensor = args.tensor("t", t, DTYPES);
    const bytes = hostBytes("write", tensor.dtype, data);
    const size = DTYPE_BYTES[tensor.dtype];
    if (!Number.isSafeInteger(elementOffset) || elementOffset < 0) {
      args.fail(`elementOffset must be an integer ≥ 0, got ${elementOffset}`, RangeError);
    }
    if (elementOffset * size + bytes.byteLength > tensor.byteLength) {
      args.fail(
        `${bytes.byteLength / size} elements at offset ${elementOffset} overrun the tensor's ${tensor.elementCount}`,
        RangeError,
      );
    }
    this.writeBytes(tensor, elementOffset * size, bytes);
  }

  rows(t: Tensor, rowStart: number, rows: number): Tensor {
    const args = new OpArgs("rows", this.name, { t });
    const tensor = args.tensor("t", t, DTYPES);
    args.minRank("t", tensor, 1);
    const total = tensor.shape[0]!;
    if (!Number.isSafeInteger(rowStart) || !Number.isSafeInteger(rows) || rowStart < 0 || rows < 0) {
      args.fail(`rowStart and rows must be integers ≥ 0, got ${rowStart} and ${rows}`, RangeError);
    }
    if (rowStart + rows > total)
      args.fail(`rows [${rowStart}, ${rowStart + rows}) exceed the ${total} rows`, RangeError);
    const rowBytes = total === 0 ? 0 : tensor.byteLength / total;
    const byteOffset = tensor.byteOffset + rowStart * rowBytes;
    const byteLength = rows * rowBytes;
    return new NativeTensor(
      tensor.dtype,
      [rows, ...tensor.shape.slice(1)],
      tensor.device,
      byteLength,
      tensor.storage,
      byteOffset,
      true,
      this.handleOf(tensor.storage, byteOffset, byteLength),
    );
  }

  reshape(t: Tensor, shape: readonly number[]): Tensor {
    const args = new OpArgs("reshape", this.name, { t });
    const tensor = args.tensor("t", t, DTYPES);
    if (!Array.isArray(shape) || !shape.every((dim) => Number.isSafeInteger(dim) && dim >= 0)) {
      args.fail(`shape must be a list of integers ≥ 0, got [${String(shape)}]`, RangeError);
    }
    if (elementCount(shape) !== tensor.elementCount) {
      args.fail(
        `[${shape.join(", ")}] holds ${elementCount(shape)} elements, the tensor ${tensor.elementCount}`,
      );
    }
    return new NativeTensor(
      tensor.dtype,
      [...shape],
      tensor.device,
      tensor.byteLength,
      tensor.storage,
      tensor.byteOffset,
      true,
      tensor.handle,
    );
  }

  pinHalfCopies(tensors: readonly Tensor[]): () => void {
    const pinned = this.pinnable("pinHalfCopies", tensors);
    return this.pin(pinned);
  }

  pinHalfOutputs(tensors: readonly Tensor[]): () => void {
    const pinned = this.pinnable("pinHalfOutputs", tensors);
    const other = pinned.find((t) => t.dtype !== "f32");
    if (other !== undefined) {
      throw new TypeError(
        `pinHalfOutputs: ops write f32 tensors, got ${other.dtype}[${other.shape.join(", ")}]`,
      );
    }
    return this.pinOutputs(pinned);
  }

  halfCopyBytes(tensors: readonly Tensor[]): number {
    if (this.name === "cpu") return 0;
    return this.pinnable("halfCopyBytes", tensors).reduce((sum, t) => sum + 2 * t.elementCount, 0);
  }

  /** The distinct live tensors of `tensors` that have a scaled fp16 copy (f32, bf16). */
  private pinnable(op: string, tensors: readonly Tensor[]): NativeTensor[] {
    if (!Array.isArray(tensors)) throw new TypeError(`${op}: tensors must be an array of tensors`);
    const chosen = new Map<bigint | Uint8Array, NativeTensor>();
    tensors.forEach((t, i) => {
      const tensor = new OpArgs(op, this.name, { [`tensors[${i}]`]: t }).tensor(`tensors[${i}]`, t, DTYPES);
      if ((tensor.dtype === "f32" || tensor.dtype === "bf16") && tensor.elementCount > 0) {
        const key = tensor.handle;
        const other = chosen.get(key);
        if (other === undefined || other.elementCount < tensor.elementCount) chosen.set(key, tensor);
      }
    });
    return [...chosen.values()];
  }

  /** Makes the copies of `tensors` (already checked); the CPU reference has none to make. */
  protected pin(_tensors: readonly NativeTensor[]): () => void {
    return () => {};
  }

  /** Makes empty copies for the next op writing `tensors` (already checked); the CPU reference has none. */
  protected pinOutputs(_tensors: readonly NativeTensor[]): () => void {
    return () => {};
  }

  free(t: Tensor): void {
    if (!(t instanceof NativeTensor) || t.device !== this.name) {
      throw new TypeError(`free: not a tensor of the ${this.name} backend`);
    }
    if (t.released) return;
    t.released = true;
    if (!t.isView && !t.storage.freed) {
      t.storage.freed = true;
      this.releaseStorage(t.storage);
    }
  }

  // ---- ops ----

  matmul(out: Tensor, x: Tensor, w: Tensor, bias?: Tensor, exact = false): void {
    const args = new OpArgs("matmul", this.name, { out, x, w, bias });
    const o = args.tensor("out", out, F32);
    const xt = args.tensor("x", x, F32);
    const wt = args.tensor("w", w, WEIGHT_DTYPES);
    const bt = bias === undefined ? undefined : args.tensor("bias", bias, WEIGHT_DTYPES);
    args.minRank("x", xt, 1);
    args.rank("w", wt, 2);
    const [n, k] = wt.shape as [number, number];
    if (lastDim(xt.shape) !== k)
      args.fail(`x's last dim (${lastDim(xt.shape)}) must equal w's last dim (${k})`);
    args.shape("out", o, [...xt.shape.slice(0, -1), n]);
    if (bt) args.shape("bias", bt, [n]);
    args.noOverlap("out", o, "x", xt);
    args.noOverlap("out", o, "w", wt);
    if (typeof exact !== "boolean") args.fail("exact must be a boolean", TypeError);
    const m = leadingCount(xt.shape);
    this.execute(true, bt ? [xt, wt, bt] : [xt, wt], [o], (ref) =>
      this.addon.matmul(
        ref(o),
        ref(xt),
        ref(wt),
        DTYPE_CODE[wt.dtype],
        bt ? ref(bt) : null,
        DTYPE_CODE[bt?.dtype ?? "f32"],
        m,
        n,
        k,
        exact,
      ),
    );
  }

  embedding(out: Tensor, ids: Tensor, table: Tensor): void {
    const args = new OpArgs("embedding", this.name, { out, ids, table });
    const o = args.tensor("out", out, F32);
    const it = args.tensor("ids", ids, I32);
    const tt = args.tensor("table", table, WEIGHT_DTYPES);
    args.rank("table", tt, 2);
    const [vocab, dim] = tt.shape as [number, number];
    args.shape("out", o, [...it.shape, dim]);
    const tokens = elementCount(it.shape);
    this.execute(true, [it, tt], [o], (ref) =>
      this.addon.embedding(ref(o), ref(it), tokens, ref(tt), DTYPE_CODE[tt.dtype], vocab, dim),
    );
  }

  rmsNorm(out: Tensor, x: Tensor, weight: Tensor, eps: number): void {
    const args = new OpArgs("rmsNorm", this.name, { out, x, weight });
    const o = args.tensor("out", out, F32);
    const xt = args.tensor("x", x, F32);
    const wt = args.tensor("weight", weight, WEIGHT_DTYPES);
    args.minRank("x", xt, 1);
    args.sameShape("out", o, "x", xt);
    const dim = lastDim(xt.shape);
    args.shape("weight", wt, [dim]);
    args.finite("eps", eps);
    if (eps < 0) args.fail(`eps must be ≥ 0, got ${eps}`);
    const rows = leadingCount(xt.shape);
    this.execute(true, [xt, wt], [o], (ref) =>
      this.addon.rmsNorm(ref(o), ref(xt), ref(wt), DTYPE_CODE[wt.dtype], rows, dim, eps),
    );
  }

  rope(x: Tensor, positions: Tensor, invFreq: Tensor, attentionScale: number): void {
    const args = new OpArgs("rope", this.name, { x, positions, invFreq });
    const xt = args.tensor("x", x, F32);
    const pt = args.tensor("positions", positions, I32);
    const ft = args.tensor("invFreq", invFreq, F32);
    args.rank("x", xt, 3);
    const [tokens, heads, headDim] = xt.shape as [number, number, number];
    args.shape("positions", pt, [tokens]);
    args.rank("invFreq", ft, 1);
    const rotaryHalf = ft.shape[0]!;
    // The contract's invFreq has headDim/2 entries; fewer rotate only the leading dims (partial rotary).
    if (rotaryHalf < 1 || 2 * rotaryHalf > headDim) {
      args.fail(`invFreq must have between 1 and headDim/2 (${headDim / 2}) entries, got ${rotaryHalf}`);
    }
    args.finite("attentionScale", attentionScale);
    this.execute(true, [pt, ft], [xt], (ref) =>
      this.addon.rope(ref(xt), ref(pt), ref(ft), tokens, heads, headDim, rotaryHalf, attentionScale),
    );
  }

  siluMul(out: Tensor, gate: Tensor, up: Tensor): void {
    const args = new OpArgs("siluMul", this.name, { out, gate, up });
    const o = args.tensor("out", out, F32);
    const g = args.tensor("gate", gate, F32);
    const u = args.tensor("up", up, F32);
    args.sameShape("gate", g, "up", u);
    args.sameShape("out", o, "gate", g);
    this.execute(true, [g, u], [o], (ref) => this.addon.siluMul(ref(o), ref(g), ref(u), o.elementCount));
  }

  add(out: Tensor, a: Tensor, b: Tensor): void {
    const args = new OpArgs("add", this.name, { out, a, b });
    const o = args.tensor("out", out, F32);
    const at = args.tensor("a", a, F32);
    const bt = args.tensor("b", b, F32);
    args.sameShape("a", at, "b", bt);
    args.sameShape("out", o, "a", at);
    this.execute(true, [at, bt], [o], (ref) => this.addon.add(ref(o), ref(at), ref(bt), o.elementCount));
  }

  softmax(out: Tensor, x: Tensor): void {
    const args = new OpArgs("softmax", this.name, { out, x });
    const o = args.tensor("out", out, F32);
    const xt = args.tensor("x", x, F32);
    args.minRank("x", xt, 1);
    args.sameShape("out", o, "x", xt);
    const cols = lastDim(xt.shape);
    const rows = leadingCount(xt.shape);
    this.execute(true, [xt], [o], (ref) => this.addon.softmax(ref(o), ref(xt), rows, cols));
  }

  attentionColumnSums(out: Tensor, q: Tensor, k: Tensor, cuSeqlens: Int32Array, scale: number): void {
    const args = new OpArgs("attentionColumnSums", this.name, { out, q, k });
    const o = args.tensor("out", out, F32);
    const qt = args.tensor("q", q, F32);
    const kt = args.tensor("k", k, F32);
    const { tokens, queryHeads, kvHeads, headDim } = attentionDims(args, qt, kt, "k");
    args.shape("out", o, [tokens, kvHeads]);
    args.noOverlap("out", o, "q", qt);
    args.noOverlap("out", o, "k", kt);
    const sequences = checkCuSeqlens(args, cuSeqlens, tokens);
    args.finite("scale", scale);
    this.execute(true, [qt, kt], [o], (ref) =>
      this.addon.attentionColumnSums(
        ref(o),
        ref(qt),
        ref(kt),
        cuSeqlens,
        sequences,
        tokens,
        queryHeads,
        kvHeads,
        headDim,
        scale,
      ),
    );
  }

  attentionPrefill(
    out: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cuSeqlens: Int32Array,
    scale: number,
    mask?: MoaMask,
    stats?: Tensor,
    options: { readonly queryStart?: number } = {},
  ): void {
    const args = new OpArgs("attentionPrefill", this.name, { out, q, k, v, stats });
    const o = args.tensor("out", out, F32);
    const qt = args.tensor("q", q, F32);
    const kt = args.tensor("k", k, F32);
    const vt = args.tensor("v", v, F32);
    args.rank("q", qt, 3);
    args.rank("k", kt, 3);
    args.sameShape("k", kt, "v", vt);
    args.sameShape("out", o, "q", qt);
    const { tokens, queryHeads, kvHeads, headDim } = attentionDims(args, qt, kt);
    for (const [name, t] of [
      ["q", qt],
      ["k", kt],
      ["v", vt],
    ] as const) {
      args.noOverlap("out", o, name, t);
    }
    const sequences = checkCuSeqlens(args, cuSeqlens, tokens);
    args.finite("scale", scale);
    const queryStart = options.queryStart ?? 0;
    if (!Number.isSafeInteger(queryStart) || queryStart < 0 || queryStart > 2 ** 31 - 1) {
      args.fail(`options.queryStart must be an integer in [0, 2³¹), got ${queryStart}`, RangeError);
    }
    if (queryStart > 0 && stats === undefined) {
      args.fail("options.queryStart is for the profiling prefill: pass stats too", RangeError);
    }
    if (stats !== undefined) {
      const st = args.tensor("stats", stats, F32);
      args.shape("stats", st, [tokens, queryHeads, 2]);
      if (mask !== undefined)
        args.fail("stats are for attentionBackward, which is dense: pass mask undefined");
      for (const [name, t] of [
        ["out", o],
        ["q", qt],
        ["k", kt],
        ["v", vt],
      ] as const) {
        args.noOverlap("stats", st, name, t);
      }
      this.execute(hasAttentionKernel(headDim), [qt, kt, vt], [o, st], (ref) =>
        this.addon.attentionPrefillStats(
          ref(o),
          ref(st),
          ref(qt),
          ref(kt),
          ref(vt),
          cuSeqlens,
          sequences,
          tokens,
          queryHeads,
          kvHeads,
          headDim,
          scale,
          queryStart,
        ),
      );
      return;
    }
    if (mask !== undefined) args.mask(mask, queryHeads, ["block", "window"]);
    const nativeMask = toNativeMask(mask);
    this.execute(true, [qt, kt, vt], [o], (ref) =>
      this.addon.attentionPrefill(
        ref(o),
        ref(qt),
        ref(kt),
        ref(vt),
        cuSeqlens,
        sequences,
        tokens,
        queryHeads,
        kvHeads,
        headDim,
        scale,
        nativeMask,
      ),
    );
  }

  // ---- backward ops (profiling) ----

  matmulBackward(dx: Tensor, dy: Tensor, w: Tensor, accumulate = false): void {
    const args = new OpArgs("matmulBackward", this.name, { dx, dy, w });
    const o = args.tensor("dx", dx, F32);
    const dyt = args.tensor("dy", dy, F32);
    const wt = args.tensor("w", w, WEIGHT_DTYPES);
    args.minRank("dy", dyt, 1);
    args.rank("w", wt, 2);
    const [n, k] = wt.shape as [number, number];
    if (lastDim(dyt.shape) !== n)
      args.fail(`dy's last dim (${lastDim(dyt.shape)}) must equal w's first dim (${n})`);
    args.shape("dx", o, [...dyt.shape.slice(0, -1), k]);
    if (typeof accumulate !== "boolean") args.fail("accumulate must be a boolean", TypeError);
    args.noOverlap("dx", o, "dy", dyt);
    args.noOverlap("dx", o, "w", wt);
    const m = leadingCount(dyt.shape);
    this.execute(true, [dyt, wt], [o], (ref) =>
      this.addon.matmulBackward(ref(o), ref(dyt), ref(wt), DTYPE_CODE[wt.dtype], m, n, k, accumulate),
    );
  }

  rmsNormBackward(dx: Tensor, dy: Tensor, x: Tensor, weight: Tensor, eps: number, accumulate = false): void {
    const args = new OpArgs("rmsNormBackward", this.name, { dx, dy, x, weight });
    const o = args.tensor("dx", dx, F32);
    const dyt = args.tensor("dy", dy, F32);
    const xt = args.tensor("x", x, F32);
    const wt = args.tensor("weight", weight, WEIGHT_DTYPES);
    args.minRank("x", xt, 1);
    args.sameShape("dy", dyt, "x", xt);
    args.sameShape("dx", o, "x", xt);
    const dim = lastDim(xt.shape);
    args.shape("weight", wt, [dim]);
    args.finite("eps", eps);
    if (eps < 0) args.fail(`eps must be ≥ 0, got ${eps}`);
    args.noOverlap("dx", o, "dy", dyt);
    args.noOverlap("dx", o, "x", xt);
    const rows = leadingCount(xt.shape);
    this.execute(true, [dyt, xt, wt], [o], (ref) =>
      this.addon.rmsNormBackward(
        ref(o),
        ref(dyt),
        ref(xt),
        ref(wt),
        DTYPE_CODE[wt.dtype],
        rows,
        dim,
        eps,
        accumulate,
      ),
    );
  }

  siluMulBackward(dGate: Tensor, dUp: Tensor, dOut: Tensor, gate: Tensor, up: Tensor): void {
    const args = new OpArgs("siluMulBackward", this.name, { dGate, dUp, dOut, gate, up });
    const dg = args.tensor("dGate", dGate, F32);
    const du = args.tensor("dUp", dUp, F32);
    const d = args.tensor("dOut", dOut, F32);
    const g = args.tensor("gate", gate, F32);
    const u = args.tensor("up", up, F32);
    for (const [name, t] of [
      ["dGate", dg],
      ["dUp", du],
      ["gate", g],
      ["up", u],
    ] as const) {
      args.sameShape("dOut", d, name, t);
    }
    args.noOverlap("dGate", dg, "dUp", du);
    for (const [name, t] of [
      ["dOut", d],
      ["gate", g],
      ["up", u],
    ] as const) {
      args.noOverlap("dGate", dg, name, t);
      args.noOverlap("dUp", du, name, t);
    }
    this.execute(true, [d, g, u], [dg, du], (ref) =>
      this.addon.siluMulBackward(ref(dg), ref(du), ref(d), ref(g), ref(u), d.elementCount),
    );
  }

  attentionBackward(
    dq: Tensor,
    dk: Tensor,
    dv: Tensor,
    dOut: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    stats: Tensor,
    cuSeqlens: Int32Array,
    scale: number,
    influence?: Tensor,
    options: { readonly queryStart?: number; readonly gradients?: boolean } = {},
  ): void {
    const args = new OpArgs("attentionBackward", this.name, {
      dq,
      dk,
      dv,
      dOut,
      q,
      k,
      v,
      out,
      stats,
      influence,
    });
    const dqt = args.tensor("dq", dq, F32);
    const dkt = args.tensor("dk", dk, F32);
    const dvt = args.tensor("dv", dv, F32);
    const dot = args.tensor("dOut", dOut, F32);
    const qt = args.tensor("q", q, F32);
    const kt = args.tensor("k", k, F32);
    const vt = args.tensor("v", v, F32);
    const ot = args.tensor("out", out, F32);
    const st = args.tensor("stats", stats, F32);
    const { tokens, queryHeads, kvHeads, headDim } = attentionDims(args, qt, kt);
    args.sameShape("k", kt, "v", vt);
    args.sameShape("dk", dkt, "k", kt);
    args.sameShape("dv", dvt, "k", kt);
    args.sameShape("dq", dqt, "q", qt);
    args.sameShape("dOut", dot, "q", qt);
    args.sameShape("out", ot, "q", qt);
    args.shape("stats", st, [tokens, queryHeads, 2]);
    const sequences = checkCuSeqlens(args, cuSeqlens, tokens);
    args.finite("scale", scale);
    const queryStart = options.queryStart ?? 0;
    if (!Number.isSafeInteger(queryStart) || queryStart < 0 || queryStart > 2 ** 31 - 1) {
      args.fail(`options.queryStart must be an integer in [0, 2³¹), got ${queryStart}`, RangeError);
    }
    const gradients = options.gradients ?? true;
    let longest = 0;
    for (let s = 0; s < sequences; s++) longest = Math.max(longest, cuSeqlens[s + 1]! - cuSeqlens[s]!);
    let blocks = 0;
    let it: NativeTensor | undefined;
    if (influence !== undefined) {
      it = args.tensor("influence", influence, F32);
      args.rank("influence", it, 4);
      blocks = it.shape[2]!;
      if (!sameDims(it.shape, [sequences, queryHeads, blocks, blocks]) || blocks < Math.ceil(longest / 64)) {
        args.fail(
          `influence must be [${sequences}, ${queryHeads}, nb, nb] (sequences, query heads) with nb ≥ ` +
            `${Math.ceil(longest / 64)} (64-token blocks of the longest sequence)`,
        );
      }
    }
    const outputs: [string, NativeTensor][] = [
      ["dq", dqt],
      ["dk", dkt],
      ["dv", dvt],
    ];
    if (it) outputs.push(["influence", it]);
    const inputs: [string, NativeTensor][] = [
      ["dOut", dot],
      ["q", qt],
      ["k", kt],
      ["v", vt],
      ["out", ot],
      ["stats", st],
    ];
    for (const [i, [name, t]] of outputs.entries()) {
      for (const [other, u] of [...inputs, ...outputs.slice(i + 1)]) args.noOverlap(name, t, other, u);
    }
    this.execute(
      hasAttentionKernel(headDim),
      inputs.map(([, t]) => t),
      outputs.map(([, t]) => t),
      (ref) =>
        this.addon.attentionBackward(
          ref(dqt),
          ref(dkt),
          ref(dvt),
          it ? ref(it) : null,
          ref(dot),
          ref(qt),
          ref(kt),
          ref(vt),
          ref(ot),
          ref(st),
          cuSeqlens,
          sequences,
          tokens,
          queryHeads,
          kvHeads,
          headDim,
          scale,
          blocks,
          queryStart,
          gradients,
        ),
    );
  }

  crossEntropy(losses: Tensor, dLogits: Tensor, logits: Tensor, targets: Tensor, gradScale: number): void {
    const args = new OpArgs("crossEntropy", this.name, { losses, dLogits, logits, targets });
    const lt = args.tensor("losses", losses, F32);
    const dt = args.tensor("dLogits", dLogits, F32);
    const xt = args.tensor("logits", logits, F32);
    const tt = args.tensor("targets", targets, I32);
    args.rank("logits", xt, 2);
    const [rows, vocab] = xt.shape as [number, number];
    if (vocab < 1) args.fail("logits need at least one column");
    args.sameShape("dLogits", dt, "logits", xt);
    args.shape("targets", tt, [rows]);
    args.shape("losses", lt, [rows]);
    args.finite("gradScale", gradScale);
    args.noOverlap("dLogits", dt, "logits", xt);
    args.noOverlap("losses", lt, "logits", xt);
    args.noOverlap("losses", lt, "dLogits", dt);
    this.execute(true, [xt, tt], [lt, dt], (ref) =>
      this.addon.crossEntropy(ref(lt), ref(dt), ref(xt), ref(tt), rows, vocab, gradScale),
    );
  }

  kvAppend(cache: KvCacheLayer, k: Tensor, v: Tensor, slots: Int32Array, positions: Int32Array): void {
    const args = new OpArgs("kvAppend", this.name, { "cache.k": cache?.k, "cache.v": cache?.v, k, v });
    const layer = this.checkCache(args, cache);
    const kt = args.tensor("k", k, F32);
    const vt = args.tensor("v", v, F32);
    args.rank("k", kt, 3);
    args.sameShape("k", kt, "v", vt);
    const tokens = kt.shape[0]!;
    if (!sameDims(kt.shape, [tokens, cache.kvHeads, cache.headDim])) {
      args.fail(
        `k and v must be [tokens, ${cache.kvHeads}, ${cache.headDim}] (the cache's kvHeads and headDim)`,
      );
    }
    args.int32Array("slots", slots, tokens);
    args.int32Array("positions", positions, tokens);
    this.execute(true, [kt, vt], [layer.k, layer.v], (ref) =>
      this.addon.kvAppend(
        ...cacheArgs(cache, layer, ref),
        ref(kt),
        ref(vt),
        slots,
        positions,
        tokens,
        DTYPE_CODE[layer.k.dtype],
      ),
    );
  }

  attentionDecode(
    out: Tensor,
    q: Tensor,
    cache: KvCacheLayer,
    slots: Int32Array,
    seqLens: Int32Array,
    scale: number,
    mask?: MoaMask,
  ): void {
    const args = new OpArgs("attentionDecode", this.name, {
      out,
      q,
      "cache.k": cache?.k,
      "cache.v": cache?.v,
    });
    const layer = this.checkCache(args, cache);
    const o = args.tensor("out", out, F32);
    const qt = args.tensor("q", q, F32);
    args.rank("q", qt, 3);
    args.sameShape("out", o, "q", qt);
    const [batch, queryHeads, headDim] = qt.shape as [number, number, number];
    if (headDim !== cache.headDim)
      args.fail(`q's headDim (${headDim}) must equal the cache's (${cache.headDim})`);
    if (queryHeads % cache.kvHeads !== 0) {
      args.fail(`query heads (${queryHeads}) must be a multiple of the cache's KV heads (${cache.kvHeads})`);
    }
    args.noOverlap("out", o, "q", qt);
    args.int32Array("slots", slots, batch);
    args.int32Array("seqLens", seqLens, batch);
    args.finite("scale", scale);
    if (mask !== undefined) {
      args.mask(mask, queryHeads, ["window"]);
      if (mask.sinkTokens !== cache.sinkTokens) {
        args.fail(`mask.sinkTokens (${mask.sinkTokens}) must equal cache.sinkTokens (${cache.sinkTokens})`);
      }
    }
    const nativeMask = toNativeMask(mask);
    this.execute(true, [layer.k, layer.v, qt], [o], (ref) =>
      this.addon.attentionDecode(
        ...cacheArgs(cache, layer, ref),
        ref(o),
        ref(qt),
        slots,
        seqLens,
        batch,
        queryHeads,
        scale,
        nativeMask,
        DTYPE_CODE[layer.k.dtype],
      ),
    );
  }

  private checkCache(args: OpArgs, cache: KvCacheLayer): { k: NativeTensor; v: NativeTensor; slots: number } {
    if (typeof cache !== "object" || cache === null) args.fail("cache must be a KvCacheLayer", TypeError);
    // The CPU reference caches f32; the CUDA backend also takes bf16 caches (backend.ts: kvCacheDtype).
    const cacheTypes: readonly DType[] = this.name === "cuda" ? ["f32", "bf16"] : F32;
    const k = args.tensor("cache.k", cache.k, cacheTypes);
    const v = args.tensor("cache.v", cache.v, cacheTypes);
    if (v.dtype !== k.dtype) args.fail(`cache.k (${k.dtype}) and cache.v (${v.dtype}) must have one dtype`);
    for (const key of ["kvHeads", "headDim"] as const) {
      if (!Number.isSafeInteger(cache[key]) || cache[key] < 1)
        args.fail(`cache.${key} must be an integer ≥ 1`);
    }
    if (!Number.isSafeInteger(cache.sinkTokens) || cache.sinkTokens < 0) {
      args.fail("cache.sinkTokens must be an integer ≥ 0");
    }
    args.rank("cache.k", k, 2);
    args.sameShape("cache.k", k, "cache.v", v);
    if (k.shape[1] !== cache.headDim)
      args.fail(`cache.k must be [entries, ${cache.headDim}] (cache.headDim)`);
    args.int32Array("cache.ringCap", cache.ringCap, cache.kvHeads);
    args.int32Array("cache.regionOffset", cache.regionOffset);
    if (cache.regionOffset.length % cache.kvHeads !== 0) {
      args.fail(
        `cache.regionOffset must have slots × ${cache.kvHeads} entries, got ${cache.regionOffset.length}`,
      );
    }
    return { k, v, slots: cache.regionOffset.length / cache.kvHeads };
  }
}

/**
 * Whether the CUDA kernels of the profiling attention (the stats prefill and attentionBackward) take this head
 * dim; other head dims run the CPU reference on host copies, slower but with the same results.
 */
function hasAttentionKernel(headDim: number): boolean {
  return headDim === 64 || headDim === 128;
}

/**
 * The sizes of attention's q [T, Hq, D] and k (or k and v) [T, Hkv, D], checked: same tokens and head dim, query
 * heads a multiple of the KV heads.
 */
function attentionDims(
  args: OpArgs,
  qt: NativeTensor,
  kt: NativeTensor,
  what = "k and v",
): { tokens: number; queryHeads: number; kvHeads: number; headDim: number } {
  args.rank("q", qt, 3);
  args.rank("k", kt, 3);
  const [tokens, queryHeads, headDim] = qt.shape as [number, number, number];
  const kvHeads = kt.shape[1]!;
  if (kt.shape[0] !== tokens || kt.shape[2] !== headDim) {
    args.fail(`${what} must be [tokens, kvHeads, headDim] with q's tokens and headDim`);
  }
  if (kvHeads < 1 || queryHeads % kvHeads !== 0) {
    args.fail(`query heads (${queryHeads}) must be a multiple of KV heads (${kvHeads})`);
  }
  return { tokens, queryHeads, kvHeads, headDim };
}

/** Checks cuSeqlens (0 … tokens, non-decreasing) and returns the number of sequences. */
function checkCuSeqlens(args: OpArgs, cuSeqlens: Int32Array, tokens: number): number {
  args.int32Array("cuSeqlens", cuSeqlens);
  const sequences = cuSeqlens.length - 1;
  if (sequences < 1 || cuSeqlens[0] !== 0 || cuSeqlens[sequences] !== tokens) {
    args.fail(`cuSeqlens must run from 0 to the ${tokens} tokens, got [${cuSeqlens.join(", ")}]`);
  }
  for (let s = 0; s < sequences; s++) {
    if (cuSeqlens[s + 1]! < cuSeqlens[s]!)
      args.fail(`cuSeqlens must not decrease, got [${cuSeqlens.join(", ")}]`);
  }
  return sequences;
}

function toNativeMask(mask: MoaMask | undefined): NativeMask | null {
  if (mask === undefined) return null;
  return {
    window: mask.mode === "window",
    alpha: mask.alpha,
    beta: mask.beta,
    blockSize: mask.blockSize,
    sinkTokens: mask.sinkTokens,
  };
}

function cacheArgs(
  cache: KvCacheLayer,
  layer: { k: NativeTensor; v: NativeTensor; slots: number },
  ref: RefOf,
): NativeCacheArgs {
  return [
    ref(layer.k),
    ref(layer.v),
    layer.k.shape[0]!,
    cache.kvHeads,
    cache.headDim,
    cache.sinkTokens,
    cache.ringCap,
    cache.regionOffset,
    layer.slots,
  ];
}
