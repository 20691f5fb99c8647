import {
  GraphQLList,
  GraphQLNonNull,
  GraphQLObjectType,
  Kind,
  OperationTypeNode,
  getArgumentValues,
  getOperationAST,
  getVariableValues,
  isLeafType,
  parse,
  validate,
  type FieldNode,
  type GraphQLField,
  type GraphQLOutputType,
  type GraphQLSchema,
  type OperationDefinitionNode,
  type SelectionSetNode,
} from 'graphql';
import { LRUCache } from 'lru-cache';
import type { GraphQLContext } from '../auth/context';
import { coveredBy } from '../auth/permissions';
import { verifyMany, verifyOne } from '../resolvers/verify.resolver';
import type { VerifyKeyInput } from '../schema/verify.type';

/** Accept headers whose negotiated response type is unambiguous (as Apollo would choose it). */
const FAST_ACCEPT = new Map<string | undefined, string>([
  [undefined, 'application/json; charset=utf-8'],
  ['*/*', 'application/json; charset=utf-8'],
  ['application/json', 'application/json; charset=utf-8'],
  ['application/graphql-response+json', 'application/graphql-response+json; charset=utf-8'],
  ['application/graphql-response+json, application/json;q=0.9', 'application/graphql-response+json; charset=utf-8'],
  ['application/graphql-response+json, application/json; q=0.9', 'application/graphql-response+json; charset=utf-8'],
]);

/** Turns a resolved value into its response shape, exactly as graphql-js completes it. */
type Projector = (value: unknown) => unknown;

interface Plan {
  operation: OperationDefinitionNode;
  field: GraphQLField<unknown, unknown>;
  fieldNode: FieldNode;
  /** Response keys of the root selection in order */
  root: Array<{ key: string; typename: boolean }>;
  project: Projector;
}

interface GraphQLBody {
  query?: unknown;
  variables?: unknown;
  operationName?: unknown;
  extensions?: unknown;
}

export interface FastAnswer {
  contentType: string;
  body: string;
}

class NotFast extends Error {}

/** Result types whose fields are plain properties (no field resolvers), so projecting reads them as graphql-js would. */
const PLAIN_TYPES = new Set(['VerifyResult', 'RateLimitState']);

/**
 * A projector for a selection set without fragments, directives or repeated response keys (a
 * document with any of those is not planned): fields in selection order, leaves serialised by
 * their own type, __typename by name. This is graphql-js's completeValue for such selections.
 */
function projector(type: GraphQLOutputType, selection: SelectionSetNode | undefined): Projector {
  if (type instanceof GraphQLNonNull) return projector(type.ofType, selection);
  if (type instanceof GraphQLList) {
    const item = projector(type.ofType, selection);
    return (value) => (value === null || value === undefined ? null : (value as unknown[]).map(item));
  }
  if (isLeafType(type)) return (value) => (value === null || value === undefined ? null : type.serialize(value));
  if (!(type instanceof GraphQLObjectType) || !PLAIN_TYPES.has(type.name) || !selection) throw new NotFast();
  const fields = type.getFields();
  const seen = new Set<string>();
  const parts = selection.selections.map((node) => {
    if (node.kind !== Kind.FIELD || (node.directives?.length ?? 0) > 0 || (node.arguments?.length ?? 0) > 0) throw new NotFast();
    const key = node.alias?.value ?? node.name.value;
    if (seen.has(key)) throw new NotFast();
    seen.add(key);
    if (node.name.value === '__typename') return { key, get: () => type.name };
    const field = fields[node.name.value];
    if (!field) throw new NotFast();
    const inner = projector(field.type, node.selectionSet);
    const name = node.name.value;
    return { key, get: (source: Record<string, unknown>) => inner(source[name]) };
  });
  return (value) => {
    if (value === null || value === undefined) return null;
    const out: Record<string, unknown> = {};
    for (const part of parts) out[part.key] = part.get(value as Record<string, unknown>);
    return out;
  };
}

function planFor(schema: GraphQLSchema, query: string, operationName: string | undefined): Plan | null {
  try {
    const document = parse(query);
    const operation = getOperationAST(document, operationName);
    if (!operation || operation.operation !== OperationTypeNode.QUERY || document.definitions.length !== 1) return null;
    if ((operation.directives?.length ?? 0) > 0) return null;
    const selections = operation.selectionSet.selections;
    if (!selections.every((s) => s.kind === Kind.FIELD && (s.directives?.length ?? 0) === 0)) return null;
    const fieldNodes = selections as readonly FieldNode[];
    // One verifying field: an error then means nothing was verified yet (inputs are validated
    // first), so handing the request to Apollo cannot verify anything twice.
    const verifying = fieldNodes.filter((f) => f.name.value !== '__typename');
    if (verifying.length !== 1 || !['verifyKey', 'verifyKeys'].includes(verifying[0]!.name.value)) return null;
    const keys = fieldNodes.map((f) => f.alias?.value ?? f.name.value);
    if (new Set(keys).size !== keys.length) return null;
    if (validate(schema, document).length > 0) return null;
    const fieldNode = verifying[0]!;
    const field = schema.getQueryType()!.getFields()[fieldNode.name.value]!;
    return {
      operation,
      field,
      fieldNode,
      root: fieldNodes.map((f) => ({ key: f.alias?.value ?? f.name.value, typename: f.name.value === '__typename' })),
      project: projector(field.type, fieldNode.selectionSet),
    };
  } catch {
    return null;
  }
}

/**
 * Verification is what services call on every request they serve, so its documents skip Apollo
 * and graphql-js's general executor: a recognised document is parsed, validated and compiled once
 * into a plan (variables coerced by graphql-js, the same verification code as the resolver, the
 * result projected as graphql-js would complete it), and the answer is serialised exactly as
 * Apollo serialises a result. Anything unusual (other fields, fragments, directives, persisted
 * queries, variable errors, bad input, unfamiliar Accept headers) answers null and the request
 * takes the normal path, which gives the same body or the same error.
 */
export function createVerifyFastPath(schema: GraphQLSchema) {
  const plans = new LRUCache<string, { plan: Plan | null }>({ max: 1000 });

  /** `context` is all a verification needs: who asks (their permissions) and the services. */
  return async function answer(
    body: unknown,
    accept: string | undefined,
    context: Pick<GraphQLContext, 'principal' | 'services'>,
  ): Promise<FastAnswer | null> {
    const contentType = FAST_ACCEPT.get(accept);
    if (contentType === undefined || typeof body !== 'object' || body === null || Array.isArray(body)) return null;
    const { query, variables, operationName, extensions } = body as GraphQLBody;
    if (typeof query !== 'string' || extensions !== undefined) return null;
    if (operationName !== undefined && operationName !== null && typeof operationName !== 'string') return null;
    if (variables !== undefined && variables !== null && (typeof variables !== 'object' || Array.isArray(variables))) return null;
    // Without the permission the normal path answers FORBIDDEN and audits the denial.
    if (!coveredBy(context.principal.permissions, 'keys:verify')) return null;
    const id = operationName ? `${operationName}\n${query}` : query;
    let cached = plans.get(id);
    if (!cached) plans.set(id, (cached = { plan: planFor(schema, query, operationName ?? undefined) }));
    const plan = cached.plan;
    if (!plan) return null;

    const coerced = getVariableValues(schema, plan.operation.variableDefinitions ?? [], (variables ?? {}) as Record<string, unknown>);
    if (coerced.errors) return null;
    let resolved: unknown;
    try {
      const args = getArgumentValues(plan.field, plan.fieldNode, coerced.coerced);
      resolved =
        plan.field.name === 'verifyKey'
          ? await verifyOne(context, args.input as VerifyKeyInput)
          : await verifyMany(context, args.inputs as VerifyKeyInput[]);
    } catch {
      return null;
    }
    const data: Record<string, unknown> = {};
    for (const { key, typename } of plan.root) data[key] = typename ? 'Query' : plan.project(resolved);
    // Apollo's serialisation: fields in the order errors, data, extensions; one trailing newline.
    return { contentType, body: JSON.stringify({ data }) + '\n' };
  };
}

export type VerifyFastPath = ReturnType<typeof createVerifyFastPath>;
