import { Kind, type DocumentNode, type FieldNode, type FragmentDefinitionNode, type OperationDefinitionNode, type SelectionNode } from 'graphql';
import { quoteInput } from '../auth/key-format';
import type { DataSource } from 'typeorm';
import { actorOf, type GraphQLContext, type Principal, type Refusal, type RequestMeta } from '../auth/context';
import { AuditOutcome } from '../entities/enums';
import type { Services } from '../services';
import { DomainError } from '../services/errors';
import { createLoaders, type Loaders } from '../services/loaders';
import { deniedTarget, type DeniedTarget } from './denial-target';

export function buildContext(
  dataSource: DataSource,
  services: Services,
  principal: Principal,
  meta: RequestMeta,
  sharedLoaders?: () => Loaders,
): GraphQLContext {
  return new RequestContext(dataSource, services, principal, meta, sharedLoaders);
}

/**
 * A class, not a literal: Apollo shallow-copies the context into an object of the same prototype,
 * which keeps `loaders` a getter (a literal's getter would be read once, at the copy) and lets
 * `renewLoaders` act on the copy the resolvers see.
 */
class RequestContext implements GraphQLContext {
  readonly requestId: string;
  readonly ip: string | null;
  readonly userAgent: string | null;
  readonly actor: GraphQLContext['actor'];
  readonly deniedAudited = new Set<string>();
  readonly refusals: Refusal[] = [];
  readonly rootsInFlight: Array<Promise<void>> = [];
  private ownLoaders: Loaders | undefined = undefined;

  constructor(
    private readonly dataSource: DataSource,
    readonly services: Services,
    readonly principal: Principal,
    meta: RequestMeta,
    private readonly sharedLoaders?: () => Loaders,
  ) {
    this.requestId = meta.requestId;
    this.ip = meta.ip;
    this.userAgent = meta.userAgent;
    this.actor = actorOf(principal, meta);
  }

  /** Created on first use: verification requests never load relations. */
  get loaders(): Loaders {
    // Shared loaders are renewed every few ms: a long-lived subscription must not pin one set.
    if (this.sharedLoaders) return this.sharedLoaders();
    return (this.ownLoaders ??= createLoaders(this.dataSource));
  }

  /** Shared loaders renew themselves; a request's are dropped between its mutations. */
  renewLoaders(): void {
    this.ownLoaders = undefined;
  }
}

interface ErrorLike {
  originalError?: unknown;
  path?: ReadonlyArray<string | number>;
  root?: Refusal['root'];
}

/** The root field answering at `responseKey`, through inline fragments and named ones. */
function rootField(
  selections: readonly SelectionNode[],
  responseKey: unknown,
  fragments: ReadonlyMap<string, FragmentDefinitionNode>,
  visited: Set<string> = new Set(),
): FieldNode | undefined {
  for (const selection of selections) {
    if (selection.kind === Kind.FIELD) {
      if ((selection.alias?.value ?? selection.name.value) === responseKey) return selection;
      continue;
    }
    let nested: readonly SelectionNode[] | undefined;
    if (selection.kind === Kind.INLINE_FRAGMENT) nested = selection.selectionSet.selections;
    else if (!visited.has(selection.name.value)) {
      visited.add(selection.name.value);
      nested = fragments.get(selection.name.value)?.selectionSet.selections;
    }
    const found = nested ? rootField(nested, responseKey, fragments, visited) : undefined;
    if (found) return found;
  }
  return undefined;
}

/** `Mutation.createRole` for the root field an error's path starts at, whatever alias or fragment the client used. */
function rootOperation(operation: OperationDefinitionNode | null | undefined, path: ErrorLike['path'], document: DocumentNode | null | undefined): string {
  const responseKey = path?.[0];
  const type = operation ? operation.operation[0]!.toUpperCase() + operation.operation.slice(1) : 'Operation';
  const fragments = new Map<string, FragmentDefinitionNode>();
  for (const definition of document?.definitions ?? []) {
    if (definition.kind === Kind.FRAGMENT_DEFINITION) fragments.set(definition.name.value, definition);
  }
  const field = operation ? rootField(operation.selectionSet.selections, responseKey, fragments) : undefined;
  // Without the document the response key is all there is, and a client chose it: blanked like any input.
  return `${type}.${field?.name.value ?? quoteInput(String(responseKey ?? 'unknown'), 100)}`;
}

/** Paths kept in one authz.denied event; `attempts` counts them all */
const MAX_DENIED_PATHS = 10;

/**
 * Every FORBIDDEN answer becomes an authz.denied event naming the attempted operation,
 * whichever layer refused it (the auth checker or a service rule such as no-escalation).
 */
/** How long a refusal's answer waits for the root fields still running before it goes */
const ROOTS_WAIT_MS = 1000;

export async function auditDenials(
  context: GraphQLContext,
  errors: readonly ErrorLike[],
  operationName: string | null,
  operationNode?: OperationDefinitionNode | null,
  document?: DocumentNode | null,
): Promise<void> {
  // One event per refused operation, however many aliases asked for it: `attempts` counts the
  // aliases (root fields), not the rows of one list that each met the same refusal.
  // Root fields graphql-js answered without may still refuse: wait a moment for them, and audit
  // any that take longer once they settle, without holding the answer back for them.
  const rootsSettled = Promise.all(context.rootsInFlight);
  let timer: NodeJS.Timeout | undefined;
  const inTime = await Promise.race([
    rootsSettled.then(() => true),
    new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ROOTS_WAIT_MS))),
  ]);
  clearTimeout(timer);
  if (!inTime) void rootsSettled.then(() => auditDenials(context, [], operationName, operationNode, document)).catch(() => undefined);
  interface Refused {
    original: DomainError;
    paths: Map<unknown, ErrorLike['path'] | null>;
    target?: DeniedTarget;
  }
  const refused = new Map<string, Refused>();
  for (const error of [...errors, ...context.refusals]) {
    const original = error.originalError;
    if (!(original instanceof DomainError) || original.code !== 'FORBIDDEN') continue;
    const operation = String(original.extensions.operation ?? rootOperation(operationNode, error.path, document));
    if (context.deniedAudited.has(operation)) continue;
    const seen: Refused = refused.get(operation) ?? { original, paths: new Map() };
    refused.set(operation, seen);
    const root = error.path?.[0];
    if (!seen.paths.has(root)) seen.paths.set(root, error.path ?? null);
    // The first refused call's arguments name the target; further aliases are counted in `attempts`.
    if (!seen.target && error.root) seen.target = deniedTarget(error.root.field, error.root.args);
  }
  for (const [operation, { original, paths: byRoot, target }] of refused) {
    context.deniedAudited.add(operation);
    const paths = [...byRoot.values()];
    await context.services.audit.recordAlone(context.actor, {
      action: 'authz.denied',
      outcome: AuditOutcome.DENIED,
      targetType: target?.targetType ?? null,
      targetId: target?.targetId ?? null,
      details: {
        operation,
        operationName,
        path: paths[0],
        ...(paths.length > 1 ? { attempts: paths.length, paths: paths.slice(0, MAX_DENIED_PATHS) } : {}),
        reason: original.message,
        ...(original.extensions.required ? { required: original.extensions.required } : {}),
        ...(target && Object.keys(target.ids).length ? { ids: target.ids } : {}),
      },
    });
  }
}
