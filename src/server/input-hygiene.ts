import { GraphQLError, Kind, visit, type DocumentNode } from 'graphql';

/** Deeper input than any field of the schema needs; far deeper would exhaust the stack further on. */
export const MAX_INPUT_DEPTH = 32;

const SUSPECT = /[\u0000\ud800-\udfff]/;
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** What PostgreSQL text and jsonb cannot hold (NUL, half a UTF-16 surrogate pair), named for the client. */
export function textProblem(text: string, where: string): string | null {
  if (!SUSPECT.test(text)) return null;
  if (text.includes('\u0000')) return `${where} must not contain NUL characters`;
  return LONE_SURROGATE.test(text) ? `${where} must be valid Unicode (it holds half a surrogate pair)` : null;
}

/** The first problem in a JSON value (variables), with its path; null when there is none. */
export function inputProblem(value: unknown, where: string, depth = 0): string | null {
  if (typeof value === 'string') return textProblem(value, where);
  if (value === null || typeof value !== 'object') return null;
  if (depth >= MAX_INPUT_DEPTH) return `${where} is nested more than ${MAX_INPUT_DEPTH} levels deep`;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const problem = inputProblem(value[i], `${where}[${i}]`, depth + 1);
      if (problem) return problem;
    }
    return null;
  }
  for (const [name, item] of Object.entries(value)) {
    const problem = textProblem(name, `a field name in ${where}`) ?? inputProblem(item, `${where}.${name}`, depth + 1);
    if (problem) return problem;
  }
  return null;
}

/** The same for the values written into the document itself. */
export function documentProblem(document: DocumentNode): string | null {
  let problem: string | null = null;
  let depth = 0;
  const nest = {
    enter() {
      depth++;
      if (depth > MAX_INPUT_DEPTH) problem ??= `a value in the query is nested more than ${MAX_INPUT_DEPTH} levels deep`;
    },
    leave() {
      depth--;
    },
  };
  visit(document, {
    [Kind.STRING](node) {
      problem ??= textProblem(node.value, 'a string in the query');
    },
    [Kind.OBJECT]: nest,
    [Kind.LIST]: nest,
  });
  return problem;
}

/** Apollo hands back the same parsed document for a repeated query: its literals are checked once. */
const documentProblems = new WeakMap<DocumentNode, string | null>();

/**
 * Input that would otherwise fail deep inside (a write refused by PostgreSQL, a stack overflow) is
 * refused up front, whatever the field: BAD_USER_INPUT rather than INTERNAL_SERVER_ERROR.
 */
export function requestInputError(document: DocumentNode, variables: Record<string, unknown> | null | undefined): GraphQLError | null {
  let inDocument = documentProblems.get(document);
  if (inDocument === undefined) documentProblems.set(document, (inDocument = documentProblem(document)));
  const problem = inputProblem(variables ?? {}, 'variables') ?? inDocument;
  return problem ? new GraphQLError(problem, { extensions: { code: 'BAD_USER_INPUT', http: { status: 400 } } }) : null;
}
