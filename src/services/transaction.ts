import type { EntityManager, EntityTarget, ObjectLiteral } from 'typeorm';
import type { AuditService } from './audit.service';
import { ConflictError, NotFoundError, isUniqueViolation } from './errors';
import { isUuid } from './validation';

/** Runs an audited change in one transaction; a lost race on a unique column becomes CONFLICT rather than a 500. */
export async function inTransaction<T>(
  audit: AuditService,
  conflictMessage: string,
  work: (tx: EntityManager) => Promise<T>,
): Promise<T> {
  try {
    return await audit.transaction(work);
  } catch (error) {
    if (isUniqueViolation(error)) throw new ConflictError(conflictMessage);
    throw error;
  }
}

/** Reads a row FOR UPDATE so concurrent changes to it serialise; NOT_FOUND when there is none. */
export async function lockById<T extends ObjectLiteral>(
  tx: EntityManager,
  entity: EntityTarget<T>,
  label: string,
  id: string,
): Promise<T> {
  const row = isUuid(id)
    ? await tx.createQueryBuilder(entity, 'row').setLock('pessimistic_write').where('row.id = :id', { id }).getOne()
    : null;
  if (!row) throw new NotFoundError(label, id);
  return row;
}
