import { Initial1732300000000 } from './1732300000000-initial';
import { Usage1732400000000 } from './1732400000000-usage';
import { AuditStaging1732600000000 } from './1732600000000-audit-staging';
import { ForwarderCursor1732500000000 } from './1732500000000-forwarder-cursor';
import { Alerts1732700000000 } from './1732700000000-alerts';
import { AuditPartitions1732800000000 } from './1732800000000-audit-partitions';
import { AuditDailyRollup1732900000000 } from './1732900000000-audit-daily-rollup';
import { UsageOccurrences1733000000000 } from './1733000000000-usage-occurrences';
import { UsageLeanIndexes1733100000000 } from './1733100000000-usage-lean-indexes';
import { AuditLeanIndexes1733200000000 } from './1733200000000-audit-lean-indexes';
import { AuditDetailsIndex1733300000000 } from './1733300000000-audit-details-index';
import { BlankReasons1733400000000 } from './1733400000000-blank-reasons';
import { KeyDisabledBy1733500000000 } from './1733500000000-key-disabled-by';
import { DeploymentId1733600000000 } from './1733600000000-deployment-id';
import { QuotaMovesOnRotation1733700000000 } from './1733700000000-quota-moves-on-rotation';
import { AuditAnchorsAppendOnly1733800000000 } from './1733800000000-audit-anchors-append-only';
import { BlankNames1733900000000 } from './1733900000000-blank-names';
import { AuditAnchorEntry1734000000000 } from './1734000000000-audit-anchor-entry';
import { RateLimitWindowId1734100000000 } from './1734100000000-rate-limit-window-id';

/** Every migration, in order. Listed explicitly so a compiled build needs no glob. */
export const MIGRATIONS = [Initial1732300000000, Usage1732400000000, ForwarderCursor1732500000000, AuditStaging1732600000000, Alerts1732700000000, AuditPartitions1732800000000, AuditDailyRollup1732900000000, UsageOccurrences1733000000000, UsageLeanIndexes1733100000000, AuditLeanIndexes1733200000000, AuditDetailsIndex1733300000000, BlankReasons1733400000000, KeyDisabledBy1733500000000, DeploymentId1733600000000, QuotaMovesOnRotation1733700000000, AuditAnchorsAppendOnly1733800000000, BlankNames1733900000000, AuditAnchorEntry1734000000000, RateLimitWindowId1734100000000];
