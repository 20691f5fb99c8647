import { GraphQLError, Kind, visit, type ASTNode, type DocumentNode, type FragmentDefinitionNode, type SelectionNode, type StringValueNode, type ValueNode } from 'graphql';

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

/**
 * Where a document passes the key a verification checks: a key is a result, never an input error
 * ("A bad key is a result (valid: false)"), so one holding NUL is MALFORMED like any other. It is
 * never stored, so the text rules need not apply to it. A variable is exempt only when every use
 * of it is such a key.
 */
interface KeyPositions {
  /** variable name -> what of it is a key: all of it, its `key` field, or each element's */
  variables: Map<string, 'whole' | 'key' | 'each'>;
  literals: Set<StringValueNode>;
}

function keyPositions(document: DocumentNode): KeyPositions {
  const fragments = new Map<string, FragmentDefinitionNode>();
  for (const definition of document.definitions) if (definition.kind === Kind.FRAGMENT_DEFINITION) fragments.set(definition.name.value, definition);
  const candidates = new Map<string, { as: 'whole' | 'key' | 'each'; uses: number }>();
  const literals = new Set<StringValueNode>();
  const variableAt = (name: string, as: 'whole' | 'key' | 'each') => {
    const seen = candidates.get(name);
    if (seen && seen.as !== as) candidates.set(name, { as, uses: Number.NaN });
    else candidates.set(name, { as, uses: (seen?.uses ?? 0) + 1 });
  };
  const input = (value: ValueNode) => {
    if (value.kind === Kind.VARIABLE) variableAt(value.name.value, 'key');
    else if (value.kind === Kind.OBJECT) {
      const key = value.fields.find((field) => field.name.value === 'key')?.value;
      if (key?.kind === Kind.VARIABLE) variableAt(key.name.value, 'whole');
      else if (key?.kind === Kind.STRING) literals.add(key);
    }
  };
  const visiting = new Set<string>();
  const walk = (selections: readonly SelectionNode[]) => {
    for (const selection of selections) {
      if (selection.kind === Kind.INLINE_FRAGMENT) walk(selection.selectionSet.selections);
      else if (selection.kind === Kind.FRAGMENT_SPREAD) {
        const fragment = fragments.get(selection.name.value);
        if (fragment && !visiting.has(fragment.name.value)) {
          visiting.add(fragment.name.value);
          walk(fragment.selectionSet.selections);
        }
      } else if (selection.name.value === 'verifyKey') {
        const arg = selection.arguments?.find((a) => a.name.value === 'input')?.value;
        if (arg) input(arg);
      } else if (selection.name.value === 'verifyKeys') {
        const arg = selection.arguments?.find((a) => a.name.value === 'inputs')?.value;
        if (arg?.kind === Kind.VARIABLE) variableAt(arg.name.value, 'each');
        else if (arg?.kind === Kind.LIST) for (const element of arg.values) input(element);
      }
    }
  };
  for (const definition of document.definitions) {
    if (definition.kind === Kind.OPERATION_DEFINITION && definition.operation === 'query') walk(definition.selectionSet.selections);
  }
  // Every use of a variable anywhere (its definition aside) must be one of the positions above.
  const uses = new Map<string, number>();
  visit(document, {
    [Kind.VARIABLE](node, _key, parent) {
      if ((parent as ASTNode | undefined)?.kind === Kind.VARIABLE_DEFINITION) return;
      uses.set(node.name.value, (uses.get(node.name.value) ?? 0) + 1);
    },
  });
  const variables = new Map<string, 'whole' | 'key' | 'each'>();
  for (const [name, { as, uses: keyUses }] of candidates) if (keyUses === uses.get(name)) variables.set(name, as);
  return { variables, literals };
}

/** The variables with every key a verification checks set aside (replaced by an empty string). */
function withoutKeys(variables: Record<string, unknown>, positions: KeyPositions['variables']): Record<string, unknown> {
  const copy: Record<string, unknown> = { ...variables };
  // Only a string is exempt: anything else in a key's place (a nested array, say) is checked like any input.
  const blankKey = (value: unknown) =>
    value !== null && typeof value === 'object' && !Array.isArray(value) && typeof (value as { key?: unknown }).key === 'string' ? { ...(value as object), key: '' } : value;
  for (const [name, as] of positions) {
    if (!(name in copy)) continue;
    if (as === 'whole') copy[name] = typeof copy[name] === 'string' ? '' : copy[name];
    else if (as === 'key') copy[name] = blankKey(copy[name]);
    else if (Array.isArray(copy[name])) copy[name] = (copy[name] as unknown[]).map(blankKey);
  }
  return copy;
}

/** The same for the values written into the document itself. */
export function documentProblem(document: DocumentNode, exempt: ReadonlySet<StringValueNode> = new Set()): string | null {
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
      if (!exempt.has(node)) problem ??= textProblem(node.value, 'a string in the query');
    },
    [Kind.OBJECT]: nest,
    [Kind.LIST]: nest,
  });
  return problem;
}

/** Apollo hands back the same parsed document for a repeated query: its literals are checked once. */
const documentProblems = new WeakMap<DocumentNode, { problem: string | null; keys: KeyPositions }>();

/**
 * Input that would otherwise fail deep inside (a write refused by PostgreSQL, a stack overflow) is
 * refused up front, whatever the field: BAD_USER_INPUT rather than INTERNAL_SERVER_ERROR.
 */
export function requestInputError(document: DocumentNode, variables: Record<string, unknown> | null | undefined): GraphQLError | null {
  let checked = documentProblems.get(document);
  if (checked === undefined) {
    const keys = keyPositions(document);
    documentProblems.set(document, (checked = { problem: documentProblem(document, keys.literals), keys }));
  }
  const given = variables ?? {};
  const problem = inputProblem(checked.keys.variables.size > 0 ? withoutKeys(given, checked.keys.variables) : given, 'variables') ?? checked.problem;
  return problem ? new GraphQLError(problem, { extensions: { code: 'BAD_USER_INPUT', http: { status: 400 } } }) : null;
}
