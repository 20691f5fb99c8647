import {
  GraphQLInputObjectType,
  GraphQLList,
  GraphQLNonNull,
  GraphQLObjectType,
  GraphQLString,
  Kind,
  isEnumType,
  isScalarType,
  typeFromAST,
  valueFromAST,
  OperationTypeNode,
  getArgumentValues,
  getOperationAST,
  getVariableValues,
  isLeafType,
  parse,
  validate,
  type FieldNode,
  type GraphQLField,
  type GraphQLInputType,
  type GraphQLLeafType,
  type GraphQLOutputType,
  type ValueNode,
  type GraphQLSchema,
  type OperationDefinitionNode,
  type SelectionSetNode,
} from 'graphql';
import { LRUCache } from 'lru-cache';
import type { GraphQLContext } from '../auth/context';
import { coveredBy } from '../auth/permissions';
import { verifyManyNow, verifyOneNow, type VerifyContext } from '../resolvers/verify.resolver';
import type { VerifyKeyInput } from '../schema/verify.type';
import { BadInputError } from '../services/errors';
import { PARSE_OPTIONS, shapeError } from './document-guard';
import { documentProblem, inputProblem } from './input-hygiene';

/** Accept headers whose negotiated response type is unambiguous (as Apollo would choose it). */
const FAST_ACCEPT = new Map<string | undefined, string>([
  [undefined, 'application/json; charset=utf-8'],
  ['*/*', 'application/json; charset=utf-8'],
  ['application/json', 'application/json; charset=utf-8'],
  ['application/graphql-response+json', 'application/graphql-response+json; charset=utf-8'],
  ['application/graphql-response+json, application/json;q=0.9', 'application/graphql-response+json; charset=utf-8'],
  ['application/graphql-response+json, application/json; q=0.9', 'application/graphql-response+json; charset=utf-8'],
]);

/** What JSON.stringify escapes in a string (lone surrogates included); anything else is copied as is. */
const ESCAPED_IN_JSON = /[\u0000-\u001f"\\\ud800-\udfff]/;

function jsonString(value: string): string {
  return ESCAPED_IN_JSON.test(value) ? JSON.stringify(value) : `"${value}"`;
}

/**
 * A leaf's JSON text: JSON.stringify of its serialize, with the answers the spec scalars give for
 * values of their own type written without either call (the names String, ID, Boolean and Int
 * cannot be redefined by a schema), and an enum's few values written once each.
 */
function leafWriter(type: GraphQLLeafType): (value: unknown) => string | undefined {
  const general = (value: unknown) => JSON.stringify(type.serialize(value)) as string | undefined;
  switch (type.name) {
    case 'String':
    case 'ID':
      return (value) => (typeof value === 'string' ? jsonString(value) : general(value));
    case 'Boolean':
      return (value) => (value === true ? 'true' : value === false ? 'false' : general(value));
    case 'Int':
      return (value) => (typeof value === 'number' && Number.isInteger(value) && value <= MAX_INT && value >= MIN_INT ? String(value) : general(value));
  }
  if (isEnumType(type)) {
    const written = new Map<unknown, string | undefined>();
    return (value) => {
      let text = written.get(value);
      if (text === undefined && !written.has(value)) {
        text = general(value); // throws for a value outside the enum, as graphql-js does
        if (written.size < 64) written.set(value, text);
      }
      return text;
    };
  }
  return general;
}

const MAX_INT = 2_147_483_647;
const MIN_INT = -2_147_483_648;

/**
 * A resolved value's JSON text in its response shape, exactly as JSON.stringify would write what
 * graphql-js completes; undefined where JSON.stringify would leave the key out.
 */
type Writer = (value: unknown) => string | undefined;

interface Plan {
  operation: OperationDefinitionNode;
  field: GraphQLField<unknown, unknown>;
  fieldNode: FieldNode;
  /** Response keys of the root selection in order, as JSON text up to the value */
  root: Array<{ prefix: string; typename: boolean }>;
  write: Writer;
  /** The field's arguments from the request's variables; NOT_FAST when only graphql-js can tell */
  args: ArgsCompiler | null;
}

const NOT_FAST = Symbol('not fast');
type Coerced = unknown | typeof NOT_FAST;
type ArgsCompiler = (variables: Record<string, unknown>) => Record<string, unknown> | typeof NOT_FAST;

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
 * A writer for a selection set without fragments, directives or repeated response keys (a
 * document with any of those is not planned): fields in selection order, leaves serialised by
 * their own type, __typename by name. This is graphql-js's completeValue for such selections,
 * then JSON.stringify, in one pass with no intermediate object.
 */
function writer(type: GraphQLOutputType, selection: SelectionSetNode | undefined): Writer {
  if (type instanceof GraphQLNonNull) return writer(type.ofType, selection);
  if (type instanceof GraphQLList) {
    const item = writer(type.ofType, selection);
    return (value) => {
      if (value === null || value === undefined) return 'null';
      const items = value as unknown[];
      let out = '[';
      for (let i = 0; i < items.length; i++) out += (i > 0 ? ',' : '') + (item(items[i]) ?? 'null');
      return `${out}]`;
    };
  }
  if (isLeafType(type)) {
    const write = leafWriter(type);
    return (value) => (value === null || value === undefined ? 'null' : write(value));
  }
  if (!(type instanceof GraphQLObjectType) || !PLAIN_TYPES.has(type.name) || !selection) throw new NotFast();
  const fields = type.getFields();
  const seen = new Set<string>();
  const parts = selection.selections.map((node) => {
    if (node.kind !== Kind.FIELD || (node.directives?.length ?? 0) > 0 || (node.arguments?.length ?? 0) > 0) throw new NotFast();
    const key = node.alias?.value ?? node.name.value;
    if (seen.has(key)) throw new NotFast();
    seen.add(key);
    const prefix = `${JSON.stringify(key)}:`;
    if (node.name.value === '__typename') {
      const typename = JSON.stringify(type.name);
      return { prefix, write: () => typename };
    }
    const field = fields[node.name.value];
    if (!field) throw new NotFast();
    const inner = writer(field.type, node.selectionSet);
    const name = node.name.value;
    return { prefix, write: (source: Record<string, unknown>) => inner(source[name]) };
  });
  return (value) => {
    if (value === null || value === undefined) return 'null';
    let out = '{';
    let first = true;
    for (const part of parts) {
      const text = part.write(value as Record<string, unknown>);
      if (text === undefined) continue;
      out += (first ? '' : ',') + part.prefix + text;
      first = false;
    }
    return `${out}}`;
  };
}

/**
 * graphql-js's input coercion for a JSON value that is already valid: scalars by their own
 * parseValue, a single value where a list is expected becomes a list, absent input fields take
 * their defaults. Anything invalid is NOT_FAST, so graphql-js reports it on the normal path.
 */
function coerceJson(value: unknown, type: GraphQLInputType): Coerced {
  if (type instanceof GraphQLNonNull) return value === null || value === undefined ? NOT_FAST : coerceJson(value, type.ofType);
  if (value === null) return null;
  if (value === undefined) return NOT_FAST;
  if (type instanceof GraphQLList) {
    if (!Array.isArray(value)) {
      const one = coerceJson(value, type.ofType);
      return one === NOT_FAST ? NOT_FAST : [one];
    }
    const out = new Array<unknown>(value.length);
    for (let i = 0; i < value.length; i++) {
      const item = coerceJson(value[i], type.ofType);
      if (item === NOT_FAST) return NOT_FAST;
      out[i] = item;
    }
    return out;
  }
  if (type instanceof GraphQLInputObjectType) {
    if (typeof value !== 'object' || Array.isArray(value)) return NOT_FAST;
    const fields = type.getFields();
    const given = value as Record<string, unknown>;
    for (const name in given) if (!(name in fields)) return NOT_FAST;
    const out: Record<string, unknown> = {};
    for (const name in fields) {
      const field = fields[name]!;
      const fieldValue = given[name];
      if (fieldValue === undefined) {
        if (field.defaultValue !== undefined) out[name] = field.defaultValue;
        else if (field.type instanceof GraphQLNonNull) return NOT_FAST;
        continue;
      }
      const coerced = coerceJson(fieldValue, field.type);
      if (coerced === NOT_FAST) return NOT_FAST;
      out[name] = coerced;
    }
    return out;
  }
  // A string is what String's parseValue returns for one (ID's lowers a UUID: it takes its own path below).
  if (type === GraphQLString && typeof value === 'string') return value;
  if (isScalarType(type) || isEnumType(type)) {
    try {
      const parsed: unknown = type.parseValue(value);
      return parsed === undefined ? NOT_FAST : parsed;
    } catch {
      return NOT_FAST;
    }
  }
  return NOT_FAST;
}

function hasVariables(node: ValueNode): boolean {
  if (node.kind === Kind.VARIABLE) return true;
  if (node.kind === Kind.LIST) return node.values.some(hasVariables);
  if (node.kind === Kind.OBJECT) return node.fields.some((f) => hasVariables(f.value));
  return false;
}

/**
 * Compiles the verify field's arguments for the shapes clients send: an argument that is a
 * variable, a literal, or an input object literal whose fields are variables or literals.
 * Null when the document needs graphql-js's general coercion (nested variables, defaults).
 */
function compileArgs(schema: GraphQLSchema, operation: OperationDefinitionNode, field: GraphQLField<unknown, unknown>, node: FieldNode): ArgsCompiler | null {
  const definitions = new Map<string, GraphQLInputType>();
  for (const definition of operation.variableDefinitions ?? []) {
    if (definition.defaultValue) return null;
    definitions.set(definition.variable.name.value, typeFromAST(schema, definition.type as never) as GraphQLInputType);
  }
  type Part = (variables: Record<string, unknown>) => Coerced;
  const variable = (name: string): Part => {
    const type = definitions.get(name)!;
    return (variables) => coerceJson(variables[name], type);
  };
  const constant = (value: ValueNode, type: GraphQLInputType): Part | null => {
    const coerced = valueFromAST(value, type);
    return coerced === undefined ? null : () => coerced;
  };
  const parts: Array<{ name: string; part: Part }> = [];
  for (const argument of node.arguments ?? []) {
    const definition = field.args.find((a) => a.name === argument.name.value);
    if (!definition) return null;
    const value = argument.value;
    let part: Part | null = null;
    if (value.kind === Kind.VARIABLE) part = variable(value.name.value);
    else if (!hasVariables(value)) part = constant(value, definition.type);
    else if (value.kind === Kind.OBJECT) {
      const inputType = definition.type instanceof GraphQLNonNull ? definition.type.ofType : definition.type;
      if (!(inputType instanceof GraphQLInputObjectType)) return null;
      const fields = inputType.getFields();
      const given = new Map(value.fields.map((f) => [f.name.value, f.value]));
      const fieldParts: Array<{ name: string; part: Part }> = [];
      for (const name in fields) {
        const fieldNode = given.get(name);
        const fieldType = fields[name]!.type;
        let fieldPart: Part | null;
        if (fieldNode === undefined) {
          const fallback = fields[name]!.defaultValue;
          if (fallback === undefined) continue;
          fieldPart = () => fallback;
        } else if (fieldNode.kind === Kind.VARIABLE) {
          const read = variable(fieldNode.name.value);
          const name = fieldNode.name.value;
          // A missing variable leaves the field out in graphql-js: let it decide.
          fieldPart = (variables) => (variables[name] === undefined ? NOT_FAST : read(variables));
        } else if (!hasVariables(fieldNode)) fieldPart = constant(fieldNode, fieldType);
        else return null;
        if (!fieldPart) return null;
        fieldParts.push({ name, part: fieldPart });
      }
      part = (variables) => {
        const out: Record<string, unknown> = {};
        for (const { name, part: read } of fieldParts) {
          const coerced = read(variables);
          if (coerced === NOT_FAST) return NOT_FAST;
          out[name] = coerced;
        }
        return out;
      };
    }
    if (!part) return null;
    parts.push({ name: argument.name.value, part });
  }
  return (variables) => {
    const args: Record<string, unknown> = {};
    for (const { name, part } of parts) {
      const coerced = part(variables);
      if (coerced === NOT_FAST) return NOT_FAST;
      args[name] = coerced;
    }
    return args;
  };
}

/** Verify documents are short: longer ones take the normal path, so the plan cache stays small. */
const MAX_PLANNED_QUERY = 4096;

function planFor(schema: GraphQLSchema, query: string, operationName: string | undefined): Plan | null {
  if (query.length > MAX_PLANNED_QUERY) return null;
  try {
    const document = parse(query, PARSE_OPTIONS);
    if (shapeError(document)) return null;
    const operation = getOperationAST(document, operationName);
    if (!operation || operation.operation !== OperationTypeNode.QUERY || document.definitions.length !== 1) return null;
    if ((operation.directives?.length ?? 0) > 0) return null;
    const selections = operation.selectionSet.selections;
    if (!selections.every((s) => s.kind === Kind.FIELD && (s.directives?.length ?? 0) === 0)) return null;
    const fieldNodes = selections as readonly FieldNode[];
    // One verifying field: its bad input is refused before anything is verified, so handing such a
    // request to Apollo cannot verify anything twice.
    const verifying = fieldNodes.filter((f) => f.name.value !== '__typename');
    if (verifying.length !== 1 || !['verifyKey', 'verifyKeys'].includes(verifying[0]!.name.value)) return null;
    const keys = fieldNodes.map((f) => f.alias?.value ?? f.name.value);
    if (new Set(keys).size !== keys.length) return null;
    if (validate(schema, document).length > 0 || documentProblem(document)) return null;
    const fieldNode = verifying[0]!;
    const field = schema.getQueryType()!.getFields()[fieldNode.name.value]!;
    return {
      operation,
      field,
      fieldNode,
      root: fieldNodes.map((f) => ({ prefix: `${JSON.stringify(f.alias?.value ?? f.name.value)}:`, typename: f.name.value === '__typename' })),
      write: writer(field.type, fieldNode.selectionSet),
      args: compileArgs(schema, operation, field, fieldNode),
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
 * takes the normal path, which gives the same body or the same error. A failure after verifying
 * began is thrown (or rejected) for the caller to answer as an error: retrying it on the normal
 * path would verify, and charge, the keys again.
 */
export function createVerifyFastPath(schema: GraphQLSchema) {
  function argumentsOf(plan: Plan, variables: Record<string, unknown>): Record<string, unknown> | null {
    if (plan.args) {
      const args = plan.args(variables);
      return args === NOT_FAST ? null : args;
    }
    const coerced = getVariableValues(schema, plan.operation.variableDefinitions ?? [], variables);
    if (coerced.errors) return null;
    try {
      return getArgumentValues(plan.field, plan.fieldNode, coerced.coerced);
    } catch {
      return null;
    }
  }

  const plans = new LRUCache<string, { plan: Plan | null }>({ max: 1000 });

  /**
   * `context` is all a verification needs: who asks (their permissions) and the services. The
   * answer is synchronous when the verification is.
   */
  return function answer(
    body: unknown,
    accept: string | undefined,
    context: Pick<GraphQLContext, 'principal'> & VerifyContext,
  ): FastAnswer | null | Promise<FastAnswer | null> {
    const contentType = FAST_ACCEPT.get(accept);
    if (contentType === undefined || typeof body !== 'object' || body === null || Array.isArray(body)) return null;
    const { query, variables, operationName, extensions } = body as GraphQLBody;
    if (typeof query !== 'string' || extensions !== undefined) return null;
    // An empty name names no operation (Apollo refuses it): not the same document as no name at all.
    if (operationName !== undefined && operationName !== null && (typeof operationName !== 'string' || operationName === '')) return null;
    if (variables !== undefined && variables !== null && (typeof variables !== 'object' || Array.isArray(variables))) return null;
    // Without the permission the normal path answers FORBIDDEN and audits the denial.
    if (!coveredBy(context.principal.permissions, 'keys:verify')) return null;
    const id = operationName ? `${operationName}\n${query}` : query;
    let cached = plans.get(id);
    if (!cached) plans.set(id, (cached = { plan: planFor(schema, query, operationName ?? undefined) }));
    const plan = cached.plan;
    if (!plan) return null;

    // Input the normal path refuses before any resolver runs is refused there, with its error.
    if (variables && inputProblem(variables, 'variables')) return null;
    const args = argumentsOf(plan, (variables ?? {}) as Record<string, unknown>);
    if (!args) return null;
    let resolved: unknown;
    try {
      resolved =
        plan.field.name === 'verifyKey'
          ? verifyOneNow(context, args.input as VerifyKeyInput)
          : verifyManyNow(context, args.inputs as VerifyKeyInput[]);
    } catch (error) {
      // Input is checked before any key is verified: Apollo refuses it with its own error.
      if (error instanceof BadInputError) return null;
      throw error;
    }
    const respond = (value: unknown): FastAnswer => {
      // Apollo's serialisation: fields in the order errors, data, extensions; one trailing newline.
      let body = '{"data":{';
      for (let i = 0; i < plan.root.length; i++) {
        const { prefix, typename } = plan.root[i]!;
        body += (i > 0 ? ',' : '') + prefix + (typename ? '"Query"' : (plan.write(value) ?? 'null'));
      }
      return { contentType, body: `${body}}}\n` };
    };
    // A failure once verifying has begun is the request's answer (http.ts maps it: a database
    // outage is 503), never a second verification on the normal path.
    return resolved instanceof Promise ? resolved.then(respond) : respond(resolved);
  };
}

export type VerifyFastPath = ReturnType<typeof createVerifyFastPath>;
