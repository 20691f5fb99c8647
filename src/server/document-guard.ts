import { GraphQLError, Kind, parse, type DocumentNode, type SelectionSetNode } from 'graphql';
import { LRUCache } from 'lru-cache';

/** A document longer than this is refused by the parser itself: parsing and validating stay cheap. */
export const MAX_TOKENS = 10_000;
/** How often one response path may be selected in a document, fragments and aliases included. */
export const MAX_SAME_NAME = 32;

export const PARSE_OPTIONS = { maxTokens: MAX_TOKENS };

/** Deeper than any real query (introspection's type chains included); each level is a round of loads. */
export const MAX_QUERY_DEPTH = 20;
/** Fields once fragments are expanded: a few hundred for a large screen, about 400 for introspection. */
export const MAX_EXPANDED_FIELDS = 10_000;

/**
 * The document's shape, checked before validation, which would otherwise do the damage itself:
 * - validation compares every pair of fields that meet at one response path
 *   (OverlappingFieldsCanBeMerged): a 100 KB query repeating one alias blocks the event loop for
 *   seconds, and so do 32 aliases of 32 aliases each (their children meet a thousand times);
 * - fragments that spread fragments expand exponentially (1 KB can stand for millions of fields);
 * - every later step (validation, cost, execution) recurses once per level.
 * So no response path may be selected more than MAX_SAME_NAME times, the expansion stops at
 * MAX_EXPANDED_FIELDS, and nothing may be deeper than MAX_QUERY_DEPTH. The walk ends at the first
 * breach, so its own cost is bounded by those limits.
 */
export function shapeError(document: DocumentNode): GraphQLError | null {
  const fragments = new Map<string, SelectionSetNode>();
  for (const definition of document.definitions) {
    if (definition.kind === Kind.FRAGMENT_DEFINITION) fragments.set(definition.name.value, definition.selectionSet);
  }
  let counts = new Map<string, number>();
  let expanded = 0;
  let problem: string | null = null;
  const walk = (set: SelectionSetNode, path: string, depth: number, visiting: ReadonlySet<string>): void => {
    for (const selection of set.selections) {
      if (problem) return;
      if (selection.kind === Kind.FIELD) {
        const at = `${path}.${selection.alias?.value ?? selection.name.value}`;
        const count = (counts.get(at) ?? 0) + 1;
        counts.set(at, count);
        if (++expanded > MAX_EXPANDED_FIELDS) problem = `The query selects more than ${MAX_EXPANDED_FIELDS} fields once its fragments are expanded`;
        else if (count > MAX_SAME_NAME) problem = `"${at.slice(1, 200)}" is selected more than ${MAX_SAME_NAME} times (fragments and aliases included); at most ${MAX_SAME_NAME} are allowed`;
        else if (depth + 1 > MAX_QUERY_DEPTH) problem = `The query is more than ${MAX_QUERY_DEPTH} levels deep`;
        else if (selection.selectionSet) walk(selection.selectionSet, at, depth + 1, visiting);
      } else if (selection.kind === Kind.INLINE_FRAGMENT) walk(selection.selectionSet, path, depth, visiting);
      else {
        const name = selection.name.value;
        const fragment = fragments.get(name);
        // Validation reports unknown fragments and cycles.
        if (fragment && !visiting.has(name)) walk(fragment, path, depth, new Set([...visiting, name]));
      }
    }
  };
  for (const definition of document.definitions) {
    if (definition.kind !== Kind.OPERATION_DEFINITION && definition.kind !== Kind.FRAGMENT_DEFINITION) continue;
    counts = new Map();
    walk(definition.selectionSet, '', 0, new Set());
    if (problem) return shapeRefusal(problem);
  }
  return null;
}

function shapeRefusal(message: string): GraphQLError {
  return new GraphQLError(message, { extensions: { code: 'GRAPHQL_VALIDATION_FAILED' } });
}

/**
 * For a query string before it reaches validation: null when it may go on (a syntax error, the
 * token limit included, is left to the normal path, which reports it as GRAPHQL_PARSE_FAILED).
 */
export function documentGuardError(query: string): GraphQLError | null {
  const cacheable = query.length <= MAX_CACHED_QUERY;
  const known = cacheable ? verdicts.get(query) : undefined;
  if (known) return known.message === null ? null : shapeRefusal(known.message);
  let message: string | null;
  try {
    message = shapeError(parse(query, PARSE_OPTIONS))?.message ?? null;
  } catch {
    message = null;
  }
  if (cacheable) verdicts.set(query, { message });
  return message === null ? null : shapeRefusal(message);
}

/** Verdicts by query text: clients repeat a handful of documents, and a parse costs microseconds each time. */
const MAX_CACHED_QUERY = 8192;
const verdicts = new LRUCache<string, { message: string | null }>({ max: 1000 });
