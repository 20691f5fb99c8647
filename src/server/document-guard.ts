import { GraphQLError, Kind, parse, type DocumentNode, type SelectionSetNode } from 'graphql';
import { LRUCache } from 'lru-cache';

/** A document longer than this is refused by the parser itself: parsing and validating stay cheap. */
export const MAX_TOKENS = 10_000;
/** How often one response path may be selected in a document, fragments and aliases included. */
export const MAX_SAME_NAME = 32;

export const PARSE_OPTIONS = { maxTokens: MAX_TOKENS };

/**
 * Validation compares every pair of fields that meet at one response path (OverlappingFieldsCanBeMerged):
 * a 100 KB query repeating one alias blocks the event loop for seconds, and so do 32 aliases of
 * 32 aliases each (their children meet at one path a thousand times). This refuses a document in
 * which any response path is selected more than MAX_SAME_NAME times, fragments included, before
 * validation. The walk stops at the first path over the limit, so fragments that multiply cost
 * no more than that.
 */
export function repeatedNameError(document: DocumentNode): GraphQLError | null {
  const fragments = new Map<string, SelectionSetNode>();
  for (const definition of document.definitions) {
    if (definition.kind === Kind.FRAGMENT_DEFINITION) fragments.set(definition.name.value, definition.selectionSet);
  }
  let counts = new Map<string, number>();
  let over: string | null = null;
  const walk = (set: SelectionSetNode, path: string, visiting: ReadonlySet<string>): void => {
    for (const selection of set.selections) {
      if (over) return;
      if (selection.kind === Kind.FIELD) {
        const at = `${path}.${selection.alias?.value ?? selection.name.value}`;
        const count = (counts.get(at) ?? 0) + 1;
        counts.set(at, count);
        if (count > MAX_SAME_NAME) over = at;
        else if (selection.selectionSet) walk(selection.selectionSet, at, visiting);
      } else if (selection.kind === Kind.INLINE_FRAGMENT) walk(selection.selectionSet, path, visiting);
      else {
        const name = selection.name.value;
        const fragment = fragments.get(name);
        // Validation reports unknown fragments and cycles.
        if (fragment && !visiting.has(name)) walk(fragment, path, new Set([...visiting, name]));
      }
    }
  };
  for (const definition of document.definitions) {
    if (definition.kind !== Kind.OPERATION_DEFINITION && definition.kind !== Kind.FRAGMENT_DEFINITION) continue;
    counts = new Map();
    walk(definition.selectionSet, '', new Set());
    if (over) break;
  }
  if (!over) return null;
  const path = (over as string).slice(1, 200);
  return repeatedNameRefusal(`"${path}" is selected more than ${MAX_SAME_NAME} times (fragments and aliases included); at most ${MAX_SAME_NAME} are allowed`);
}

function repeatedNameRefusal(message: string): GraphQLError {
  return new GraphQLError(message, { extensions: { code: 'GRAPHQL_VALIDATION_FAILED' } });
}

/**
 * For a query string before it reaches validation: null when it may go on (a syntax error, the
 * token limit included, is left to the normal path, which reports it as GRAPHQL_PARSE_FAILED).
 */
export function documentGuardError(query: string): GraphQLError | null {
  const cacheable = query.length <= MAX_CACHED_QUERY;
  const known = cacheable ? verdicts.get(query) : undefined;
  if (known) return known.message === null ? null : repeatedNameRefusal(known.message);
  let message: string | null;
  try {
    message = repeatedNameError(parse(query, PARSE_OPTIONS))?.message ?? null;
  } catch {
    message = null;
  }
  if (cacheable) verdicts.set(query, { message });
  return message === null ? null : repeatedNameRefusal(message);
}

/** Verdicts by query text: clients repeat a handful of documents, and a parse costs microseconds each time. */
const MAX_CACHED_QUERY = 8192;
const verdicts = new LRUCache<string, { message: string | null }>({ max: 1000 });
