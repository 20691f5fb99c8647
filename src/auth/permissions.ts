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

export function coversAll(held: readonly string[], wanted: readonly string[]): boolean {
  return wanted.every((w) => coveredBy(held, w));
}

/** Sorted, de-duplicated, without entries another entry already covers. */
export function normalize(permissions: Iterable<string>): string[] {
  const unique = [...new Set(permissions)];
  const kept = unique.filter((p) => !unique.some((other) => other !== p && covers(other, p)));
  return kept.sort();
}

/**
 * What both sets allow. A key's effective permissions are its own set met with its owner's,
 * so `*` on a key means exactly what the owner holds, and losing a role shrinks every key at once.
 */
export function intersect(a: readonly string[], b: readonly string[]): string[] {
  const out: string[] = [];
  for (const x of a) {
    for (const y of b) {
      if (covers(x, y)) out.push(y);
      else if (covers(y, x)) out.push(x);
    }
  }
  return normalize(out);
}
