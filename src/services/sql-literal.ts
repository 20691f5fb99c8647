import { escapeLiteral } from 'pg';

/**
 * Statements sent as literals rather than parameters, for the few places that batch several
 * statements into one round trip (the simple query protocol takes no parameters).
 */

/** A SQL literal; NUL (which PostgreSQL text cannot hold) is dropped. */
export function sqlLiteral(value: string | null): string {
  return value === null ? 'NULL' : escapeLiteral(value.replace(/\u0000/g, ''));
}

export function notifyStatement(channel: string, payload: string): string {
  return `SELECT pg_notify(${sqlLiteral(channel)}, ${sqlLiteral(payload)})`;
}
