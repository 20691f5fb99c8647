import { Brackets, type DataSource, type SelectQueryBuilder } from 'typeorm';
import { coveredBy } from '../auth/permissions';
import { ApiKeyEntity, UserEntity } from '../entities';
import { KeyStatus, StoredKeyStatus, assertNever } from '../entities/enums';
import type { Actor } from './actor';
import { ForbiddenError } from './errors';
import { canReadKeysOf } from './key-access';
import { decodeCursor, pageByCreation, pageSize, type Page } from './pagination';
import { isUuid, searchText } from './validation';


/** A key's display start (prefix, underscore, four characters) at the beginning of the text. */
const KEY_START = /^[a-z0-9]{2,12}_[0-9A-Za-z]{4}/;
export interface ApiKeyFilter {
  ownerId?: string | null;
  status?: KeyStatus | null;
  expiresBefore?: Date | null;
  createdById?: string | null;
  search?: string | null;
}

function escapeLike(text: string): string {
  return text.replace(/[\\%_]/g, (c) => `\\${c}`);
}

/** Status is derived, so filtering by it is a condition on stored status and expiry. */
function whereStatus(query: SelectQueryBuilder<ApiKeyEntity>, status: KeyStatus): void {
  const notExpired = '(k.expires_at IS NULL OR k.expires_at > now())';
  switch (status) {
    case KeyStatus.REVOKED:
      query.andWhere(`k.stored_status = 'REVOKED'`);
      return;
    case KeyStatus.EXPIRED:
      query.andWhere(`k.stored_status <> 'REVOKED' AND k.expires_at <= now()`);
      return;
    case KeyStatus.ACTIVE:
      query.andWhere(`k.stored_status = '${StoredKeyStatus.ACTIVE}' AND ${notExpired}`);
      return;
    case KeyStatus.DISABLED:
      query.andWhere(`k.stored_status = '${StoredKeyStatus.DISABLED}' AND ${notExpired}`);
      return;
    default:
      assertNever(status);
  }
}

export class KeyQueryService {
  constructor(private readonly dataSource: DataSource) {}

  /** null when there is no such key; FORBIDDEN when it exists but is not the caller's to see. */
  async findById(actor: Actor, id: string): Promise<ApiKeyEntity | null> {
    if (!isUuid(id)) return null;
    const key = await this.dataSource.manager.findOneBy(ApiKeyEntity, { id });
    if (!key) return null;
    const owner = await this.dataSource.manager.findOneByOrFail(UserEntity, { id: key.ownerId });
    if (!canReadKeysOf(actor, owner)) {
      throw new ForbiddenError("keys:own covers only your own keys and your service accounts' keys", { required: ['keys:read'] });
    }
    return key;
  }

  /** With keys:read every key; with only keys:own, the caller's and its service accounts' keys. */
  async list(actor: Actor, filter: ApiKeyFilter | null | undefined, first: number | null | undefined, after: string | null | undefined): Promise<Page<ApiKeyEntity>> {
    // Validate paging arguments before any query runs.
    pageSize(first);
    decodeCursor(after, 'k');
    const query = this.dataSource.manager.createQueryBuilder(ApiKeyEntity, 'k');
    if (!coveredBy(actor.permissions, 'keys:read')) {
      query.andWhere('(k.owner_id = :self OR k.owner_id IN (SELECT id FROM users WHERE owner_id = :self))', { self: actor.userId });
    }
    const uuidFilter = (value: string | null | undefined, column: string, name: string) => {
      if (value === null || value === undefined) return;
      if (!isUuid(value)) query.andWhere('false');
      else query.andWhere(`k.${column} = :${name}`, { [name]: value });
    };
    uuidFilter(filter?.ownerId, 'owner_id', 'ownerId');
    uuidFilter(filter?.createdById, 'created_by_id', 'createdById');
    if (filter?.status) whereStatus(query, filter.status);
    if (filter?.expiresBefore) query.andWhere('k.expires_at < :expiresBefore', { expiresBefore: filter.expiresBefore });
    if (filter?.search) {
      const text = searchText(filter.search);
      // A key start is matched whole (kl_3Fz9, or text beginning with one): "kl" alone would be every key.
      const start = KEY_START.exec(text.trim())?.[0] ?? null;
      query.andWhere(
        new Brackets((q) => {
          q.where('k.name ILIKE :pattern', { pattern: `%${escapeLike(text)}%` });
          if (start) q.orWhere('k.start = :start', { start });
        }),
      );
    }
    return pageByCreation(query, 'k', first, after);
  }
}
