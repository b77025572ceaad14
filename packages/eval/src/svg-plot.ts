/**
 * Self-contained SVG line charts (no fonts, scripts or styles fetched): one line per method over the evaluated
 * lengths, on a log₂ length axis. Every point carries a tooltip with its exact value.
 */

export interface PlotSeries {
  /** Picks the colour (methods have fixed ones) and names the points in tooltips. */
  readonly name: string;
  /** Legend text (default: the name). */
  readonly label?: string;
  /** One value per x; NaN leaves a gap. */
  readonly values: readonly number[];
}

export interface LinePlotInput {
  readonly title: string;
  readonly xLabel: string;
  readonly yLabel: string;
  /** Positive x values (lengths), ascending. */
  readonly xs: readonly number[];
  readonly series: readonly PlotSeries[];
  /** Fixed y range (accuracy: [0, 1]); default: the data's range with a margin. */
  readonly yRange?: readonly [number, number];
  /** Digits of values in tooltips and tick labels. */
  readonly digits?: number;
}

/** Colours per method, distinguishable in colour-blind vision (Okabe–Ito), then a fallback cycle. */
const PALETTE: Record<string, string> = {
  dense: "#000000",
  plan: "#0072b2",
  uniform: "#e69f00",
  h2o: "#cc79a7",
};
const FALLBACK = ["#009e73", "#d55e00", "#56b4e9", "#f0e442"];
const MARKERS = ["circle", "square", "diamond", "triangle"] as const;

export function escapeXml(text: string): string {
  return text.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function colorOf(name: string, index: number): string {
  return PALETTE[name] ?? FALLBACK[index % FALLBACK.length]!;
}

function marker(kind: (typeof MARKERS)[number], x: number, y: number, color: string, tip: string): string {
  const r = 4;
  const title = `<title>${escapeXml(tip)}</title>`;
  const at = (px: number, py: number) => `${px.toFixed(1)},${py.toFixed(1)}`;
  switch (kind) {
    case "circle":
      return `<circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="${r}" fill="${color}">${title}</circle>`;
    case "square":
      return `<rect x="${(x - r).toFixed(1)}" y="${(y - r).toFixed(1)}" width="${2 * r}" height="${2 * r}" fill="${color}">${title}</rect>`;
    case "diamond":
      return `<polygon points="${at(x, y - r - 1)} ${at(x + r + 1, y)} ${at(x, y + r + 1)} ${at(x - r - 1, y)}" fill="${color}">${title}</polygon>`;
    case "triangle":
      return `<polygon points="${at(x, y - r - 1)} ${at(x + r + 1, y + r)} ${at(x - r - 1, y + r)}" fill="${color}">${title}</polygon>`;
  }
}

function niceRange(values: readonly number[]): [number, number] {
  const finite = values.filter(Number.isFinite);
  if (finite.length === 0) return [0, 1];
  let lo = Math.min(...finite);
  let hi = Math.max(...finite);
  if (lo === hi) {
    lo -= Math.abs(lo) * 0.1 + 0.5;
    hi += Math.abs(hi) * 0.1 + 0.5;
  }
  const margin = (hi - lo) * 0.08;
  return [lo - margin, hi + margin];
}

/** An SVG line chart: x on a log₂ scale with a tick at every x, y linear with 5 ticks, legend on the right. */
export function renderLinePlot(input: LinePlotInput): string {
  const width = 640;
  const height = 380;
  const left = 64;
  const right = 170;
  const top = 44;
  const bottom = 56;
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  const digits = input.digits ?? 3;
  const [y0, y1] = input.yRange ?? niceRange(input.series.flatMap((s) => s.values));
  const logs = input.xs.map((x) => Math.log2(x));
  const lo = Math.min(...logs);
  const hi = Math.max(...logs);
  const xAt = (i: number) =>
    left + (hi === lo ? plotW / 2 : ((logs[i]! - lo) / (hi - lo)) * plotW * 0.9 + plotW * 0.05);
  const yAt = (v: number) => top + plotH - ((v - y0) / (y1 - y0)) * plotH;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${left}" y="24" font-size="14" font-weight="bold">${escapeXml(input.title)}</text>`,
    `<rect x="${left}" y="${top}" width="${plotW}" height="${plotH}" fill="none" stroke="#999999"/>`,
  ];
  for (let t = 0; t <= 4; t++) {
    const v = y0 + ((y1 - y0) * t) / 4;
    const y = yAt(v);
    parts.push(
      `<line x1="${left}" y1="${y.toFixed(1)}" x2="${left + plotW}" y2="${y.toFixed(1)}" stroke="#e5e5e5"/>`,
      `<text x="${left - 6}" y="${(y + 4).toFixed(1)}" text-anchor="end">${v.toFixed(2)}</text>`,
    );
  }
  input.xs.forEach((x, i) => {
    const px = xAt(i);
    parts.push(
      `<line x1="${px.toFixed(1)}" y1="${top + plotH}" x2="${px.toFixed(1)}" y2="${top + plotH + 5}" stroke="#999999"/>`,
      `<text x="${px.toFixed(1)}" y="${top + plotH + 18}" text-anchor="middle">${x}</text>`,
    );
  });
  parts.push(
    `<text x="${left + plotW / 2}" y="${height - 14}" text-anchor="middle">${escapeXml(input.xLabel)}</text>`,
    `<text x="16" y="${top + plotH / 2}" transform="rotate(-90 16 ${top + plotH / 2})" text-anchor="middle">${escapeXml(input.yLabel)}</text>`,
  );
  input.series.forEach((series, s) => {
    const color = colorOf(series.name, s);
    const kind = MARKERS[s % MARKERS.length]!;
    // A polyline per run of finite values.
    let run: string[] = [];
    const flush = () => {
      if (run.length > 1) {
        parts.push(`<polyline points="${run.join(" ")}" fill="none" stroke="${color}" stroke-width="2"/>`);
      }
      run = [];
    };
    series.values.forEach((v, i) => {
      if (Number.isFinite(v)) run.push(`${xAt(i).toFixed(1)},${yAt(v).toFixed(1)}`);
      else flush();
    });
    flush();
    series.values.forEach((v, i) => {
      if (!Number.isFinite(v)) return;
      parts.push(marker(kind, xAt(i), yAt(v), color, `${series.name} @${input.xs[i]}: ${v.toFixed(digits)}`));
    });
    const ly = top + 10 + s * 20;
    const lx = left + plotW + 16;
    parts.push(
      `<line x1="${lx}" y1="${ly}" x2="${lx + 24}" y2="${ly}" stroke="${color}" stroke-width="2"/>`,
      marker(kind, lx + 12, ly, color, series.name),
      `<text x="${lx + 32}" y="${ly + 4}">${escapeXml(series.label ?? series.name)}</text>`,
    );
  });
  parts.push("</svg>");
  return `${parts.join("\n")}\n`;
}
