/** Paths shared by the tests: the repository's fixtures (fixtures/README.md). */
import { fileURLToPath } from "node:url";

export const MOA_NANO = fileURLToPath(new URL("../../../fixtures/moa-nano", import.meta.url));
export const MOA_TINY = fileURLToPath(new URL("../../../fixtures/moa-tiny", import.meta.url));
