import { type MoaPlan, parsePlan } from "@moa/core";
import { userFacing } from "./errors.js";
import { readJsonFile } from "./io.js";

/** Reads and validates a moa-plan file; any problem becomes one line naming the file and field. */
export async function readPlanFile(path: string): Promise<MoaPlan> {
  const json = await readJsonFile(path);
  return userFacing(() => parsePlan(json, path));
}
