/**
 * Long natural text shipped with the package for calibration: original English prose (essays written for this
 * project) and original Python modules, in `data/prose.txt` and `data/code.txt`. Documents in a file are separated
 * by a line of `=====`. The text is ours, so it can be shipped and changed freely.
 */
import { readFileSync } from "node:fs";

export type CorpusName = "prose" | "code";

const cache = new Map<CorpusName, readonly string[]>();

/** The documents of a shipped corpus, in file order. */
export function corpusDocuments(name: CorpusName): readonly string[] {
  let documents = cache.get(name);
  if (documents === undefined) {
    // `../data` from both src/corpus.ts and the bundled dist/index.js.
    const text = readFileSync(new URL(`../data/${name}.txt`, import.meta.url), "utf8");
    documents = text
      .split(/\n=====\n/)
      .map((doc) => doc.trim())
      .filter((doc) => doc !== "");
    cache.set(name, documents);
  }
  return documents;
}
