// Generates the API reference (markdown under api/) from the packages' sources with TypeDoc.
// Runs before `vitepress build` and `vitepress dev`; offline and deterministic (no git, no source links).
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Application, LogLevel } from "typedoc";

const docsRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const repoRoot = resolve(docsRoot, "../..");
const out = join(docsRoot, "api");

// The documented packages: one line each. A package whose entry point does not exist yet is skipped
// with a notice, so the site builds while the workspace grows.
const packages = [
  { name: "@moa/core", entry: "packages/core/src/index.ts" },
  { name: "@moa/solver", entry: "packages/solver/src/index.ts" },
  { name: "@moa/runtime", entry: "packages/runtime/src/index.ts" },
  { name: "@moa/kernels-cuda", entry: "packages/kernels-cuda/src/index.ts" },
  { name: "@moa/profiler", entry: "packages/profiler/src/index.ts" },
  { name: "@moa/eval", entry: "packages/eval/src/index.ts" },
  { name: "@moa/server", entry: "packages/server/src/index.ts" },
];

const present = packages.filter((pkg) => existsSync(join(repoRoot, pkg.entry)));
for (const pkg of packages) {
  if (!present.includes(pkg)) console.warn(`docs api: skipping ${pkg.name}: ${pkg.entry} does not exist`);
}

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });

if (present.length === 0) {
  writeFileSync(join(out, "index.md"), "# API reference\n\nNo package entry point exists yet.\n");
  writeFileSync(join(out, "typedoc-sidebar.json"), "[]\n");
} else {
  const app = await Application.bootstrapWithPlugins({
    entryPoints: present.map((pkg) => join(repoRoot, pkg.entry)),
    entryPointStrategy: "resolve",
    tsconfig: join(docsRoot, "tsconfig.api.json"),
    plugin: [
      "typedoc-plugin-markdown",
      "typedoc-vitepress-theme",
      join(docsRoot, "scripts/typedoc-package-names.mjs"),
    ],
    out,
    docsRoot,
    readme: "none",
    name: present.length === 1 ? present[0].name : "API reference",
    // Source links need a git remote and change with every commit; the site must build the same from any clone.
    disableSources: true,
    disableGit: true,
    sourceLinkTemplate: "",
    // Type errors are each package's own typecheck's business; here they would only hide the docs.
    skipErrorChecking: true,
    excludePrivate: true,
    excludeInternal: true,
    sort: ["kind", "instance-first", "alphabetical-ignoring-documents"],
    excludeScopesInPaths: true,
    hidePageHeader: true,
    hideBreadcrumbs: true,
    useCodeBlocks: true,
    parametersFormat: "table",
    interfacePropertiesFormat: "table",
    typeDeclarationFormat: "table",
    sidebar: { autoConfiguration: true, format: "vitepress", pretty: true, collapsed: true },
    logLevel: LogLevel.Warn,
    validation: { notExported: false, invalidLink: true, rewrittenLink: true },
  });
  const project = await app.convert();
  if (!project) {
    console.error("docs api: TypeDoc could not convert the sources");
    process.exit(1);
  }
  await app.generateOutputs(project);
  if (app.logger.hasErrors()) process.exit(1);
  console.log(`docs api: ${present.map((p) => p.name).join(", ")} -> ${relative(docsRoot, out)}/`);
}
