/** A self-contained SVG heatmap (no fonts or scripts fetched), for spans of layers × heads. */
export interface HeatmapInput {
  title: string;
  rowLabel: string;
  colLabel: string;
  /** values[row][col] in [0, 1]; drawn with a perceptual colour ramp. */
  values: number[][];
  /** Text of each cell's tooltip. */
  tooltip: (row: number, col: number) => string;
  legend: string;
}

// Viridis at 9 stops: perceptually uniform and readable when printed in grey.
const RAMP = [
  "#440154",
  "#472d7b",
  "#3b528b",
  "#2c728e",
  "#21918c",
  "#28ae80",
  "#5ec962",
  "#addc30",
  "#fde725",
];

export function rampColor(t: number): string {
  const x = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0)) * (RAMP.length - 1);
  const i = Math.min(RAMP.length - 2, Math.floor(x));
  const f = x - i;
  const a = hex(RAMP[i]!);
  const b = hex(RAMP[i + 1]!);
  const mix = a.map((v, k) => Math.round(v + (b[k]! - v) * f));
  return `#${mix.map((v) => v.toString(16).padStart(2, "0")).join("")}`;
}

function hex(color: string): number[] {
  return [1, 3, 5].map((k) => Number.parseInt(color.slice(k, k + 2), 16));
}

function escapeXml(text: string): string {
  return text.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

export function renderHeatmapSvg(input: HeatmapInput): string {
  const rows = input.values.length;
  const cols = Math.max(0, ...input.values.map((row) => row.length));
  const cell = Math.max(8, Math.min(28, Math.floor(720 / Math.max(cols, 1))));
  const left = 70;
  const top = 48;
  const legendWidth = 220;
  const width = left + cols * cell + 40;
  const height = top + rows * cell + 80;
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${Math.max(width, left + legendWidth + 40)}" height="${height}" font-family="sans-serif" font-size="11">`,
    `<text x="${left}" y="20" font-size="14" font-weight="bold">${escapeXml(input.title)}</text>`,
    `<text x="${left}" y="${top - 8}">${escapeXml(input.colLabel)} →</text>`,
    `<text x="12" y="${top + (rows * cell) / 2}" transform="rotate(-90 12 ${top + (rows * cell) / 2})" text-anchor="middle">${escapeXml(input.rowLabel)} →</text>`,
  );
  const labelEvery = Math.max(1, Math.ceil(12 / cell));
  for (let r = 0; r < rows; r++) {
    if (r % labelEvery === 0) {
      parts.push(`<text x="${left - 6}" y="${top + r * cell + cell * 0.7}" text-anchor="end">${r}</text>`);
    }
    for (let c = 0; c < (input.values[r]?.length ?? 0); c++) {
      const v = input.values[r]![c]!;
      parts.push(
        `<rect x="${left + c * cell}" y="${top + r * cell}" width="${cell}" height="${cell}" fill="${rampColor(v)}"><title>${escapeXml(input.tooltip(r, c))}</title></rect>`,
      );
    }
  }
  const legendY = top + rows * cell + 24;
  const steps = 44;
  for (let s = 0; s < steps; s++) {
    parts.push(
      `<rect x="${left + (s * legendWidth) / steps}" y="${legendY}" width="${legendWidth / steps + 0.5}" height="10" fill="${rampColor(s / (steps - 1))}"/>`,
    );
  }
  parts.push(
    `<text x="${left}" y="${legendY + 24}">0</text>`,
    `<text x="${left + legendWidth}" y="${legendY + 24}" text-anchor="end">1</text>`,
    `<text x="${left + legendWidth / 2}" y="${legendY + 24}" text-anchor="middle">${escapeXml(input.legend)}</text>`,
    "</svg>",
  );
  return parts.join("\n") + "\n";
}
