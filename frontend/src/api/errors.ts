/**
 * Every failure the UI shows goes through ApiError: the backend's `{code, message}` body,
 * FastAPI's validation `detail`, a network failure or an unexpected body all become one shape.
 */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly fields: Record<string, string>;

  constructor(status: number, code: string, message: string, fields: Record<string, string> = {}) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.fields = fields;
  }
}

interface ValidationItem {
  loc?: unknown[];
  msg?: string;
}

const STATUS_MESSAGES: Record<number, string> = {
  400: 'The request could not be used.',
  401: 'Please log in to continue.',
  403: 'You do not have access to this.',
  404: 'This item does not exist or is no longer available.',
  409: 'This conflicts with something that already exists.',
  413: 'The file is too large.',
  415: 'This file type is not supported.',
  422: 'Some fields are not valid.',
  429: 'Too many requests; wait a moment and try again.',
  503: 'The service is busy; try again in a moment.',
};

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
}

function fieldName(loc: unknown[] | undefined): string {
  if (!loc || loc.length === 0) return '';
  const last = loc[loc.length - 1];
  return typeof last === 'string' ? last : String(last);
}

/** Turn FastAPI validation items into per-field messages. */
export function validationFields(detail: unknown): Record<string, string> {
  const fields: Record<string, string> = {};
  if (!Array.isArray(detail)) return fields;
  for (const item of detail as ValidationItem[]) {
    const name = fieldName(item.loc);
    if (name && item.msg && !fields[name]) fields[name] = item.msg.replace(/^Value error, /, '');
  }
  return fields;
}

/** Build an ApiError from whatever the server (or the network) gave back. */
export function toApiError(body: unknown, response?: Response | null): ApiError {
  if (body instanceof ApiError) return body;
  if (!response) {
    const reason = body instanceof Error ? body.message : '';
    return new ApiError(
      0,
      'network_error',
      'The server could not be reached. Check your connection and try again.' +
        (reason && !/fetch/i.test(reason) ? ` (${reason})` : ''),
    );
  }
  const status = response.status;
  const fallback = STATUS_MESSAGES[status] ?? `The server answered with an error (HTTP ${status}).`;
  if (isRecord(body)) {
    const detail = body.detail;
    const fields = validationFields(isRecord(detail) && 'errors' in detail ? detail.errors : detail);
    if (typeof body.message === 'string' && body.message) {
      const code = typeof body.code === 'string' ? body.code : `http_${status}`;
      return new ApiError(status, code, body.message, fields);
    }
    if (typeof detail === 'string' && detail) {
      return new ApiError(status, `http_${status}`, detail, fields);
    }
    if (isRecord(detail) && typeof detail.message === 'string') {
      const code = typeof detail.code === 'string' ? detail.code : `http_${status}`;
      return new ApiError(status, code, detail.message, fields);
    }
    if (Object.keys(fields).length > 0) {
      return new ApiError(status, 'validation_error', STATUS_MESSAGES[422] ?? fallback, fields);
    }
  }
  if (typeof body === 'string' && body.trim() && body.length < 300 && !body.includes('<')) {
    return new ApiError(status, `http_${status}`, body.trim());
  }
  return new ApiError(status, `http_${status}`, fallback);
}

/** A message for any thrown value, for places that only show text. */
export function errorMessage(error: unknown): string {
  if (error instanceof ApiError) return error.message;
  if (error instanceof Error) return error.message;
  return 'Something went wrong.';
}

interface ClientResult<T> {
  data?: T;
  error?: unknown;
  response?: Response;
}

/**
 * Await a generated SDK call and return its data, throwing ApiError on any failure, so
 * TanStack Query sees errors as errors.
 */
export async function unwrap<T>(call: Promise<ClientResult<T>>): Promise<T> {
  const result = await call;
  if (result.error !== undefined || !result.response || !result.response.ok) {
    throw toApiError(result.error, result.response);
  }
  // A web page where data was expected means a proxy or the SPA fallback answered instead.
  if ((result.response.headers.get('Content-Type') ?? '').includes('text/html')) {
    throw new ApiError(
      result.response.status,
      'unexpected_response',
      'The server answered with a web page instead of data. Reload the page and try again.',
    );
  }
  return result.data as T;
}
