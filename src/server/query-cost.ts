import {
  GraphQLError,
  getOperationAST,
  getVariableValues,
  type DocumentNode,
  type GraphQLField,
  type GraphQLSchema,
} from 'graphql';
import { getComplexity, type ComplexityEstimator } from 'graphql-query-complexity';
import { LRUCache } from 'lru-cache';
import { BUCKET_MILLIS, DEFAULT_GROUPS, MAX_BUCKETS, MAX_GROUPS, type TimeBucketName } from '../services/audit-report.service';
import { MAX_RANGE_POINTS, seriesWindow } from '../services/usage.service';
import { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE } from '../services/pagination';
import { requestInputError } from './input-hygiene';
import { payloadArgumentError } from './payload-arguments';

/** Far above any screen's or report's query; far below what would tie up the database. */
export const MAX_QUERY_COST = 250_000;

/** Fields whose own work is far more than their rows: a scan, an aggregate, a recomputed chain. */
const FIELD_COST: Record<string, number> = {
  'Query.auditIntegrity': 50_000,
  'Query.auditCounts': 100,
  'Query.auditTimeline': 100,
  'Query.usageReport': 100,
};

/** Rows a field without a count argument may return, where that is more than one. */
const FIELD_ROWS: Record<string, (args: Record<string, unknown>) => number> = {
  'ApiKey.usage': (args) => {
    const { from, to } = seriesWindow(dateOrNull(args.from), dateOrNull(args.to));
    return bucketsBetween(from, to, args.bucket, MAX_RANGE_POINTS);
  },
  'Query.auditTimeline': (args) => {
    const filter = (args.filter ?? {}) as { from?: unknown; to?: unknown };
    const to = dateOrNull(filter.to) ?? new Date();
    // An open range reaches back as far as the log does: ten years, say.
    const from = dateOrNull(filter.from) ?? new Date(to.getTime() - 10 * 365 * 86_400_000);
    return bucketsBetween(from, to, args.bucket, MAX_BUCKETS);
  },
  // One row per key used in the range: unknown before it runs, so a large organisation's worth.
  'Query.usageReport': () => 1000,
};

function dateOrNull(value: unknown): Date | null {
  return value instanceof Date && !Number.isNaN(value.getTime()) ? value : null;
}

/** Buckets of `bucket` (HOUR when unknown) in [from, to), at most `max` (more is refused when it runs). */
function bucketsBetween(from: Date, to: Date, bucket: unknown, max: number): number {
  const millis = BUCKET_MILLIS[(typeof bucket === 'string' && bucket in BUCKET_MILLIS ? bucket : 'HOUR') as TimeBucketName];
  return Math.min(Math.ceil((to.getTime() - from.getTime()) / millis), max);
}

/**
 * A field costs 1 (or its FIELD_COST) plus its selection once per row it may return: `first` for
 * connections, `limit` for counts, the number of keys for verifyKeys, the buckets of a series.
 */
const estimator: ComplexityEstimator = ({ type, field, args, childComplexity }) => {
  const name = `${type.name}.${field.name}`;
  const own = FIELD_COST[name] ?? 1;
  const rows = FIELD_ROWS[name]?.(args) ?? rowsOf(field, args);
  return own + Math.max(rows, 1) * childComplexity;
};

/**
 * An explicit null takes the default, as the resolvers do. A count past the maximum is costed at
 * the maximum: the resolver refuses it (BAD_USER_INPUT, naming the argument) before any row is read.
 */
function rowsOf(field: GraphQLField<unknown, unknown>, args: Record<string, unknown>): number {
  const takes = (name: string) => field.args.some((arg) => arg.name === name);
  if (takes('first')) return typeof args.first === 'number' ? Math.min(args.first, MAX_PAGE_SIZE) : DEFAULT_PAGE_SIZE;
  if (takes('limit')) return typeof args.limit === 'number' ? Math.min(args.limit, MAX_GROUPS) : DEFAULT_GROUPS;
  return Array.isArray(args.inputs) ? args.inputs.length : 1;
}

function tooComplex(message: string): GraphQLError {
  return new GraphQLError(message, { extensions: { code: 'GRAPHQL_VALIDATION_FAILED', http: { status: 400 } } });
}

/**
 * One request must not be able to tie up the server: an operation costing more than
 * MAX_QUERY_COST (thousands of aliased reports, nested pages of pages) is refused before it runs
 * (its shape was checked before validation: document-guard). Null when the operation may run, or
 * when its variables are wrong (execution says so).
 */
export function queryCostError(schema: GraphQLSchema, document: DocumentNode, operationName: string | null | undefined, variables: Record<string, unknown> | null | undefined): GraphQLError | null {
  // The verdict depends on the document (Apollo hands back the same object for a repeated query) and the variables.
  let documentId = documentIds.get(document);
  if (documentId === undefined) documentIds.set(document, (documentId = nextDocumentId++));
  const id = `${documentId}\n${operationName ?? ''}\n${variables ? JSON.stringify(variables) : ''}`;
  const cacheable = id.length <= MAX_CACHED_KEY;
  const cached = cacheable ? verdicts.get(id) : undefined;
  if (cached) return cached.message === null ? null : tooComplex(cached.message);
  const message = costProblem(schema, document, operationName, variables);
  if (cacheable) verdicts.set(id, { message });
  return message === null ? null : tooComplex(message);
}

const MAX_CACHED_KEY = 1024;
const documentIds = new WeakMap<DocumentNode, number>();
let nextDocumentId = 0;
/**
 * One bound for every document: at most about 10 MB of keys. A range open at its end costs more
 * as time passes (its buckets reach to now), so a verdict is priced again after a minute: less
 * than one bucket later.
 */
const verdicts = new LRUCache<string, { message: string | null }>({ max: 10_000, ttl: 60_000, perf: { now: () => Date.now() } });

function costProblem(schema: GraphQLSchema, document: DocumentNode, operationName: string | null | undefined, variables: Record<string, unknown> | null | undefined): string | null {
  const operation = getOperationAST(document, operationName ?? undefined);
  if (!operation) return null;
  if (getVariableValues(schema, operation.variableDefinitions ?? [], variables ?? {}).errors) return null;
  let cost: number;
  try {
    cost = getComplexity({ schema, query: document, variables: variables ?? {}, operationName: operationName ?? undefined, estimators: [estimator] });
  } catch {
    // What it throws for variables is caught above; what remains is its node limit.
    return 'The query has too many fields to evaluate';
  }
  return cost > MAX_QUERY_COST ? `The query's cost is ${cost}; at most ${MAX_QUERY_COST} is allowed (a field counts once per row it may return)` : null;
}

/**
 * What every transport checks once an operation is parsed and valid, before it runs: its input,
 * its cost, and (for a mutation) the arguments its answer will be read with.
 */
export function operationRefusal(schema: GraphQLSchema, document: DocumentNode, operationName: string | null | undefined, variables: Record<string, unknown> | null | undefined): GraphQLError | null {
  return (
    requestInputError(document, variables) ??
    queryCostError(schema, document, operationName, variables) ??
    payloadArgumentError(schema, document, operationName, variables)
  );
}
