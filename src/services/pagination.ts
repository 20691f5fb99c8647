import type { ObjectLiteral, SelectQueryBuilder } from 'typeorm';
import { crc32 } from 'node:zlib';
import { BadInputError } from './errors';

export const MAX_PAGE_SIZE = 500;
export const DEFAULT_PAGE_SIZE = 50;

export interface Page<T> {
  rows: T[];
  hasNextPage: boolean;
  totalCount: number;
}

/** Position after a row in (createdAt, id) order: stable while rows are added. */
export interface Position {
  createdAt: Date;
  id: string;
}

export function pageSize(first: number | null | undefined): number {
  const size = first ?? DEFAULT_PAGE_SIZE;
  if (!Number.isInteger(size) || size < 0 || size > MAX_PAGE_SIZE) {
    throw new BadInputError('first', `first must be between 0 and ${MAX_PAGE_SIZE}`);
  }
  return size;
}

/**
 * Which list a cursor belongs to; also the list query's table alias (u: users, k: api keys, a: alerts).
 * A cursor from another list is refused rather than read as a position in this one.
 */
export type ListKind = 'u' | 'k' | 'a';

/** A check over a cursor's fields: one edited by hand, or cut, is refused rather than trusted. */
export function cursorCheck(...fields: string[]): string {
  return crc32(fields.join('|')).toString(36);
}

export function cursorFor(kind: ListKind): (position: Position) => string {
  return (position) => {
    const fields = [kind, position.createdAt.toISOString(), position.id];
    return Buffer.from(JSON.stringify([...fields, cursorCheck(...fields)])).toString('base64url');
  };
}

/** What toISOString writes for the years 0000-9999. */
const ENCODED_DATE = /^(?!0000)\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

export function decodeCursor(cursor: string | null | undefined, kind: ListKind): Position | null {
  if (cursor === null || cursor === undefined) return null;
  const invalid = () => new BadInputError('after', 'after is not a cursor returned by this API for this list');
  if (cursor.length > 200) throw invalid();
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw invalid();
  }
  if (!Array.isArray(parsed) || parsed.length !== 4 || !parsed.every((field) => typeof field === 'string')) throw invalid();
  const [listed, time, id, check] = parsed as [string, string, string, string];
  if (listed !== kind || check !== cursorCheck(listed, time, id)) throw invalid();
  const createdAt = new Date(time);
  // Exactly as encoded: a date the parser would roll over (February 30) was not written here, nor
  // one with a six-digit year, which PostgreSQL's timestamps cannot hold.
  if (!ENCODED_DATE.test(time) || Number.isNaN(createdAt.getTime()) || createdAt.toISOString() !== time || !/^[0-9a-f-]{36}$/i.test(id)) {
    throw invalid();
  }
  return { createdAt, id };
}

/** One page in (created_at, id) order after the cursor, with the filter's total count. */
export async function pageByCreation<T extends ObjectLiteral>(
  query: SelectQueryBuilder<T>,
  alias: ListKind,
  first: number | null | undefined,
  after: string | null | undefined,
): Promise<Page<T>> {
  const size = pageSize(first);
  const position = decodeCursor(after, alias);
  const totalCount = await query.clone().getCount();
  if (position) {
    query.andWhere(`(${alias}.created_at, ${alias}.id) > (:afterTime, :afterId)`, {
      afterTime: position.createdAt,
      afterId: position.id,
    });
  }
  const rows = await query.orderBy(`${alias}.created_at`, 'ASC').addOrderBy(`${alias}.id`, 'ASC').limit(size + 1).getMany();
  return { rows: rows.slice(0, size), hasNextPage: rows.length > size, totalCount };
}
