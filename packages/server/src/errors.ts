/**
 * Errors in the shape OpenAI's API uses, so every OpenAI client (which maps the status code to an exception
 * class and reads `error.message`) reports them as it would OpenAI's own:
 * `{ "error": { "message", "type", "param", "code" } }`.
 */

export type ApiErrorType =
  | "invalid_request_error"
  | "authentication_error"
  | "not_found_error"
  | "rate_limit_error"
  | "server_error";

export interface ApiErrorBody {
  readonly error: {
    readonly message: string;
    readonly type: ApiErrorType;
    readonly param: string | null;
    readonly code: string | null;
  };
}

/** An error answered to the client with its HTTP status and OpenAI's error body. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly type: ApiErrorType,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    /** Seconds after which a retry may succeed (sent as `Retry-After` with 429 and 503). */
    readonly retryAfter?: number,
  ) {
    super(message);
    this.name = "ApiError";
  }

  body(): ApiErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** 400: the request is malformed or names a value the server does not accept. */
export function invalidRequest(
  message: string,
  param: string | null = null,
  code: string | null = null,
): ApiError {
  return new ApiError(400, "invalid_request_error", message, param, code);
}

/** 400 for a parameter whose non-default values this server does not implement. */
export function unsupportedParameter(param: string, why = "is not supported by this server"): ApiError {
  return new ApiError(400, "invalid_request_error", `${param} ${why}`, param, "unsupported_parameter");
}
