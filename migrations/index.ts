import { Initial1732300000000 } from './1732300000000-initial';

/** Every migration, in order. Listed explicitly so a compiled build needs no glob. */
export const MIGRATIONS = [Initial1732300000000];
