/** Byte sizes as operators write them (`--kv-budget 6GiB`, `--max-body-bytes 1MB`) and as logs print them. */
import { MoaError } from "@moa/core";

const UNITS: Readonly<Record<string, number>> = {
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  kib: 2 ** 10,
  mib: 2 ** 20,
  gib: 2 ** 30,
  tib: 2 ** 40,
};

/** Parses `123`, `1.5GiB`, `512 MiB`, `2GB` (SI units are powers of 1000, IEC units of 1024) into whole bytes. */
export function parseByteSize(text: string, field = "size"): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text);
  const unit = match?.[2]?.toLowerCase() || "b";
  const scale = UNITS[unit];
  const bytes = match !== null && scale !== undefined ? Math.floor(Number(match[1]) * scale) : Number.NaN;
  if (!Number.isSafeInteger(bytes) || bytes < 1) {
    throw new MoaError(
      "E_ARGUMENT",
      `${field} = ${JSON.stringify(text)}: expected a positive size such as 1073741824, 512MiB or 6GiB`,
      { source: "size", field },
    );
  }
  return bytes;
}

/** `2097152` → "2.00 MiB". */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(2)} ${units[unit]}`;
}
