import { unwrapResolverError } from '@apollo/server/errors';
import { GraphQLError, type GraphQLFormattedError } from 'graphql';
import { redactKeys } from '../auth/key-format';
import { DomainError } from '../services/errors';

/** The contract's codes. Anything else reaching a client is turned into INTERNAL_SERVER_ERROR. */
export const ERROR_CODES = [
  'UNAUTHENTICATED',
  'FORBIDDEN',
  'BAD_USER_INPUT',
  'NOT_FOUND',
  'CONFLICT',
  'RATE_LIMITED',
  'GRAPHQL_PARSE_FAILED',
  'GRAPHQL_VALIDATION_FAILED',
  'BAD_REQUEST',
  'OPERATION_RESOLUTION_FAILURE',
  'PERSISTED_QUERY_NOT_FOUND',
  'PERSISTED_QUERY_NOT_SUPPORTED',
  'INTERNAL_SERVER_ERROR',
] as const;

export type ErrorCodeName = (typeof ERROR_CODES)[number];

const KNOWN = new Set<string>(ERROR_CODES);

export function isUnexpected(formatted: GraphQLFormattedError): boolean {
  return formatted.extensions?.code === 'INTERNAL_SERVER_ERROR';
}

/**
 * What graphql-js (16) says when a literal argument's value is wrong, rather than the document:
 * ValuesOfCorrectTypeRule's own messages, and those of a scalar's or enum's parseLiteral
 * (`2020-02-30` as a DateTimeISO, an Int past 32 bits, an unknown enum value). As variables the
 * same values are coercion errors, BAD_USER_INPUT; as literals validation reports them.
 */
const BAD_LITERAL = [
  /^Expected value of type "/,
  /^\w+ cannot represent /,
  /^Enum "[^"]+" cannot represent /,
  /^Value "[^"]*" does not exist in "[^"]+" enum\./,
  /^Field "[^"]+" of required type "[^"]+" was not provided\./,
  /^Field "[^"]+" is not defined by type "[^"]+"\./,
];

/**
 * Domain errors keep their code and extensions; GraphQL's own errors (parse, validation, coercion) keep
 * theirs; anything else is hidden behind INTERNAL_SERVER_ERROR so no SQL, stack or secret leaks.
 */
export function formatError(formatted: GraphQLFormattedError, error: unknown): GraphQLFormattedError {
  const original = unwrapResolverError(error);
  if (original instanceof DomainError) {
    return {
      message: redactKeys(original.message),
      locations: formatted.locations,
      path: formatted.path,
      extensions: { ...original.extensions, code: original.code },
    };
  }
  const code = formatted.extensions?.code;
  // Parse, validation and variable-coercion errors are GraphQLErrors with a code Apollo assigned.
  if (original instanceof GraphQLError && typeof code === 'string' && KNOWN.has(code) && code !== 'INTERNAL_SERVER_ERROR') {
    const { stacktrace: _stack, http: _http, ...extensions } = formatted.extensions ?? {};
    // A bad value written into the document is the same mistake as one sent as a variable.
    if (code === 'GRAPHQL_VALIDATION_FAILED' && BAD_LITERAL.some((pattern) => pattern.test(formatted.message))) extensions.code = 'BAD_USER_INPUT';
    // Coercion messages quote the input value, which may hold a key.
    return { ...formatted, message: redactKeys(formatted.message), extensions };
  }
  // Apollo's own refusals of a malformed request (a persisted query's hash or version) carry only a 400.
  if (original instanceof GraphQLError && (original.extensions?.http as { status?: number } | undefined)?.status === 400) {
    return { message: redactKeys(formatted.message), extensions: { code: 'BAD_REQUEST' } };
  }
  return {
    message: 'Internal server error',
    locations: formatted.locations,
    path: formatted.path,
    extensions: { code: 'INTERNAL_SERVER_ERROR' },
  };
}

/** PostgreSQL error classes and network failures that mean "not reachable now", not "this request is wrong" */
const UNREACHABLE_SQLSTATES = /^(08...|57P0[123]|53300)$/;
/** A statement timed out or cancelled: the database is too busy now, for this request */
const CANCELLED = '57014';
const UNAVAILABLE_NETWORK = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH']);
const UNAVAILABLE_MESSAGE = /Connection terminated|timeout exceeded when trying to connect|not currently accepting connections|the database system is (starting up|shutting down)/;

/** What a 503 for the database's absence asks the client to wait (Retry-After) */
export const UNAVAILABLE_RETRY_SECONDS = 5;

/** Whether an error (or the driver error a wrapper holds) says the database cannot serve the request at the moment: unreachable, or the statement cancelled. */
export function databaseUnavailable(error: unknown): boolean {
  return fromDatabaseDown(error, true);
}

/**
 * Whether an error (or the driver error a wrapper holds) says the database cannot be reached at
 * the moment. Only for errors of database work: a network code alone does not say whose socket.
 */
export function databaseUnreachable(error: unknown): boolean {
  return fromDatabaseDown(error, false);
}

function fromDatabaseDown(error: unknown, orCancelled: boolean): boolean {
  for (let current = error, depth = 0; current instanceof Error && depth < 4; depth++) {
    const { code } = current as { code?: unknown };
    if (typeof code === 'string' && (UNREACHABLE_SQLSTATES.test(code) || UNAVAILABLE_NETWORK.has(code) || (orCancelled && code === CANCELLED))) return true;
    if (UNAVAILABLE_MESSAGE.test(current.message)) return true;
    current = (current as { driverError?: unknown }).driverError ?? current.cause;
  }
  return false;
}

/** A transport-level error body in the GraphQL response shape, blanked as GraphQL's own errors are: it may quote the request. */
export function errorBody(code: ErrorCodeName, message: string, extra: Record<string, unknown> = {}): string {
  const extensions = Object.fromEntries(Object.entries(extra).map(([name, value]) => [name, typeof value === 'string' ? redactKeys(value) : value]));
  return JSON.stringify({ errors: [{ message: redactKeys(message), extensions: { ...extensions, code } }] });
}
