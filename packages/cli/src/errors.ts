import { MoaError } from "@moa/core";

/** Exit codes the shell can rely on (STYLE.md: script-friendly). */
export const EXIT_OK = 0;
/** The command ran but failed: bad input file, infeasible budget, model error. */
export const EXIT_FAILURE = 1;
/** The command line itself is wrong: unknown command or flag, missing or malformed value. */
export const EXIT_USAGE = 2;

/** An error meant for the user: one line that says what is wrong and what to do. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = EXIT_FAILURE,
  ) {
    super(message);
    this.name = "CliError";
  }
}

export function usageError(message: string): CliError {
  return new CliError(message, EXIT_USAGE);
}

/** Runs core code that validates its input and turns its MoaError (file, field, value) into a CliError. */
export function userFacing<T>(action: () => T): T {
  try {
    return action();
  } catch (error) {
    if (error instanceof MoaError) throw new CliError(error.message);
    throw error;
  }
}

export async function userFacingAsync<T>(action: () => Promise<T>): Promise<T> {
  try {
    return await action();
  } catch (error) {
    if (error instanceof MoaError) throw new CliError(error.message);
    throw error;
  }
}
