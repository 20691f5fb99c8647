import {
  Kind,
  OperationTypeNode,
  execute,
  getOperationAST,
  parse,
  validate,
  type DocumentNode,
  type GraphQLSchema,
} from 'graphql';
import { LRUCache } from 'lru-cache';
import type { GraphQLContext } from '../auth/context';
import { coveredBy } from '../auth/permissions';

/** Root fields a fast-path document may select; anything else goes through Apollo. */
const FAST_FIELDS = new Set(['verifyKey', 'verifyKeys', '__typename']);

/** Accept headers whose negotiated response type is unambiguous (as Apollo would choose it). */
const FAST_ACCEPT = new Map<string | undefined, string>([
  [undefined, 'application/json; charset=utf-8'],
  ['*/*', 'application/json; charset=utf-8'],
  ['application/json', 'application/json; charset=utf-8'],
  ['application/graphql-response+json', 'application/graphql-response+json; charset=utf-8'],
  ['application/graphql-response+json, application/json;q=0.9', 'application/graphql-response+json; charset=utf-8'],
  ['application/graphql-response+json, application/json; q=0.9', 'application/graphql-response+json; charset=utf-8'],
]);

type Plan = { document: DocumentNode } | null;

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

/**
 * Verification is what services call on every request they serve, so its documents skip Apollo's
 * per-request pipeline: a recognised document is parsed and validated once, then executed by
 * graphql-js against the same schema, resolvers and context, and serialised exactly as Apollo
 * serialises a result. Anything unusual (other fields, persisted queries, variable errors,
 * execution errors, unfamiliar Accept headers) answers null and the request takes the normal path;
 * an execution error is only possible before any key was verified (inputs are validated first).
 */
export function createVerifyFastPath(schema: GraphQLSchema) {
  const plans = new LRUCache<string, { plan: Plan }>({ max: 1000 });

  function planFor(query: string, operationName: string | undefined): Plan {
    const id = operationName === undefined ? query : `${operationName}\n${query}`;
    const cached = plans.get(id);
    if (cached) return cached.plan;
    let plan: Plan = null;
    try {
      const document = parse(query);
      const operation = getOperationAST(document, operationName);
      const eligible =
        operation != null &&
        operation.operation === OperationTypeNode.QUERY &&
        document.definitions.length === 1 &&
        (operation.directives?.length ?? 0) === 0 &&
        operation.selectionSet.selections.every(
          (s) => s.kind === Kind.FIELD && FAST_FIELDS.has(s.name.value) && (s.directives?.length ?? 0) === 0,
        ) &&
        // One verifying field at most: an error then means nothing was verified yet (inputs are
        // validated first), so handing the request to Apollo cannot verify anything twice.
        operation.selectionSet.selections.filter((s) => s.kind === Kind.FIELD && s.name.value !== '__typename').length === 1 &&
        validate(schema, document).length === 0;
      if (eligible) plan = { document };
    } catch {
      plan = null;
    }
    plans.set(id, { plan });
    return plan;
  }

  return async function answer(body: unknown, accept: string | undefined, context: GraphQLContext): Promise<FastAnswer | null> {
    const contentType = FAST_ACCEPT.get(accept);
    if (contentType === undefined || typeof body !== 'object' || body === null || Array.isArray(body)) return null;
    const { query, variables, operationName, extensions } = body as GraphQLBody;
    if (typeof query !== 'string' || extensions !== undefined) return null;
    if (operationName !== undefined && operationName !== null && typeof operationName !== 'string') return null;
    if (variables !== undefined && variables !== null && (typeof variables !== 'object' || Array.isArray(variables))) return null;
    // Without the permission the normal path answers FORBIDDEN and audits the denial.
    if (!coveredBy(context.principal.permissions, 'keys:verify')) return null;
    const plan = planFor(query, operationName ?? undefined);
    if (!plan) return null;
    const result = await execute({
      schema,
      document: plan.document,
      contextValue: context,
      variableValues: (variables ?? undefined) as Record<string, unknown> | undefined,
      operationName: operationName ?? undefined,
    });
    if (result.errors || !result.data) return null;
    // Apollo's serialisation: fields in the order errors, data, extensions; one trailing newline.
    return { contentType, body: JSON.stringify({ data: result.data }) + '\n' };
  };
}

export type VerifyFastPath = ReturnType<typeof createVerifyFastPath>;
