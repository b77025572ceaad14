// After `vitepress build`: every internal link in the built site must reach a page, and its #anchor an
// element id on that page. VitePress itself checks pages only, not anchors.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const dist = fileURLToPath(new URL("../.vitepress/dist", import.meta.url));
const base = process.env.DOCS_BASE ?? "/";

function htmlFiles(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return htmlFiles(path);
    return entry.name.endsWith(".html") ? [path] : [];
  });
}

/** The built file a site path resolves to (cleanUrls: "/a/b" is a/b.html, "/a/" is a/index.html). */
function pageFile(path) {
  const local = decodeURI(path.slice(base.length));
  const candidates =
    local === "" || local.endsWith("/")
      ? [`${local}index.html`]
      : [`${local}.html`, local, `${local}/index.html`];
  return candidates.map((c) => join(dist, c)).find((file) => existsSync(file));
}

/** The URL a built file is served at: "guide/a.html" → "<base>guide/a", "api/index.html" → "<base>api/". */
function pageUrl(file) {
  const path = relative(dist, file).split("\\").join("/");
  return base + path.replace(/(^|\/)index\.html$/, "$1").replace(/\.html$/, "");
}

const idsByFile = new Map();
function idsOf(file) {
  let ids = idsByFile.get(file);
  if (ids === undefined) {
    ids = new Set([...readFileSync(file, "utf8").matchAll(/\sid="([^"]*)"/g)].map((m) => m[1]));
    idsByFile.set(file, ids);
  }
  return ids;
}

const problems = [];
let checked = 0;
let pages = 0;
for (const file of htmlFiles(dist)) {
  if (file.endsWith("404.html")) continue;
  const html = readFileSync(file, "utf8");
  pages++;
  for (const [, href] of html.matchAll(/<a\s[^>]*href="([^"]+)"/g)) {
    if (/^[a-z]+:/i.test(href) || href.startsWith("//")) continue;
    checked++;
    const [rawPath, anchor] = href.split("#");
    let target = file;
    if (rawPath !== "") {
      // Resolve relative links (TypeDoc writes "./../interfaces/X") against the page's own URL.
      const path = new URL(rawPath, `http://site${pageUrl(file)}`).pathname;
      if (!path.startsWith(base)) {
        problems.push(`${relative(dist, file)}: ${href}: not under the site base ${base}`);
        continue;
      }
      target = pageFile(path);
      if (target === undefined) {
        problems.push(`${relative(dist, file)}: ${href}: no such page`);
        continue;
      }
    }
    if (anchor !== undefined && anchor !== "" && !idsOf(target).has(decodeURIComponent(anchor))) {
      problems.push(`${relative(dist, file)}: ${href}: no element with id "${decodeURIComponent(anchor)}"`);
    }
  }
}

if (problems.length > 0) {
  console.error(`docs: ${problems.length} broken internal link(s):\n  ${problems.join("\n  ")}`);
  process.exit(1);
}
console.log(`docs: ${checked} internal links in ${pages} pages reach their page and anchor`);
