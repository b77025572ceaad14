export { main } from "./main.js";
export { commands } from "./registry.js";
export type { Command } from "./command.js";
export type { Io } from "./io.js";
export { EXIT_FAILURE, EXIT_OK, EXIT_USAGE } from "./errors.js";
export { renderHeatmapSvg } from "./svg-heatmap.js";
