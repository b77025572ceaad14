/**
 * Self-contained SVG charts for reports (no fonts, scripts or styles fetched): a scatter plot for Pareto fronts
 * and a bar chart for validation losses. Colours follow svg-heatmap.ts's ramp ends; the highlighted mark is the
 * chosen plan.
 */

function escapeXml(text: string): string {
  return text.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

const INK = "#222";
const GRID = "#ddd";
const MARK = "#3b528b";
const CHOSEN = "#e8a202";
const REFERENCE = "#b03a2e";

export interface ScatterPoint {
  x: number;
  y: number;
  label: string;
  tooltip: string;
  highlight?: boolean;
}

export interface BarItem {
  label: string;
  value: number;
  tooltip: string;
  highlight?: boolean;
}

export interface ReferenceLine {
  value: number;
  label: string;
}

/** About five round tick values covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= raw)!;
  const ticks: number[] = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step)
    ticks.push(Number(t.toPrecision(12)));
  return ticks;
}

function tickText(value: number): string {
  if (value === 0) return "0";
  const abs = Math.abs(value);
  return abs >= 1e4 || abs < 1e-3 ? value.toExponential(1) : String(Number(value.toPrecision(4)));
}

function padded(lo: number, hi: number): [number, number] {
  if (hi > lo) {
    const pad = (hi - lo) * 0.08;
    return [lo - pad, hi + pad];
  }
  const pad = Math.abs(lo) * 0.1 || 1;
  return [lo - pad, hi + pad];
}

interface Frame {
  parts: string[];
  x: (v: number) => number;
  y: (v: number) => number;
}

const WIDTH = 640;
const HEIGHT = 400;
const LEFT = 78;
const RIGHT = 24;
const TOP = 44;
const BOTTOM = 64;

function axes(
  title: string,
  xLabel: string,
  yLabel: string,
  xRange: [number, number] | undefined,
  yRange: [number, number],
): Frame {
  const plotW = WIDTH - LEFT - RIGHT;
  const plotH = HEIGHT - TOP - BOTTOM;
  const x = (v: number) =>
    xRange === undefined ? LEFT : LEFT + ((v - xRange[0]) / (xRange[1] - xRange[0])) * plotW;
  const y = (v: number) => TOP + plotH - ((v - yRange[0]) / (yRange[1] - yRange[0])) * plotH;
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" font-family="sans-serif" font-size="11" fill="${INK}">`,
    `<rect width="${WIDTH}" height="${HEIGHT}" fill="#fff"/>`,
    `<text x="${LEFT}" y="22" font-size="14" font-weight="bold">${escapeXml(title)}</text>`,
  ];
  for (const t of niceTicks(yRange[0], yRange[1])) {
    parts.push(
      `<line x1="${LEFT}" x2="${WIDTH - RIGHT}" y1="${y(t).toFixed(1)}" y2="${y(t).toFixed(1)}" stroke="${GRID}"/>`,
      `<text x="${LEFT - 6}" y="${(y(t) + 4).toFixed(1)}" text-anchor="end">${tickText(t)}</text>`,
    );
  }
  if (xRange !== undefined) {
    for (const t of niceTicks(xRange[0], xRange[1])) {
      parts.push(
        `<line x1="${x(t).toFixed(1)}" x2="${x(t).toFixed(1)}" y1="${TOP}" y2="${TOP + plotH}" stroke="${GRID}"/>`,
        `<text x="${x(t).toFixed(1)}" y="${TOP + plotH + 16}" text-anchor="middle">${tickText(t)}</text>`,
      );
    }
  }
  parts.push(
    `<rect x="${LEFT}" y="${TOP}" width="${plotW}" height="${plotH}" fill="none" stroke="${INK}"/>`,
    `<text x="${LEFT + plotW / 2}" y="${HEIGHT - 14}" text-anchor="middle">${escapeXml(xLabel)}</text>`,
    `<text x="16" y="${TOP + plotH / 2}" transform="rotate(-90 16 ${TOP + plotH / 2})" text-anchor="middle">${escapeXml(yLabel)}</text>`,
  );
  return { parts, x, y };
}

/** A scatter plot; highlighted points are drawn larger, in the "chosen" colour, on top. */
export function renderScatterSvg(input: {
  title: string;
  xLabel: string;
  yLabel: string;
  points: readonly ScatterPoint[];
}): string {
  const xs = input.points.map((p) => p.x);
  const ys = input.points.map((p) => p.y);
  const frame = axes(
    input.title,
    input.xLabel,
    input.yLabel,
    padded(Math.min(...xs), Math.max(...xs)),
    padded(Math.min(...ys), Math.max(...ys)),
  );
  const ordered = [...input.points].sort(
    (a, b) => Number(a.highlight ?? false) - Number(b.highlight ?? false),
  );
  for (const p of ordered) {
    const cx = frame.x(p.x).toFixed(1);
    const cy = frame.y(p.y).toFixed(1);
    frame.parts.push(
      `<circle cx="${cx}" cy="${cy}" r="${p.highlight ? 7 : 5}" fill="${p.highlight ? CHOSEN : MARK}" stroke="${INK}" stroke-width="${p.highlight ? 1.5 : 0.5}"><title>${escapeXml(p.tooltip)}</title></circle>`,
      `<text x="${(Number(cx) + 9).toFixed(1)}" y="${(Number(cy) - 6).toFixed(1)}">${escapeXml(p.label)}</text>`,
    );
  }
  frame.parts.push("</svg>");
  return `${frame.parts.join("\n")}\n`;
}

/** Vertical bars from 0 (or the smallest value), with dashed horizontal reference lines. */
export function renderBarChartSvg(input: {
  title: string;
  xLabel: string;
  yLabel: string;
  bars: readonly BarItem[];
  references?: readonly ReferenceLine[];
}): string {
  const references = input.references ?? [];
  const values = [...input.bars.map((b) => b.value), ...references.map((r) => r.value)];
  const hi = Math.max(...values);
  const frame = axes(input.title, input.xLabel, input.yLabel, undefined, [0, hi > 0 ? hi * 1.12 : 1]);
  const plotW = WIDTH - LEFT - RIGHT;
  const slot = plotW / Math.max(1, input.bars.length);
  const barW = Math.min(48, slot * 0.7);
  input.bars.forEach((bar, i) => {
    const x = LEFT + slot * i + (slot - barW) / 2;
    const y = frame.y(bar.value);
    frame.parts.push(
      `<rect x="${x.toFixed(1)}" y="${y.toFixed(1)}" width="${barW.toFixed(1)}" height="${(frame.y(0) - y).toFixed(1)}" fill="${bar.highlight ? CHOSEN : MARK}" stroke="${INK}" stroke-width="0.5"><title>${escapeXml(bar.tooltip)}</title></rect>`,
      `<text x="${(x + barW / 2).toFixed(1)}" y="${(frame.y(0) + 16).toFixed(1)}" text-anchor="middle">${escapeXml(bar.label)}</text>`,
    );
  });
  references.forEach((ref, i) => {
    const y = frame.y(ref.value).toFixed(1);
    frame.parts.push(
      `<line x1="${LEFT}" x2="${WIDTH - RIGHT}" y1="${y}" y2="${y}" stroke="${REFERENCE}" stroke-dasharray="6 4"/>`,
      `<text x="${WIDTH - RIGHT - 4}" y="${(Number(y) - 4 - 12 * (i % 2)).toFixed(1)}" text-anchor="end" fill="${REFERENCE}">${escapeXml(ref.label)}</text>`,
    );
  });
  frame.parts.push("</svg>");
  return `${frame.parts.join("\n")}\n`;
}
