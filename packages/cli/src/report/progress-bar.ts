import type { ProfileProgress } from "@moa/profiler";
import { type Io, processIo } from "../io.js";

/** `83` → "1:23", `3723` → "1:02:03". */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${rest}` : `${m}:${rest}`;
}

/**
 * Progress on stderr (STYLE.md: progress on stderr, results on stdout). On a terminal: one bar redrawn in place
 * with `\r`; otherwise (a log file, CI, a test) no redraws, only the lines passed to `line`.
 */
export class ProgressBar {
  private readonly tty: boolean;
  private drawn = "";

  constructor(
    private readonly io: Io,
    private readonly label: string,
    private readonly width = 24,
  ) {
    this.tty = io === processIo && process.stderr.isTTY === true;
  }

  /** Redraws the bar (terminal only). */
  update(done: number, total: number, detail: string, elapsedSeconds: number, etaSeconds?: number): void {
    if (!this.tty) return;
    const filled = total > 0 ? Math.round((this.width * done) / total) : 0;
    const bar = `${"#".repeat(filled)}${"-".repeat(this.width - filled)}`;
    const eta = etaSeconds === undefined ? "ETA –" : `ETA ${formatDuration(etaSeconds)}`;
    const text = `${this.label} [${bar}] ${done}/${total}  ${detail}  ${formatDuration(elapsedSeconds)} elapsed, ${eta}`;
    const columns = process.stderr.columns ?? 120;
    const line = text.length >= columns ? text.slice(0, columns - 1) : text;
    this.io.stderr(`\r${line.padEnd(this.drawn.length)}`);
    this.drawn = line;
  }

  /** Prints a line of its own (above the bar on a terminal). */
  line(text: string): void {
    if (this.tty && this.drawn !== "") {
      this.io.stderr(`\r${" ".repeat(this.drawn.length)}\r`);
      this.drawn = "";
    }
    this.io.stderr(`${text}\n`);
  }

  /** Ends the bar's line (terminal only). */
  finish(): void {
    if (this.tty && this.drawn !== "") this.io.stderr("\n");
    this.drawn = "";
  }
}

/** What `moa profile` and `moa compress` print while profiling: the bar, and one line per finished sample. */
export function profileProgressPrinter(bar: ProgressBar, stateDir: string | undefined) {
  return (e: ProfileProgress): void => {
    const eta = e.etaSeconds === undefined ? "" : `, ETA ${formatDuration(e.etaSeconds)}`;
    if (e.event === "resume") {
      bar.line(`resuming: ${e.resumed} of ${e.total} samples already profiled in ${stateDir}`);
    } else if (e.event === "begin") {
      bar.update(e.done, e.total, `n=${e.length} sample ${e.index}`, e.elapsedSeconds, e.etaSeconds);
    } else {
      bar.line(
        `  sample ${e.done}/${e.total}: n=${e.length} #${e.index} ${e.kind}, answer loss ${e.loss!.toFixed(4)}` +
          ` (${formatDuration(e.elapsedSeconds)} elapsed${eta})`,
      );
      bar.update(e.done, e.total, `n=${e.length} sample ${e.index} done`, e.elapsedSeconds, e.etaSeconds);
    }
  };
}
