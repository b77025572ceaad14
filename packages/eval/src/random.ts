/**
 * Seeded randomness for prompt generation: every prompt draws from its own stream, derived from the run's
 * seed and the prompt's identity (task, length, index), so a prompt is the same whichever methods, tasks or
 * prompt counts a run asks for, and the same on every machine.
 */
import { Xoshiro128 } from "@moa/runtime";

/** FNV-1a (32-bit) of a string: a stable, platform-independent seed for one prompt's stream. */
export function hashSeed(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** A seeded stream of integers and choices. */
export class PromptRandom {
  private readonly generator: Xoshiro128;

  constructor(seed: number | string) {
    this.generator = new Xoshiro128(typeof seed === "string" ? hashSeed(seed) : seed >>> 0);
  }

  /** Uniform integer in [min, max] (both included). */
  integer(min: number, max: number): number {
    return min + Math.floor(this.generator.nextFloat() * (max - min + 1));
  }

  /** A uniformly chosen element of a non-empty list. */
  pick<T>(items: readonly T[]): T {
    return items[this.integer(0, items.length - 1)]!;
  }
}

/** The seed of one prompt: the same (seed, task, length, index) always gives the same prompt. */
export function promptSeed(seed: number, task: string, length: number, index: number): string {
  return `moa-eval/${seed}/${task}/${length}/${index}`;
}
