/** Renders rows as an aligned plain-text table; numbers right-aligned, text left-aligned. */
export function formatTable(
  header: readonly string[],
  rows: ReadonlyArray<ReadonlyArray<string | number>>,
): string {
  const cells = [header.map(String), ...rows.map((row) => row.map((cell) => String(cell)))];
  const numeric = header.map((_, c) => rows.every((row) => typeof row[c] === "number"));
  const widths = header.map((_, c) => Math.max(...cells.map((row) => (row[c] ?? "").length)));
  const line = (row: readonly string[]) =>
    row
      .map((cell, c) => (numeric[c] ? cell.padStart(widths[c]!) : cell.padEnd(widths[c]!)))
      .join("  ")
      .trimEnd();
  const rule = widths.map((w) => "-".repeat(w)).join("  ");
  return [line(cells[0]!), rule, ...cells.slice(1).map(line)].join("\n") + "\n";
}

export function fixed(value: number, digits = 4): string {
  return Number.isFinite(value) ? value.toFixed(digits) : String(value);
}
