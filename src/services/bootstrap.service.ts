import { RoleEntity } from '../entities';
import { UserKind } from '../entities/enums';
import { SYSTEM_ACTOR } from './actor';
import type { AuditService } from './audit.service';
import type { KeyService } from './key.service';
import type { UserService } from './user.service';
import { ADVISORY_LOCKS } from '../db/advisory-locks';

const BOOTSTRAP_LOCK = ADVISORY_LOCKS.bootstrap;

export interface BootstrapResult {
  /** Set only on the first start of an empty database, and only when the key was generated here. */
  generatedKey: string | null;
  created: boolean;
}

/**
 * First start on an empty database: a human `admin` with the built-in admin role and one key.
 * Later starts find users and do nothing, so no key is ever created or printed twice.
 */
export async function bootstrap(
  services: { users: UserService; keys: KeyService; audit: AuditService },
  presetKey: string | null,
): Promise<BootstrapResult> {
  return services.audit.transaction(async (tx) => {
    await tx.query('SELECT pg_advisory_xact_lock($1)', [BOOTSTRAP_LOCK]);
    const [{ count }] = (await tx.query('SELECT count(*)::int AS count FROM users')) as [{ count: number }];
    if (count > 0) return { generatedKey: null, created: false };

    const adminRole = await tx.findOneByOrFail(RoleEntity, { name: 'admin', builtIn: true });
    const admin = await services.users.insertUser(tx, SYSTEM_ACTOR, {
      kind: UserKind.HUMAN,
      name: 'admin',
      email: 'admin@keyledger.local',
      ownerId: null,
      roles: [adminRole],
    });
    const { secret } = await services.keys.insertKey(
      tx,
      SYSTEM_ACTOR,
      { ownerId: admin.id, name: 'bootstrap admin key', permissions: ['*'] },
      presetKey ? { presetSecret: presetKey } : {},
    );
    return { generatedKey: presetKey === null ? secret : null, created: true };
  });
}
