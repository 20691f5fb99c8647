import { Initial1732300000000 } from './1732300000000-initial';
import { Usage1732400000000 } from './1732400000000-usage';

/** Every migration, in order. Listed explicitly so a compiled build needs no glob. */
export const MIGRATIONS = [Initial1732300000000, Usage1732400000000];
