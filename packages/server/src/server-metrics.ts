/**
 * The metrics `GET /metrics` exposes. Names follow Prometheus conventions (base units, `_total` counters,
 * `_seconds` histograms); gauges are read from the scheduler at scrape time, so they are never stale.
 */
import { type Counter, type Histogram, MetricsRegistry, RateWindow } from "./metrics.js";
import type { SchedulerObserver, SchedulerStats } from "./scheduler.js";

export interface ServerMetricsSource {
  stats(): SchedulerStats;
  /** The configured KV budget in bytes. */
  readonly kvBudgetBytes: number;
  /** HTTP requests being answered now. */
  requestsInFlight(): number;
}

export class ServerMetrics {
  readonly registry = new MetricsRegistry();
  readonly requests: Counter;
  readonly rejected: Counter;
  readonly promptTokens: Counter;
  readonly generationTokens: Counter;
  readonly sequencesFinished: Counter;
  readonly requestDuration: Histogram;
  readonly queueWait: Histogram;
  readonly timeToFirstToken: Histogram;
  readonly interTokenLatency: Histogram;
  private readonly tokenRate = new RateWindow(10_000);

  constructor(source: ServerMetricsSource) {
    const r = this.registry;
    const stats = (): SchedulerStats => source.stats();
    r.gauge("moa_queue_depth", "Sequences waiting for a KV cache slot.", () => stats().queued);
    r.gauge(
      "moa_running_sequences",
      "Sequences holding a KV cache slot (prefilling or decoding).",
      () => stats().running,
    );
    r.gauge("moa_requests_in_flight", "HTTP requests being answered (a scrape does not count itself).", () =>
      source.requestsInFlight(),
    );
    r.gauge(
      "moa_kv_cache_used_bytes",
      "KV cache bytes held by running sequences.",
      () => stats().kvUsedBytes,
    );
    r.gauge("moa_kv_cache_free_bytes", "KV cache bytes free for new sequences.", () => stats().kvFreeBytes);
    r.gauge(
      "moa_kv_cache_capacity_bytes",
      "KV cache bytes allocated (slots × bytes per sequence).",
      () => stats().kvCapacityBytes,
    );
    r.gauge("moa_kv_cache_budget_bytes", "KV cache budget the server was given.", () => source.kvBudgetBytes);
    r.gauge(
      "moa_kv_sequence_bytes",
      "Exact KV bytes one sequence holds at the max length (from the plan).",
      () => stats().sequenceBytes,
    );
    r.gauge("moa_kv_slots", "KV cache sequence slots by state.", () => {
      const s = stats();
      return [
        [{ state: "used" }, s.running],
        [{ state: "free" }, s.freeSlots],
      ];
    });
    r.gauge("moa_generation_tokens_per_second", "Tokens generated per second over the last 10 s.", () =>
      this.tokenRate.perSecond(),
    );
    r.gauge(
      "process_resident_memory_bytes",
      "Resident memory of the server process.",
      () => process.memoryUsage().rss,
    );
    r.gauge("nodejs_heap_used_bytes", "V8 heap in use.", () => process.memoryUsage().heapUsed);
    this.requests = r.counter("moa_requests_total", "HTTP requests answered, by route and status code.");
    this.rejected = r.counter(
      "moa_requests_rejected_total",
      "Requests refused before generation, by reason.",
    );
    this.promptTokens = r.counter("moa_prompt_tokens_total", "Prompt tokens prefilled.");
    this.generationTokens = r.counter("moa_generation_tokens_total", "Tokens generated.");
    this.sequencesFinished = r.counter("moa_sequences_finished_total", "Sequences finished, by reason.");
    this.requestDuration = r.histogram(
      "moa_request_duration_seconds",
      "Time from receiving a generation request to its last byte, by route.",
    );
    this.queueWait = r.histogram("moa_queue_wait_seconds", "Time a sequence waited for a KV cache slot.");
    this.timeToFirstToken = r.histogram(
      "moa_time_to_first_token_seconds",
      "Time from submission to the first token.",
    );
    this.interTokenLatency = r.histogram(
      "moa_inter_token_latency_seconds",
      "Time between consecutive tokens of a sequence.",
    );
    // Unlabelled counters start at an explicit 0, so a scrape before any traffic already shows them.
    this.promptTokens.inc(undefined, 0);
    this.generationTokens.inc(undefined, 0);
  }

  /** Hooks for the scheduler. */
  observer(): SchedulerObserver {
    return {
      admitted: (seconds) => this.queueWait.observe(seconds),
      firstToken: (seconds) => this.timeToFirstToken.observe(seconds),
      tokenGap: (seconds) => this.interTokenLatency.observe(seconds),
      tokens: (count, prefill) => {
        this.generationTokens.inc(undefined, count);
        this.promptTokens.inc(undefined, prefill);
        this.tokenRate.add(count);
      },
      finished: (reason) => this.sequencesFinished.inc({ reason }),
    };
  }

  render(): string {
    return this.registry.render();
  }
}
