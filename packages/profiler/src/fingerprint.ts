import { createHash } from "node:crypto";
import { open, readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";

/** Bytes hashed at each end of a weight file: enough to tell checkpoints apart without reading gigabytes. */
const EDGE_BYTES = 1 << 20;

/**
 * A SHA-256 over what makes a checkpoint directory the model it is: `config.json`, the tokenizer files and chat
 * template, and for every `*.safetensors` file its name, size and first and last MiB (its header names every
 * tensor with its offsets; the ends catch retrained weights). A resumed profile must come from the same model.
 */
export async function modelFingerprint(dir: string): Promise<string> {
  const hash = createHash("sha256");
  for (const name of ["config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]) {
    try {
      const bytes = await readFile(join(dir, name));
      hash.update(`${name}\0${bytes.length}\0`).update(bytes);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    }
  }
  const weights = (await readdir(dir)).filter((name) => name.endsWith(".safetensors")).sort();
  for (const name of weights) {
    const path = join(dir, name);
    const size = (await stat(path)).size;
    hash.update(`${name}\0${size}\0`);
    const file = await open(path, "r");
    try {
      const head = Buffer.alloc(Math.min(EDGE_BYTES, size));
      await file.read(head, 0, head.length, 0);
      const tail = Buffer.alloc(Math.min(EDGE_BYTES, size));
      await file.read(tail, 0, tail.length, size - tail.length);
      hash.update(head).update(tail);
    } finally {
      await file.close();
    }
  }
  return hash.digest("hex");
}
