/** Paths shared by the tests: the repository's fixtures (fixtures/README.md). */
import { fileURLToPath } from "node:url";

export const MOA_NANO = fileURLToPath(new URL("../../../fixtures/moa-nano", import.meta.url));
