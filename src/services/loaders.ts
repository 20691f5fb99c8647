import DataLoader from 'dataloader';
import { In, type DataSource } from 'typeorm';
import { AlertRuleEntity, ApiKeyEntity, RoleEntity, UserEntity } from '../entities';
import { isUuid } from './validation';

/**
 * One set per request (per the dataloader README: callers may see different things),
 * so every relation field costs one batched query per page, not one per row.
 */
export function createLoaders(dataSource: DataSource) {
  const manager = dataSource.manager;

  const byId = <T extends { id: string }>(load: (ids: string[]) => Promise<T[]>) =>
    new DataLoader<string, T | null>(async (ids) => {
      const valid = ids.filter(isUuid);
      const rows = valid.length > 0 ? await load([...valid]) : [];
      const map = new Map(rows.map((row) => [row.id, row]));
      return ids.map((id) => map.get(id) ?? null);
    });

  const grouped = <T>(load: (ids: string[]) => Promise<Array<{ groupId: string; row: T }>>) =>
    new DataLoader<string, T[]>(async (ids) => {
      const pairs = await load([...ids]);
      const map = new Map<string, T[]>();
      for (const { groupId, row } of pairs) map.set(groupId, [...(map.get(groupId) ?? []), row]);
      return ids.map((id) => map.get(id) ?? []);
    });

  const rolesJoinedBy = (table: 'user_roles' | 'api_key_roles', column: 'user_id' | 'key_id') =>
    grouped<RoleEntity>(async (ids) => {
      const rows = (await manager.query(
        `SELECT j.${column} AS group_id, r.id FROM ${table} j JOIN roles r ON r.id = j.role_id
          WHERE j.${column} = ANY($1::uuid[]) ORDER BY r.name`,
        [ids],
      )) as Array<{ group_id: string; id: string }>;
      const roles = await roleById.loadMany(rows.map((r) => r.id));
      return rows.flatMap((r, i) => {
        const role = roles[i];
        return role instanceof RoleEntity ? [{ groupId: r.group_id, row: role }] : [];
      });
    });

  const roleById = byId((ids) => manager.find(RoleEntity, { where: { id: In(ids) } }));

  return {
    userById: byId((ids) => manager.find(UserEntity, { where: { id: In(ids) } })),
    keyById: byId((ids) => manager.find(ApiKeyEntity, { where: { id: In(ids) } })),
    roleById,
    alertRuleById: byId((ids) => manager.find(AlertRuleEntity, { where: { id: In(ids) } })),
    rolesByUserId: rolesJoinedBy('user_roles', 'user_id'),
    rolesByKeyId: rolesJoinedBy('api_key_roles', 'key_id'),
    serviceAccountsByOwnerId: grouped<UserEntity>(async (ids) => {
      const rows = await manager
        .createQueryBuilder(UserEntity, 'u')
        .where('u.owner_id = ANY(:ids::uuid[])', { ids })
        .orderBy('u.created_at')
        .addOrderBy('u.id')
        .getMany();
      return rows.map((row) => ({ groupId: row.ownerId!, row }));
    }),
    /** The key that replaced this one through rotation */
    successorByKeyId: new DataLoader<string, ApiKeyEntity | null>(async (ids) => {
      const rows = await manager
        .createQueryBuilder(ApiKeyEntity, 'k')
        .where('k.rotated_from_id = ANY(:ids::uuid[])', { ids: [...ids] })
        .getMany();
      const map = new Map(rows.map((row) => [row.rotatedFromId!, row]));
      return ids.map((id) => map.get(id) ?? null);
    }),
  };
}

export type Loaders = ReturnType<typeof createLoaders>;
