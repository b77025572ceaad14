import { describe, expect, it } from "vitest";
import { MetricsRegistry, RateWindow } from "../src/index.js";
import { parseMetrics } from "./helpers.js";

describe("Prometheus exposition", () => {
  it("histogram buckets are cumulative, end in +Inf = count, and sum the observations", () => {
    const registry = new MetricsRegistry();
    const h = registry.histogram("latency_seconds", "test", [0.1, 1, 10]);
    const values = [0.05, 0.1, 0.5, 2, 20, 0.01];
    for (const v of values) h.observe(v, { route: "/a" });
    const m = parseMetrics(registry.render());
    // Brute force: a bucket counts the observations ≤ its bound.
    for (const bound of [0.1, 1, 10]) {
      expect(m.get(`latency_seconds_bucket{route="/a",le="${bound}"}`)).toBe(
        values.filter((v) => v <= bound).length,
      );
    }
    expect(m.get('latency_seconds_bucket{route="/a",le="+Inf"}')).toBe(values.length);
    expect(m.get('latency_seconds_count{route="/a"}')).toBe(values.length);
    expect(m.get('latency_seconds_sum{route="/a"}')).toBeCloseTo(
      values.reduce((a, b) => a + b, 0),
      12,
    );
  });

  it("writes HELP and TYPE once per metric and escapes label values", () => {
    const registry = new MetricsRegistry();
    const c = registry.counter("requests_total", "Requests.");
    c.inc({ path: 'a"b\\c\nd' });
    c.inc({ path: 'a"b\\c\nd' }, 2);
    registry.gauge("depth", "Queue depth.", () => 7);
    const text = registry.render();
    expect(text).toContain('requests_total{path="a\\"b\\\\c\\nd"} 3\n');
    expect(text.match(/# TYPE requests_total counter/g)).toHaveLength(1);
    expect(text).toContain("# TYPE depth gauge\ndepth 7\n");
    expect(() => registry.counter("requests_total", "again")).toThrow(/twice/);
  });

  it("the rate window counts only the last window", () => {
    const rate = new RateWindow(1000);
    rate.add(10, 0);
    rate.add(5, 600);
    expect(rate.perSecond(900)).toBe(15);
    expect(rate.perSecond(1300)).toBe(5);
    expect(rate.perSecond(5000)).toBe(0);
  });
});
