import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { type DefaultTheme, defineConfig } from "vitepress";

// Written by scripts/api.mjs (TypeDoc) before every build; absent only if vitepress runs without it.
const apiSidebarFile = fileURLToPath(new URL("../api/typedoc-sidebar.json", import.meta.url));
const apiSidebar: DefaultTheme.SidebarItem[] = existsSync(apiSidebarFile)
  ? JSON.parse(readFileSync(apiSidebarFile, "utf8"))
  : [];

// The guide's pages, in reading order: the sidebar and the nav's Guide menu.
const guidePages = [
  { text: "Getting started", link: "/guide/getting-started" },
  { text: "Compress a model", link: "/guide/compress" },
  { text: "Evaluate a plan", link: "/guide/evaluate" },
  { text: "Serve a model", link: "/guide/serve" },
  { text: "GPU (CUDA)", link: "/guide/gpu" },
];

const guide: DefaultTheme.SidebarItem[] = [
  { text: "Guide", items: guidePages },
  {
    text: "Concepts",
    items: [
      { text: "Elastic rules", link: "/concepts/elastic-rules" },
      { text: "Attention influence", link: "/concepts/influence" },
      { text: "Optimisation", link: "/concepts/optimisation" },
    ],
  },
  {
    text: "Reference",
    items: [
      { text: "CLI", link: "/reference/cli" },
      { text: "Plan format", link: "/reference/plan-format" },
      { text: "Profile format", link: "/reference/profile-format" },
      { text: "API", link: "/api/" },
    ],
  },
  { text: "Benchmarks", link: "/benchmarks" },
];

export default defineConfig({
  title: "moa",
  description:
    "Compress LLMs with MoA (Mixture of Sparse Attention) and serve them: profiling, a density-budgeted MIP, CUDA kernels and an elastic KV cache, in TypeScript.",
  base: process.env.DOCS_BASE ?? "/",
  lang: "en-GB",
  cleanUrls: true,
  lastUpdated: false,
  // Never set ignoreDeadLinks: a broken link must fail the build.
  srcExclude: ["README.md"],
  // One page at a time, so the local search index lists pages in the same order on every build
  // (with concurrency it follows completion order, and the output differs from run to run).
  buildConcurrency: 1,
  markdown: {
    // Shiki gives up on a line after 500 ms by default and leaves the rest unhighlighted; on a loaded
    // 2-core machine that made the same page highlight differently from build to build. No limit.
    shikiSetup(highlighter) {
      const codeToHtml = highlighter.codeToHtml.bind(highlighter);
      highlighter.codeToHtml = (code, options) => codeToHtml(code, { ...options, tokenizeTimeLimit: 0 });
    },
  },
  themeConfig: {
    nav: [
      {
        text: "Guide",
        activeMatch: "^/guide/",
        items: guidePages,
      },
      { text: "Concepts", link: "/concepts/elastic-rules", activeMatch: "^/concepts/" },
      { text: "Reference", link: "/reference/cli", activeMatch: "^/reference/" },
      { text: "API", link: "/api/", activeMatch: "^/api/" },
      { text: "Benchmarks", link: "/benchmarks" },
    ],
    sidebar: {
      "/api/": [{ text: "API reference", link: "/api/", items: apiSidebar }],
      "/": guide,
    },
    outline: { level: [2, 3] },
    search: { provider: "local" },
  },
});
