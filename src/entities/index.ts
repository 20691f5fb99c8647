import { AlertEntity, AlertRuleEntity } from './alert.entity';
import { ApiKeyEntity, ApiKeyRoleEntity } from './api-key.entity';
import { AuditEventEntity } from './audit-event.entity';
import { RoleEntity, UserRoleEntity } from './role.entity';
import { UserEntity } from './user.entity';

export { AlertEntity, AlertRuleEntity, ApiKeyEntity, ApiKeyRoleEntity, AuditEventEntity, RoleEntity, UserEntity, UserRoleEntity };
export const ENTITIES = [UserEntity, RoleEntity, UserRoleEntity, ApiKeyEntity, ApiKeyRoleEntity, AuditEventEntity, AlertRuleEntity, AlertEntity];
