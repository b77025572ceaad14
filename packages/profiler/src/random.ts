import { createHash } from "node:crypto";
import { Xoshiro128 } from "@moa/runtime";

/**
 * A seeded stream of choices for building calibration samples. Seeded by a string (e.g.
 * `"0/profile/1024/3"`: seed, purpose, length, sample index) hashed with SHA-256, so every sample is a pure
 * function of its name and two samples never share a stream by accident.
 */
export class SampleRandom {
  private readonly generator: Xoshiro128;

  constructor(readonly name: string) {
    this.generator = new Xoshiro128(createHash("sha256").update(name).digest().readUInt32LE(0));
  }

  /** Uniform in [0, 1). */
  float(): number {
    return this.generator.nextFloat();
  }

  /** Uniform integer in [lo, hi] (both included). */
  integer(lo: number, hi: number): number {
    return lo + Math.floor(this.float() * (hi - lo + 1));
  }

  pick<T>(items: readonly T[]): T {
    return items[this.integer(0, items.length - 1)]!;
  }
}
