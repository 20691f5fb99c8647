/**
 * The keyledger server with usage recording switched off: the baseline a bench compares the real
 * server's verify throughput against. Never a production mode, so it lives here, not behind a setting.
 */
import { UsageService } from '../../src/services/usage.service';
import { main } from '../../src/index';

UsageService.prototype.record = function discard(): void {};
void main();
