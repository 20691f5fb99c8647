import { BlockList, isIP } from 'node:net';
import { isValidPermission, normalize } from '../auth/permissions';
import { BadInputError } from './errors';
import { quoteInput, redactKeys } from '../auth/key-format';

const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const EMAIL_PATTERN = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

export function isUuid(value: string): boolean {
  return UUID_PATTERN.test(value);
}

/** An id as stored: a UUID (a key's, a user's) in lower case, as PostgreSQL prints it; anything else as it is. */
export function lowerCaseUuid(value: string): string {
  return isUuid(value) ? value.toLowerCase() : value;
}

/** PostgreSQL text cannot hold NUL; refusing it here keeps it from failing a write later. */
export function assertNoNul(field: string, value: string): string {
  if (value.includes('\u0000')) throw new BadInputError(field, `${field} must not contain NUL characters`);
  return value;
}

export function requireText(field: string, value: string, max: number): string {
  const trimmed = assertNoNul(field, value).trim();
  if (trimmed.length === 0) throw new BadInputError(field, `${field} must not be empty`);
  if (trimmed.length > max) throw new BadInputError(field, `${field} must be at most ${max} characters`);
  return trimmed;
}

const REASON_MAX = 1000;
const SEARCH_MAX = 1000;

/** Search text as given: cut short, it would match what the whole text does not. */
export function searchText(search: string): string {
  if (search.length > SEARCH_MAX) throw new BadInputError('filter.search', `filter.search is at most ${SEARCH_MAX} characters`);
  return search;
}

/** A reason kept and shown to readers. "Leaked: <the key>" is what people write, so key-shaped words are blanked. */
export function reasonText(reason: string): string {
  return redactKeys(requireText('reason', reason, REASON_MAX));
}

/** Free text shown to others (a role's description), key-shaped words blanked as in a name. */
export function optionalText(field: string, value: string | null | undefined, max: number): string | null {
  if (value === null || value === undefined) return null;
  if (value.length > max) throw new BadInputError(field, `${field} must be at most ${max} characters`);
  return redactKeys(assertNoNul(field, value));
}

/**
 * A name shown to everyone who may list it, and copied into alerts and audit records: a key
 * pasted into it by mistake is blanked before it is stored, as in a reason.
 */
export function requireName(field: string, value: string, max: number): string {
  return redactKeys(requireText(field, value, max));
}

export function requireEmail(field: string, value: string): string {
  const email = requireText(field, value, 320).toLowerCase();
  if (!EMAIL_PATTERN.test(email)) throw new BadInputError(field, `${field} is not an email address`);
  return email;
}

export function requirePermissions(field: string, permissions: readonly string[]): string[] {
  if (permissions.length > 200) throw new BadInputError(field, `${field} may hold at most 200 permissions`);
  const invalid = permissions.filter((p) => !isValidPermission(p));
  if (invalid.length > 0) {
    throw new BadInputError(
      field,
      `${field} has invalid permissions (${invalid.slice(0, 3).map((p) => JSON.stringify(quoteInput(p, 50))).join(', ')}): expected resource:action, resource:* or *`,
    );
  }
  return normalize(permissions);
}

export function requireIds(field: string, ids: readonly string[] | null | undefined): string[] {
  if (!ids) return [];
  if (ids.length > 100) throw new BadInputError(field, `${field} may hold at most 100 ids`);
  return [...new Set(ids)];
}

/**
 * An address as it is stored and compared: the IPv4-mapped IPv6 form stripped so one client always
 * has one address; null when it is not one. A zone id (`fe80::1%eth0`) names an interface of the
 * machine that wrote it, means nothing here, and PostgreSQL's inet refuses it.
 */
export function normalizeIp(address: string | null | undefined): string | null {
  if (!address || address.includes('%')) return null;
  const family = isIP(address);
  if (family !== 6) return family === 4 ? address : null;
  const canonical = canonicalIpv6(address);
  return mappedIpv4(canonical) ?? canonical;
}

/**
 * One text per IPv6 address (RFC 5952: lowercase, no leading zeros, the longest zero run as ::;
 * a mapped address in hex), so equal addresses are stored, grouped and matched as equal.
 */
function canonicalIpv6(address: string): string {
  return new URL(`http://[${address}]/`).hostname.slice(1, -1);
}

/**
 * Whether an IPv6 network holds all of ::ffff:0:0/96, i.e. every IPv4 address (stored as IPv4):
 * ::/0 does, and a filter for it must find IPv4 events as well, as the live tail's check does.
 */
export function coversMappedIpv4(cidr: string): boolean {
  const [network, bits] = cidr.split('/') as [string, string | undefined];
  if (isIP(network) !== 6 || Number(bits ?? 128) > 96) return false;
  const list = new BlockList();
  list.addSubnet(network, Number(bits ?? 128), 'ipv6');
  return list.check('::ffff:0:0', 'ipv6');
}

/** The IPv4 address an IPv4-mapped IPv6 address carries (::ffff:10.1.2.3 or ::ffff:a01:203), else null. */
function mappedIpv4(address: string): string | null {
  const lower = address.toLowerCase();
  if (!lower.startsWith('::ffff:')) return null;
  const tail = lower.slice(7);
  if (isIP(tail) === 4) return tail;
  const hex = /^([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(tail);
  if (!hex) return null;
  const [high, low] = [parseInt(hex[1]!, 16), parseInt(hex[2]!, 16)];
  return `${high >> 8}.${high & 255}.${low >> 8}.${low & 255}`;
}

/** A CIDR (or bare address, taken as a single host) in canonical `address/bits` form. */
export function parseCidr(value: string): string | null {
  const [address, bits, extra] = value.trim().split('/');
  if (extra !== undefined || !address || address.includes('%')) return null;
  const family = isIP(address);
  if (family === 0) return null;
  const max = family === 4 ? 32 : 128;
  if (bits !== undefined && !/^\d{1,3}$/.test(bits)) return null;
  const prefix = bits === undefined ? max : Number(bits);
  if (prefix > max) return null;
  // Stored as the network it names: 10.0.0.1/8 is 10.0.0.0/8, as PostgreSQL's cidr type would have it.
  if (family === 4) return `${maskIpv4(address, prefix)}/${prefix}`;
  // An IPv4-mapped network is the IPv4 network it maps, the form addresses are stored in.
  const canonical = canonicalIpv6(maskIpv6(canonicalIpv6(address), prefix));
  const mapped = mappedIpv4(canonical);
  if (mapped && prefix >= 96) return `${mapped}/${prefix - 96}`;
  return `${canonical}/${prefix}`;
}

function maskIpv4(address: string, prefix: number): string {
  const bytes = address.split('.').map(Number);
  return bytes.map((byte, i) => byte & (0xff << Math.max(0, Math.min(8, 8 * (i + 1) - prefix))) & 0xff).join('.');
}

/** `canonical` as written by canonicalIpv6 (hex groups, at most one ::) with the bits past `prefix` cleared. */
function maskIpv6(canonical: string, prefix: number): string {
  const [head, tail] = canonical.split('::') as [string, string | undefined];
  const groups = (text: string | undefined) => (text ? text.split(':').map((group) => parseInt(group, 16)) : []);
  const front = groups(head);
  const back = groups(tail);
  const all = tail === undefined ? front : [...front, ...new Array<number>(8 - front.length - back.length).fill(0), ...back];
  return all.map((group, i) => (group & (0xffff << Math.max(0, Math.min(16, 16 * (i + 1) - prefix))) & 0xffff).toString(16)).join(':');
}

/** Networks (canonical CIDRs, as parseCidr gives them) compiled once for repeated address checks. */
export function networkList(cidrs: readonly string[]): BlockList {
  const list = new BlockList();
  for (const cidr of cidrs) {
    const [network, bits] = cidr.split('/') as [string, string | undefined];
    const family = isIP(network) === 6 ? 'ipv6' : 'ipv4';
    list.addSubnet(network, Number(bits ?? (family === 'ipv6' ? 128 : 32)), family);
  }
  return list;
}

/** Whether an address lies in one of the networks; no address, or not an address, is outside. */
export function inNetworks(list: BlockList, ip: string | null | undefined): boolean {
  if (!ip) return false;
  const family = isIP(ip);
  return family !== 0 && list.check(ip, family === 6 ? 'ipv6' : 'ipv4');
}

export function requireCidrs(field: string, values: readonly string[] | null | undefined): string[] {
  if (!values) return [];
  if (values.length > 100) throw new BadInputError(field, `${field} may hold at most 100 networks`);
  const networks = values.map((value) => {
    const cidr = parseCidr(value);
    if (!cidr) throw new BadInputError(field, `${field}: ${JSON.stringify(quoteInput(value, 60))} is not an IPv4 or IPv6 CIDR`);
    return cidr;
  });
  // Two ways of writing one network (host bits, a mapped IPv4) are stored once, in the order first given.
  return [...new Set(networks)];
}

export function requirePositiveInt(field: string, value: number, max = 2_000_000_000): number {
  if (!Number.isInteger(value) || value <= 0 || value > max) {
    throw new BadInputError(field, `${field} must be a whole number from 1 to ${max}`);
  }
  return value;
}

const METADATA_MAX_BYTES = 8192;

export function requireMetadata(field: string, value: Record<string, unknown> | null | undefined): Record<string, unknown> | null {
  if (value === null || value === undefined) return null;
  const json = JSON.stringify(value);
  if (json.includes('\\u0000')) throw new BadInputError(field, `${field} must not contain NUL characters`);
  if (Buffer.byteLength(json) > METADATA_MAX_BYTES) {
    throw new BadInputError(field, `${field} must be at most ${METADATA_MAX_BYTES} bytes of JSON`);
  }
  return value;
}

export function requireFuture(field: string, value: Date | null | undefined, now = new Date()): Date | null {
  if (value === null || value === undefined) return null;
  if (Number.isNaN(value.getTime())) throw new BadInputError(field, `${field} is not a valid date-time`);
  if (value.getTime() <= now.getTime()) throw new BadInputError(field, `${field} must be in the future`);
  return value;
}
