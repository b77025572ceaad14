/**
 * Turns a growing list of generated token ids into text deltas that are safe to send: only complete characters
 * (a byte-level BPE token may end inside a UTF-8 sequence) and never the start of a stop string, which is held
 * back until it either completes (the text ends before it) or stops matching (it is released).
 */

export interface Detokenizer {
  decode(ids: readonly number[]): string;
}

export class TextDeltaStream {
  private readonly ids: number[] = [];
  /** Window decoding (as TGI and transformers' TextStreamer do): each step decodes a few recent ids only. */
  private prefixOffset = 0;
  private readOffset = 0;
  private text = "";
  private released = 0;
  private readonly longestStop: number;
  /** Set once a stop string has been found; the text ends right before it. */
  stopped = false;

  constructor(
    private readonly tokenizer: Detokenizer,
    private readonly stopStrings: readonly string[],
  ) {
    this.longestStop = stopStrings.reduce((n, s) => Math.max(n, s.length), 0);
  }

  /** Appends a token; returns the text now safe to send. `final`: nothing follows, release everything. */
  push(token: number, final: boolean): string {
    this.ids.push(token);
    const before = this.tokenizer.decode(this.ids.slice(this.prefixOffset, this.readOffset));
    const window = this.tokenizer.decode(this.ids.slice(this.prefixOffset));
    // U+FFFD at the end means the last token stopped inside a character: wait for the rest unless final.
    if (window.length > before.length && (final || !window.endsWith("\uFFFD"))) {
      this.text += window.slice(before.length);
      this.prefixOffset = this.readOffset;
      this.readOffset = this.ids.length;
    }
    if (this.stopStrings.length > 0) {
      // Released text holds no stop string and no stop-string prefix at its end, so a match starts later.
      const from = Math.max(0, this.released - this.longestStop + 1);
      let cut = -1;
      for (const stop of this.stopStrings) {
        const at = this.text.indexOf(stop, from);
        if (at >= 0 && (cut < 0 || at < cut)) cut = at;
      }
      if (cut >= 0) {
        this.stopped = true;
        this.text = this.text.slice(0, cut);
        return this.releaseTo(cut);
      }
    }
    return this.releaseTo(final ? this.text.length : this.text.length - this.heldBack());
  }

  /** All text so far, released or held. */
  get fullText(): string {
    return this.text;
  }

  /** Tokens pushed so far. */
  get tokenCount(): number {
    return this.ids.length;
  }

  private releaseTo(end: number): string {
    if (end <= this.released) return "";
    const delta = this.text.slice(this.released, end);
    this.released = end;
    return delta;
  }

  /** Length of the longest unreleased suffix of the text that begins some stop string. */
  private heldBack(): number {
    let held = 0;
    const unreleased = this.text.length - this.released;
    for (const stop of this.stopStrings) {
      for (let n = Math.min(stop.length - 1, unreleased); n > held; n--) {
        if (this.text.endsWith(stop.slice(0, n))) {
          held = n;
          break;
        }
      }
    }
    return held;
  }
}
