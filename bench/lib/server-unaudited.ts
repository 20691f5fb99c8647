/**
 * The keyledger server with its audit insert switched off (events are neither staged nor sealed,
 * and their change hooks do not run): the baseline bench:audit-write compares audited mutations
 * against. Never a production mode, so it lives here, not behind a setting.
 */
import { AuditService } from '../../src/services/audit.service';
import { main } from '../../src/index';

AuditService.prototype.record = async function skip(): Promise<void> {};
void main();
