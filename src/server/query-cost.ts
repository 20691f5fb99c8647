import {
  GraphQLError,
  Kind,
  getOperationAST,
  getVariableValues,
  type DocumentNode,
  type GraphQLSchema,
  type SelectionSetNode,
} from 'graphql';
import { getComplexity, type ComplexityEstimator } from 'graphql-query-complexity';
import { LRUCache } from 'lru-cache';

/** Far above any screen's or report's query; far below what would tie up the database. */
export const MAX_QUERY_COST = 250_000;
/** Deeper than any real query (introspection's type chains included); each level is a round of loads. */
export const MAX_QUERY_DEPTH = 20;

/** Fields whose own work is far more than their rows: a scan, an aggregate, a recomputed chain. */
const FIELD_COST: Record<string, number> = {
  'Query.auditIntegrity': 50_000,
  'Query.auditCounts': 100,
  'Query.auditTimeline': 100,
  'Query.usageReport': 100,
};

/**
 * A field costs 1 (or its FIELD_COST) plus its selection once per row it may return: `first` for
 * connections, `limit` for counts, the number of keys for verifyKeys.
 */
const estimator: ComplexityEstimator = ({ type, field, args, childComplexity }) => {
  const own = FIELD_COST[`${type.name}.${field.name}`] ?? 1;
  const rows = typeof args.first === 'number' ? args.first : typeof args.limit === 'number' ? args.limit : Array.isArray(args.inputs) ? args.inputs.length : 1;
  return own + Math.max(rows, 1) * childComplexity;
};

function depthOf(selectionSet: SelectionSetNode | undefined, fragments: Map<string, SelectionSetNode>, seen: Set<string>): number {
  if (!selectionSet) return 0;
  let deepest = 0;
  for (const selection of selectionSet.selections) {
    if (selection.kind === Kind.FIELD) deepest = Math.max(deepest, 1 + depthOf(selection.selectionSet, fragments, seen));
    else if (selection.kind === Kind.INLINE_FRAGMENT) deepest = Math.max(deepest, depthOf(selection.selectionSet, fragments, seen));
    else if (!seen.has(selection.name.value)) {
      const fragment = fragments.get(selection.name.value);
      deepest = Math.max(deepest, depthOf(fragment, fragments, new Set([...seen, selection.name.value])));
    }
  }
  return deepest;
}

function tooComplex(message: string): GraphQLError {
  return new GraphQLError(message, { extensions: { code: 'GRAPHQL_VALIDATION_FAILED', http: { status: 400 } } });
}

/**
 * One request must not be able to tie up the server: a query deeper than MAX_QUERY_DEPTH or costing
 * more than MAX_QUERY_COST (thousands of aliased reports, nested pages of pages) is refused before
 * it runs. Null when the operation may run, or when its variables are wrong (execution says so).
 */
export function queryCostError(schema: GraphQLSchema, document: DocumentNode, operationName: string | null | undefined, variables: Record<string, unknown> | null | undefined): GraphQLError | null {
  // The verdict depends on the document (Apollo hands back the same object for a repeated query) and the variables.
  const id = `${operationName ?? ''}\n${variables ? JSON.stringify(variables) : ''}`;
  const cacheable = id.length <= MAX_CACHED_VARIABLES;
  let known = verdicts.get(document);
  if (!known) verdicts.set(document, (known = new LRUCache({ max: 50 })));
  const cached = cacheable ? known.get(id) : undefined;
  if (cached) return cached.message === null ? null : tooComplex(cached.message);
  const message = costProblem(schema, document, operationName, variables);
  if (cacheable) known.set(id, { message });
  return message === null ? null : tooComplex(message);
}

const MAX_CACHED_VARIABLES = 1024;
const verdicts = new WeakMap<DocumentNode, LRUCache<string, { message: string | null }>>();

function costProblem(schema: GraphQLSchema, document: DocumentNode, operationName: string | null | undefined, variables: Record<string, unknown> | null | undefined): string | null {
  const operation = getOperationAST(document, operationName ?? undefined);
  if (!operation) return null;
  const fragments = new Map<string, SelectionSetNode>();
  for (const definition of document.definitions) {
    if (definition.kind === Kind.FRAGMENT_DEFINITION) fragments.set(definition.name.value, definition.selectionSet);
  }
  const depth = depthOf(operation.selectionSet, fragments, new Set());
  if (depth > MAX_QUERY_DEPTH) return `The query is ${depth} levels deep; at most ${MAX_QUERY_DEPTH} are allowed`;
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
