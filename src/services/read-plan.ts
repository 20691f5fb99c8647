/** A statement and its parameters ($1, $2, …). */
export interface SqlPart {
  sql: string;
  params: unknown[];
}

/** A read as one statement, not yet run: an audited read sends it together with its audit event (AuditService.auditedRead). */
export interface ReadPlan<T> extends SqlPart {
  /** ORDER BY over the statement's output columns, as `r.<column>`: the read's order, kept when it is wrapped */
  order: string;
  /** An output column never null in the read's rows */
  marker: string;
  /** The rows, in order, to the answer */
  finish(rows: Array<Record<string, unknown>>): T;
}

/**
 * `sql`'s parameter references moved up by `offset`, so it can follow another part's parameters.
 * Only for SQL built with parameters for every value: a `$n` inside a literal would move too.
 */
export function shiftParameters(sql: string, offset: number): string {
  return sql.replace(/\$(\d+)/g, (_, n: string) => `$${Number(n) + offset}`);
}
