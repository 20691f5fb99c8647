/**
 * Permission strings are `resource:action` (more `:` parts allowed), or wildcards `*` and `resource:*`.
 * A wildcard covers every permission that starts with its stem; `*` covers everything.
 */
const SEGMENT = '[a-z0-9_.-]+';
const PERMISSION_PATTERN = new RegExp(`^(\\*|${SEGMENT}(:${SEGMENT})*:(${SEGMENT}|\\*))$`);
const MAX_PERMISSION_LENGTH = 200;

export const SYSTEM_PERMISSIONS = [
  'users:read',
  'users:write',
  'roles:read',
  'roles:write',
  'keys:read',
  'keys:write',
  'keys:own',
  'keys:verify',
  'audit:read',
  'audit:export',
  'alerts:read',
  'alerts:write',
] as const;

export type SystemPermission = (typeof SYSTEM_PERMISSIONS)[number];

export function isValidPermission(permission: string): boolean {
  return permission.length <= MAX_PERMISSION_LENGTH && PERMISSION_PATTERN.test(permission);
}

/** Does holding `held` allow `wanted`? Both may be wildcards. */
export function covers(held: string, wanted: string): boolean {
  if (held === '*') return true;
  if (held === wanted) return true;
  if (held.endsWith(':*')) {
    const stem = held.slice(0, -1); // keep the trailing ':'
    return wanted !== '*' && wanted.startsWith(stem);
  }
  return false;
}

export function coveredBy(held: readonly string[], wanted: string): boolean {
  return held.some((h) => covers(h, wanted));
}

/**
 * A set of held permissions that answers `covers` by lookups (the exact entry, then each wildcard
 * stem of the wanted permission), not by a scan: a principal may hold thousands (100 roles of
 * 200), and pairwise checks of two such sets would hold the event loop for seconds.
 */
class PermissionIndex {
  private readonly exact: Set<string>;
  private readonly stems = new Set<string>();
  private readonly all: boolean;

  constructor(held: Iterable<string>) {
    this.exact = new Set(held);
    this.all = this.exact.has('*');
    for (const permission of this.exact) if (permission.endsWith(':*')) this.stems.add(permission.slice(0, -1));
  }

  /** Whether an entry other than `except` covers `wanted` (an entry does not make itself redundant). */
  covers(wanted: string, except?: string): boolean {
    if (this.all && except !== '*') return true;
    if (wanted !== except && this.exact.has(wanted)) return true;
    if (wanted === '*') return false;
    for (let colon = wanted.indexOf(':'); colon !== -1; colon = wanted.indexOf(':', colon + 1)) {
      const stem = wanted.slice(0, colon + 1);
      if (this.stems.has(stem) && `${stem}*` !== except) return true;
    }
    return false;
  }
}

/** Small lists (a verification asking for one or two) are cheaper to scan than to index. */
const SCAN_LIMIT = 256;

/** The entries of `wanted` that nothing in `held` covers. */
export function notCoveredBy(held: readonly string[], wanted: readonly string[]): string[] {
  if (held.length * wanted.length <= SCAN_LIMIT) return wanted.filter((w) => !coveredBy(held, w));
  const index = new PermissionIndex(held);
  return wanted.filter((w) => !index.covers(w));
}

/** On verifyKey's path with a permission or two asked for: stops at the first miss and builds nothing. */
export function coversAll(held: readonly string[], wanted: readonly string[]): boolean {
  if (held.length * wanted.length <= SCAN_LIMIT) return wanted.every((w) => coveredBy(held, w));
  const index = new PermissionIndex(held);
  return wanted.every((w) => index.covers(w));
}

/** Sorted, de-duplicated, without entries another entry already covers. */
export function normalize(permissions: Iterable<string>): string[] {
  const unique = [...new Set(permissions)];
  const index = new PermissionIndex(unique);
  return unique.filter((p) => !index.covers(p, p)).sort();
}

/**
 * What both sets allow. A key's effective permissions are its own set met with its owner's,
 * so `*` on a key means exactly what the owner holds, and losing a role shrinks every key at once.
 * An entry of either set is allowed by both when the other set covers it, and every permission
 * both allow is covered by such an entry.
 */
export function intersect(a: readonly string[], b: readonly string[]): string[] {
  const inA = new PermissionIndex(a);
  const inB = new PermissionIndex(b);
  return normalize([...a.filter((x) => inB.covers(x)), ...b.filter((y) => inA.covers(y))]);
}
