/**
 * Domain errors carry one of the contract's codes; the server turns them into GraphQL errors.
 * Anything else that escapes a service is a bug and reaches clients as INTERNAL_SERVER_ERROR.
 */
export type ErrorCode = 'UNAUTHENTICATED' | 'FORBIDDEN' | 'BAD_USER_INPUT' | 'NOT_FOUND' | 'CONFLICT' | 'RATE_LIMITED';

export class DomainError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly extensions: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = new.target.name;
  }
}

export class BadInputError extends DomainError {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super('BAD_USER_INPUT', message, { field });
  }
}

export class NotFoundError extends DomainError {
  constructor(entity: string, id: string) {
    super('NOT_FOUND', `${entity} ${id} not found`, { entity });
  }
}

export class ConflictError extends DomainError {
  constructor(message: string) {
    super('CONFLICT', message);
  }
}

export class ForbiddenError extends DomainError {
  constructor(message: string, extensions: Record<string, unknown> = {}) {
    super('FORBIDDEN', message, extensions);
  }
}

export class UnauthenticatedError extends DomainError {
  constructor(message = 'A valid API key is required: Authorization: Bearer <key> or X-API-Key') {
    super('UNAUTHENTICATED', message);
  }
}

export class RateLimitedError extends DomainError {
  constructor(retryAfterSeconds: number) {
    super('RATE_LIMITED', 'Rate limit exceeded', { retryAfterSeconds });
  }
}

/** PostgreSQL aborted the transaction to break a deadlock or keep serialisability: running it again is safe. */
export function isTransientConflict(error: unknown): boolean {
  const pgError = (error as { driverError?: { code?: string }; code?: string }) ?? {};
  const code = pgError.driverError?.code ?? pgError.code;
  return code === '40P01' || code === '40001';
}

/** PostgreSQL unique_violation, so a race on a unique name becomes CONFLICT rather than a 500. */
export function isUniqueViolation(error: unknown): boolean {
  const pgError = (error as { driverError?: { code?: string }; code?: string }) ?? {};
  return (pgError.driverError?.code ?? pgError.code) === '23505';
}
