/**
 * A small Prometheus registry: counters, gauges (set, or read from a callback at scrape time) and histograms,
 * rendered in the text exposition format 0.0.4 that every Prometheus-compatible scraper reads.
 */

export type Labels = Readonly<Record<string, string>>;

interface Metric {
  readonly name: string;
  render(lines: string[]): void;
}

function escapeLabel(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

function labelText(labels: Labels | undefined, extra?: [string, string]): string {
  const pairs = Object.entries(labels ?? {});
  if (extra !== undefined) pairs.push(extra);
  if (pairs.length === 0) return "";
  return `{${pairs.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(",")}}`;
}

function formatValue(value: number): string {
  if (value === Number.POSITIVE_INFINITY) return "+Inf";
  if (value === Number.NEGATIVE_INFINITY) return "-Inf";
  if (Number.isNaN(value)) return "NaN";
  return String(value);
}

/** Series of one metric, one per distinct label set (keyed by the rendered labels). */
class Series<T> {
  readonly byKey = new Map<string, { labels: Labels | undefined; value: T }>();

  get(labels: Labels | undefined, create: () => T): T {
    const key = labelText(labels);
    let entry = this.byKey.get(key);
    if (entry === undefined) {
      entry = { labels, value: create() };
      this.byKey.set(key, entry);
    }
    return entry.value;
  }
}

export class Counter implements Metric {
  private readonly series = new Series<{ v: number }>();

  constructor(
    readonly name: string,
    readonly help: string,
  ) {}

  inc(labels?: Labels, by = 1): void {
    this.series.get(labels, () => ({ v: 0 })).v += by;
  }

  /** Current value of one series (0 if never incremented). */
  value(labels?: Labels): number {
    return this.series.byKey.get(labelText(labels))?.value.v ?? 0;
  }

  render(lines: string[]): void {
    lines.push(`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`);
    for (const { labels, value } of this.series.byKey.values()) {
      lines.push(`${this.name}${labelText(labels)} ${formatValue(value.v)}`);
    }
  }
}

/** A gauge whose value is read when scraped. */
export class Gauge implements Metric {
  constructor(
    readonly name: string,
    readonly help: string,
    private readonly read: () => number | ReadonlyArray<[Labels, number]>,
  ) {}

  render(lines: string[]): void {
    lines.push(`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} gauge`);
    const value = this.read();
    if (typeof value === "number") lines.push(`${this.name} ${formatValue(value)}`);
    else for (const [labels, v] of value) lines.push(`${this.name}${labelText(labels)} ${formatValue(v)}`);
  }
}

/** Latency buckets in seconds: from 5 ms decode steps to multi-minute generations. */
export const LATENCY_BUCKETS: readonly number[] = [
  0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300,
];

interface HistogramState {
  readonly counts: number[];
  sum: number;
  count: number;
}

export class Histogram implements Metric {
  private readonly series = new Series<HistogramState>();

  constructor(
    readonly name: string,
    readonly help: string,
    readonly buckets: readonly number[] = LATENCY_BUCKETS,
  ) {}

  observe(value: number, labels?: Labels): void {
    const state = this.series.get(labels, () => ({ counts: this.buckets.map(() => 0), sum: 0, count: 0 }));
    for (let i = 0; i < this.buckets.length; i++) if (value <= this.buckets[i]!) state.counts[i]!++;
    state.sum += value;
    state.count++;
  }

  /** Observations of one series. */
  count(labels?: Labels): number {
    return this.series.byKey.get(labelText(labels))?.value.count ?? 0;
  }

  render(lines: string[]): void {
    lines.push(`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`);
    for (const { labels, value } of this.series.byKey.values()) {
      this.buckets.forEach((bound, i) => {
        lines.push(`${this.name}_bucket${labelText(labels, ["le", formatValue(bound)])} ${value.counts[i]}`);
      });
      lines.push(`${this.name}_bucket${labelText(labels, ["le", "+Inf"])} ${value.count}`);
      lines.push(`${this.name}_sum${labelText(labels)} ${formatValue(value.sum)}`);
      lines.push(`${this.name}_count${labelText(labels)} ${value.count}`);
    }
  }
}

export class MetricsRegistry {
  private readonly metrics: Metric[] = [];

  counter(name: string, help: string): Counter {
    return this.add(new Counter(name, help));
  }

  gauge(name: string, help: string, read: () => number | ReadonlyArray<[Labels, number]>): Gauge {
    return this.add(new Gauge(name, help, read));
  }

  histogram(name: string, help: string, buckets?: readonly number[]): Histogram {
    return this.add(new Histogram(name, help, buckets));
  }

  /** The exposition text (`Content-Type: text/plain; version=0.0.4`). */
  render(): string {
    const lines: string[] = [];
    for (const metric of this.metrics) metric.render(lines);
    return `${lines.join("\n")}\n`;
  }

  private add<M extends Metric>(metric: M): M {
    if (this.metrics.some((m) => m.name === metric.name))
      throw new Error(`metric ${metric.name} registered twice`);
    this.metrics.push(metric);
    return metric;
  }
}

/** Tokens per second over a sliding window, for a gauge that reads well without PromQL's rate(). */
export class RateWindow {
  private readonly events: Array<[number, number]> = [];

  constructor(private readonly windowMs = 10_000) {}

  add(count: number, now = performance.now()): void {
    this.events.push([now, count]);
    this.trim(now);
  }

  perSecond(now = performance.now()): number {
    this.trim(now);
    let total = 0;
    for (const [, count] of this.events) total += count;
    return total / (this.windowMs / 1000);
  }

  private trim(now: number): void {
    let drop = 0;
    while (drop < this.events.length && this.events[drop]![0] < now - this.windowMs) drop++;
    if (drop > 0) this.events.splice(0, drop);
  }
}
