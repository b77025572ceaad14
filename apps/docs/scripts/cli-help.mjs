// Rewrites the `moa … --help` blocks of reference/cli.md with what the built CLI prints, so the reference
// shows every flag exactly as `moa <command> --help` does. Not part of the build (the site does not depend on
// @moa/cli); run it after changing a command:
//
//   pnpm --filter @moa/cli build && pnpm --filter @moa/docs cli-help           rewrite the blocks
//   pnpm --filter @moa/cli build && pnpm --filter @moa/docs cli-help --check   exit 1 if a block is stale
//
// A block is a fenced `text` block between `<!-- help: moa <command> -->` and `<!-- /help -->`.
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const page = fileURLToPath(new URL("../reference/cli.md", import.meta.url));
const bin = fileURLToPath(new URL("../../../packages/cli/dist/bin.js", import.meta.url));
const check = process.argv.includes("--check");

if (!existsSync(bin)) {
  console.error(`docs cli-help: ${bin} does not exist; run pnpm --filter @moa/cli build first`);
  process.exit(1);
}

const text = readFileSync(page, "utf8");
const stale = [];
const updated = text.replace(
  /<!-- help: moa(?<command>[^>]*?) -->\n[\s\S]*?<!-- \/help -->/g,
  (_block, command) => {
    const words = command.trim() === "" ? [] : command.trim().split(/\s+/);
    const help = execFileSync(process.execPath, [bin, ...words, "--help"], {
      encoding: "utf8",
      env: { ...process.env, NO_COLOR: "1" },
    }).trimEnd();
    const fresh = `<!-- help: moa${command} -->\n\`\`\`text\n${help}\n\`\`\`\n<!-- /help -->`;
    if (fresh !== _block) stale.push(`moa${command}`);
    return fresh;
  },
);

if (check) {
  if (stale.length > 0) {
    console.error(`docs cli-help: stale --help blocks in reference/cli.md: ${stale.join(", ")}`);
    process.exit(1);
  }
  console.log("docs cli-help: every --help block matches the built CLI");
} else {
  if (updated !== text) writeFileSync(page, updated);
  console.log(`docs cli-help: ${stale.length === 0 ? "no block changed" : `updated ${stale.join(", ")}`}`);
}
