/** DESIGN.md: Definitions — block size `B` = 64 tokens. */
export const BLOCK_SIZE = 64;

/** DESIGN.md: Definitions — sink `G` = 64 tokens (one block). */
export const SINK_TOKENS = 64;

/**
 * The two geometry constants every mask, density and cache is computed with.
 * Plans and profiles carry their own values; these are the defaults.
 */
export interface MaskGeometry {
  /** `B`: tokens per block. Spans are counted in whole blocks. */
  blockSize: number;
  /** `G`: leading tokens every query attends (a multiple of `blockSize` in plans and profiles). */
  sinkTokens: number;
}

/** `{ blockSize: 64, sinkTokens: 64 }` (DESIGN.md: Definitions). */
export const DEFAULT_GEOMETRY: Readonly<MaskGeometry> = Object.freeze({
  blockSize: BLOCK_SIZE,
  sinkTokens: SINK_TOKENS,
});
