import {
  GraphQLError,
  OperationTypeNode,
  TypeInfo,
  getArgumentValues,
  getNamedType,
  getOperationAST,
  getVariableValues,
  separateOperations,
  visit,
  visitWithTypeInfo,
  type DocumentNode,
  type GraphQLSchema,
} from 'graphql';
import { BadInputError } from '../services/errors';
import { decodeCursor, pageSize } from '../services/pagination';
import { assertSeriesRange, seriesWindow, type Bucket } from '../services/usage.service';

const OPEN_RANGE_MARGIN_MS = 60_000;

/**
 * The checks a field's resolver makes of its own arguments, as pure functions of them. Every
 * object field with arguments is here (a test holds the schema to that).
 */
export const FIELD_ARGUMENT_CHECKS: Record<string, (args: Record<string, unknown>) => void> = {
  'ApiKey.usage': (args) => {
    // Checked now, resolved a moment later: an open range must pass ending now and ending a minute on
    // (a `from` just ahead of now fails the one, a range just short of the bucket limit the other).
    const bucket = (args.bucket as Bucket | null) ?? 'HOUR';
    for (const end of [new Date(), new Date(Date.now() + OPEN_RANGE_MARGIN_MS)]) {
      const range = seriesWindow(args.from as Date | null, (args.to as Date | null) ?? end);
      assertSeriesRange(range.from, range.to, bucket);
    }
  },
  'User.apiKeys': (args) => {
    pageSize(args.first as number | null);
    decodeCursor(args.after as string | null, 'k');
  },
};

/**
 * A mutation's answer is read after the change has committed. An argument its resolver would
 * refuse deep in that answer (`apiKey { usage(from: <after to>) }`) would null the whole answer of
 * a change that happened: a new key's secret, shown only there, would be lost. So a mutation
 * whose selection holds such an argument is refused before it runs, with the resolver's own error.
 * Null when it may run, or when its variables are wrong (execution refuses those).
 */
export function payloadArgumentError(schema: GraphQLSchema, document: DocumentNode, operationName: string | null | undefined, variables: Record<string, unknown> | null | undefined): GraphQLError | null {
  const operation = getOperationAST(document, operationName ?? undefined);
  if (operation?.operation !== OperationTypeNode.MUTATION) return null;
  const name = operation.name?.value ?? '';
  // Most mutations ask for no such field: known per document (Apollo hands back the same object for a repeated query).
  let known = checkedOperations.get(document);
  if (!known) checkedOperations.set(document, (known = new Map()));
  if (known.get(name) === false) return null;
  const coerced = getVariableValues(schema, operation.variableDefinitions ?? [], variables ?? {});
  if (coerced.errors) return null;
  const typeInfo = new TypeInfo(schema);
  let checked = false;
  let refusal: GraphQLError | null = null;
  // The operation and the fragments it spreads, each walked once where it is defined (also
  // where @skip or @include would leave it out: refused all the same).
  visit(
    separateOperations(document)[name] ?? document,
    visitWithTypeInfo(typeInfo, {
      Field(node) {
        const parent = typeInfo.getParentType();
        const field = typeInfo.getFieldDef();
        const check = parent && field ? FIELD_ARGUMENT_CHECKS[`${getNamedType(parent).name}.${field.name}`] : undefined;
        if (!check) return;
        checked = true;
        if (refusal) return;
        try {
          check(getArgumentValues(field!, node, coerced.coerced));
        } catch (error) {
          // Anything else is execution's to report, as it would without this look ahead.
          if (!(error instanceof BadInputError)) return;
          refusal = new GraphQLError(error.message, { nodes: [node], extensions: { code: 'BAD_USER_INPUT', field: error.field, http: { status: 400 } } });
        }
      },
    }),
  );
  known.set(name, checked);
  return refusal;
}

/** Per document, per operation name: whether the operation holds a field with checked arguments. */
const checkedOperations = new WeakMap<DocumentNode, Map<string, boolean>>();
