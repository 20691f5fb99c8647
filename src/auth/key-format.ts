import { createHash, createHmac, hash, randomBytes, timingSafeEqual } from 'node:crypto';
import { crc32 } from 'node:zlib';

/**
 * Key format, after GitHub's tokens: `{prefix}_{43 base62 chars of 256 random bits}{6 base62 chars of CRC32}`.
 * The checksum lets a typo or a truncated paste be rejected without touching the database,
 * and lets secret scanners recognise a real key with almost no false positives.
 */
const ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
const RANDOM_LENGTH = 43; // ceil(256 / log2(62))
const CHECKSUM_LENGTH = 6; // 62^6 > 2^32
const PREFIX_PATTERN = /^[a-z0-9]{2,12}$/;
const KEY_PATTERN = /^([a-z0-9]{2,12})_([0-9A-Za-z]{49})$/;
const MIN_LENGTH = 2 + 1 + RANDOM_LENGTH + CHECKSUM_LENGTH;
const MAX_LENGTH = 12 + 1 + RANDOM_LENGTH + CHECKSUM_LENGTH;
/** Non-secret characters of the random part shown in `start`. */
const START_LENGTH = 4;

function toBase62(value: bigint, width: number): string {
  let out = '';
  let rest = value;
  while (rest > 0n) {
    out = ALPHABET[Number(rest % 62n)] + out;
    rest /= 62n;
  }
  return out.padStart(width, '0');
}

/** Number arithmetic: a CRC32 fits a double exactly, and this runs twice per verification. */
function checksum(body: string): string {
  let rest = crc32(body);
  let out = '';
  for (let i = 0; i < CHECKSUM_LENGTH; i++) {
    out = ALPHABET[rest % 62] + out;
    rest = Math.floor(rest / 62);
  }
  return out;
}

export function isValidPrefix(prefix: string): boolean {
  return PREFIX_PATTERN.test(prefix);
}

export function generateKey(prefix: string): string {
  if (!isValidPrefix(prefix)) throw new RangeError('prefix must be 2-12 lowercase letters or digits');
  const random = toBase62(BigInt('0x' + randomBytes(32).toString('hex')), RANDOM_LENGTH);
  const body = `${prefix}_${random}`;
  return body + checksum(body);
}

export interface ParsedKey {
  prefix: string;
  /** Display form: prefix plus the first characters of the random part, e.g. kl_3Fz9 */
  start: string;
}

/** null when the string is not a key: wrong shape or wrong checksum. Constant work for any input size. */
export function parseKey(candidate: string): ParsedKey | null {
  if (typeof candidate !== 'string' || candidate.length < MIN_LENGTH || candidate.length > MAX_LENGTH) return null;
  const match = KEY_PATTERN.exec(candidate);
  if (!match) return null;
  const prefix = match[1]!;
  const tail = match[2]!;
  const body = candidate.slice(0, candidate.length - CHECKSUM_LENGTH);
  if (checksum(body) !== tail.slice(RANDOM_LENGTH)) return null;
  return { prefix, start: `${prefix}_${tail.slice(0, START_LENGTH)}` };
}

/** Whether a candidate is of a key's length: the check before hashing anything a client sends. */
export function hasKeyLength(candidate: string): boolean {
  return typeof candidate === 'string' && candidate.length >= MIN_LENGTH && candidate.length <= MAX_LENGTH;
}

/** parseKey's verdict without its result: nothing allocated but the checksummed body. Runs on every verification. */
export function isWellFormedKey(candidate: string): boolean {
  if (!hasKeyLength(candidate) || !KEY_PATTERN.test(candidate)) return false;
  return checksum(candidate.slice(0, candidate.length - CHECKSUM_LENGTH)) === candidate.slice(candidate.length - CHECKSUM_LENGTH);
}

/** What is stored: HMAC-SHA256 under the server pepper, so a stolen table alone cannot be brute-forced. */
export function hashKey(pepper: string, key: string): Buffer {
  return Buffer.from(hashKeyLatin1(pepper, key), 'latin1');
}

/** The same hash as a latin1 string (one byte per char): the cache key, with no Buffer in between. */
export function hashKeyLatin1(pepper: string, key: string): string {
  const pads = padsFor(pepper);
  if (!pads) return createHmac('sha256', pepper).update(key).digest('binary');
  // RFC 2104 with one-shot hashes: H(K^opad || H(K^ipad || m)). Two native calls and no HMAC
  // object per verification, whose setup costs more than the hashing itself.
  hash('sha256', pads.inner + key, 'buffer').copy(pads.outer, BLOCK);
  return hash('sha256', pads.outer, 'binary');
}

const BLOCK = 64;
interface Pads {
  /** K^ipad as a string that UTF-8 encodes to exactly those bytes (every byte below 0x80) */
  inner: string;
  /** K^opad, then room for the inner digest */
  outer: Buffer;
}
const padCache = new Map<string, Pads | null>();

function padsFor(pepper: string): Pads | null {
  let pads = padCache.get(pepper);
  if (pads !== undefined) return pads;
  let key = Buffer.from(pepper, 'utf8');
  if (key.length > BLOCK) key = createHash('sha256').update(key).digest();
  const inner = Buffer.alloc(BLOCK);
  const outer = Buffer.alloc(BLOCK + 32);
  for (let i = 0; i < BLOCK; i++) {
    inner[i] = (key[i] ?? 0) ^ 0x36;
    outer[i] = (key[i] ?? 0) ^ 0x5c;
  }
  pads = inner.every((byte) => byte < 0x80) ? { inner: inner.toString('latin1'), outer } : null;
  padCache.set(pepper, pads);
  return pads;
}

export function sameHash(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/** A run of letters, digits and underscores: a key, or a piece of one, is always inside one such word. */
const WORD = /[0-9A-Za-z_]+/g;
/**
 * What marks a word as holding a key or enough of one to matter: an underscore followed by 25
 * characters of the key alphabet. A cut key, or one glued to other text, is caught as a whole key
 * is; a word cut shorter shows at most 24 of the 43 random characters, leaving over 110 bits
 * unknown. Shorter ids of the same shape (Stripe's `pi_` and 24) are left alone.
 */
const KEY_PIECE = /_[0-9A-Za-z]{25}/;

/** Every word holding a key or a piece of one, whatever its checksum, blanked whole: for text that leaves the server. */
export function redactKeys(text: string): string {
  if (!text.includes('_')) return text;
  return text.replace(WORD, (word) => (KEY_PIECE.test(word) ? '[redacted]' : word));
}

/** Input quoted back (in an error or a record) at most `max` characters long, blanked before it is cut. */
export function quoteInput(text: string, max: number): string {
  return redactKeys(text).slice(0, max);
}
