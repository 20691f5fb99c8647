import { quoteInput } from '../auth/key-format';

/** Where a root field names what it acts on: the audit target type and the argument holding its id. */
const TARGETS: Readonly<Record<string, readonly [type: string, argument: string]>> = {
  'Query.user': ['user', 'id'],
  'Query.role': ['role', 'id'],
  'Query.apiKey': ['api_key', 'id'],
  'Mutation.createServiceAccount': ['user', 'input.ownerId'],
  'Mutation.updateUser': ['user', 'id'],
  'Mutation.disableUser': ['user', 'id'],
  'Mutation.enableUser': ['user', 'id'],
  'Mutation.updateRole': ['role', 'id'],
  'Mutation.deleteRole': ['role', 'id'],
  'Mutation.assignRole': ['user', 'userId'],
  'Mutation.unassignRole': ['user', 'userId'],
  'Mutation.createApiKey': ['user', 'input.ownerId'],
  'Mutation.updateApiKey': ['api_key', 'id'],
  'Mutation.rotateApiKey': ['api_key', 'id'],
  'Mutation.revokeApiKey': ['api_key', 'id'],
  'Mutation.revokeAllApiKeys': ['user', 'userId'],
  'Mutation.disableApiKey': ['api_key', 'id'],
  'Mutation.enableApiKey': ['api_key', 'id'],
  'Mutation.updateAlertRule': ['alert_rule', 'id'],
  'Mutation.deleteAlertRule': ['alert_rule', 'id'],
  'Mutation.acknowledgeAlert': ['alert', 'id'],
  'Mutation.resolveAlert': ['alert', 'id'],
};

/** Ids quoted back are at most this long: the argument is the client's, not ours. */
const MAX_ID_LENGTH = 100;

export interface DeniedTarget {
  targetType: string | null;
  targetId: string | null;
  /** Every id the refused call named (`id`, `userId`, `roleId`, `input.ownerId` …), blanked and cut like any input */
  ids: Record<string, string>;
}

/**
 * What a refused root field was aimed at, from its arguments, so that a target's history shows the
 * attempts on it that were turned away and not only the changes that were made.
 */
export function deniedTarget(rootField: string, args: Record<string, unknown>): DeniedTarget {
  const ids: Record<string, string> = {};
  const collect = (values: Record<string, unknown>, prefix: string) => {
    for (const [name, value] of Object.entries(values)) {
      if (typeof value === 'string' && (name === 'id' || name.endsWith('Id'))) ids[prefix + name] = quoteInput(value, MAX_ID_LENGTH);
    }
  };
  collect(args, '');
  if (args.input && typeof args.input === 'object') collect(args.input as Record<string, unknown>, 'input.');
  const [targetType, argument] = TARGETS[rootField] ?? [null, null];
  const targetId = argument ? (ids[argument] ?? null) : null;
  return { targetType: targetId ? targetType : null, targetId, ids };
}
