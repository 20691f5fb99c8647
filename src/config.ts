import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { resolve } from 'node:path';
import { isWellFormedKey, isValidPrefix } from './auth/key-format';
import { DEFAULT_ALERT_SETTINGS, type AlertSettings } from './services/alert-detectors';
import { DEFAULT_MAX_ALERT_SUBSCRIPTIONS, DEFAULT_MAX_AUDIT_TAILS } from './services/alerting';

export interface Config {
  port: number;
  host: string;
  /** null: start an embedded PostgreSQL under dataDir */
  databaseUrl: string | null;
  dataDir: string;
  /** Connections each instance may open (size it with max_connections / instances in mind) */
  databasePoolSize: number;
  keyPepper: string;
  /** Where the pepper came from, as messages name it: KEY_PEPPER, or the file embedded mode keeps it in */
  keyPepperSource?: string;
  keyPrefix: string;
  bootstrapAdminKey: string | null;
  redisUrl: string | null;
  /** Key records cached in process for verification; 0 turns the cache off */
  keyCacheSize: number;
  /** Live audit tails one instance serves at once; 0 turns them off */
  maxAuditTails: number;
  /** Alert subscriptions one instance serves at once; 0 turns them off */
  maxAlertSubscriptions: number;
  trustProxy: boolean;
  logLevel: string;
  /** Detector thresholds and windows (ALERT_* variables) */
  alerts: AlertSettings;
  /** Splunk HTTP Event Collector the audit log is forwarded to; both set or neither */
  splunkHec: { url: string; token: string; pollIntervalMs: number } | null;
}

/** Bad configuration: the message names the variable, the process prints it and exits non-zero. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
const MIN_PEPPER_LENGTH = 32;

type Env = Record<string, string | undefined>;

function nonEmpty(env: Env, name: string): string | undefined {
  const value = env[name];
  return value === undefined || value.trim() === '' ? undefined : value.trim();
}

function parsePort(raw: string | undefined): number {
  if (raw === undefined) return 4000;
  if (!/^\d+$/.test(raw) || Number(raw) > 65535) {
    throw new ConfigError(`PORT must be an integer from 0 to 65535, got "${raw}"`);
  }
  return Number(raw);
}

function parseCount(name: string, raw: string | undefined, fallback: number, max: number): number {
  if (raw === undefined) return fallback;
  if (!/^\d+$/.test(raw) || Number(raw) > max) {
    throw new ConfigError(`${name} must be an integer from 0 to ${max}, got "${raw}"`);
  }
  return Number(raw);
}

/** `<count>/<seconds>`, or a bare count within the default window. */
function parseBurst(name: string, raw: string | undefined, fallback: { threshold: number; windowSeconds: number }) {
  if (raw === undefined) return fallback;
  const match = /^(\d{1,9})(?:\/(\d{1,7}))?$/.exec(raw);
  const windowSeconds = match?.[2] === undefined ? fallback.windowSeconds : Number(match[2]);
  if (!match || Number(match[1]) === 0 || windowSeconds === 0) {
    throw new ConfigError(`${name} must be <count>/<seconds> (or a count within ${fallback.windowSeconds} s) with both above 0, e.g. 20/60, got "${raw}"`);
  }
  return { threshold: Number(match[1]), windowSeconds };
}

function parsePositive(name: string, raw: string | undefined, fallback: number, options: { integer?: boolean; max?: number } = {}): number {
  if (raw === undefined) return fallback;
  const value = Number(raw);
  const max = options.max ?? 1e9;
  if (!Number.isFinite(value) || value <= 0 || value > max || (options.integer !== false && !Number.isInteger(value))) {
    throw new ConfigError(`${name} must be a ${options.integer === false ? 'number' : 'whole number'} above 0 and at most ${max}, got "${raw}"`);
  }
  return value;
}

/** A burst also known by the contract's name for it (RUNTIME.md names VERIFY_FAILURE_BURST): the two may not disagree. */
function aliasedBurst(env: Env, name: string, alias: string, fallback: { threshold: number; windowSeconds: number }) {
  const value = nonEmpty(env, name);
  const aliasValue = nonEmpty(env, alias);
  const burst = parseBurst(name, value, fallback);
  const aliasBurst = parseBurst(alias, aliasValue, fallback);
  if (value !== undefined && aliasValue !== undefined && (burst.threshold !== aliasBurst.threshold || burst.windowSeconds !== aliasBurst.windowSeconds)) {
    throw new ConfigError(`${name} and ${alias} are the same setting and disagree ("${value}", "${aliasValue}")`);
  }
  return value !== undefined ? burst : aliasBurst;
}

/** Every detector default can be changed; the README lists them. */
function parseAlertSettings(env: Env): AlertSettings {
  const d = DEFAULT_ALERT_SETTINGS;
  const get = (name: string) => nonEmpty(env, name);
  return {
    failureBurst: aliasedBurst(env, 'ALERT_FAILURE_BURST', 'VERIFY_FAILURE_BURST', d.failureBurst),
    deniedBurst: parseBurst('ALERT_DENIED_BURST', get('ALERT_DENIED_BURST'), d.deniedBurst),
    dedupSeconds: parsePositive('ALERT_DEDUP_SECONDS', get('ALERT_DEDUP_SECONDS'), d.dedupSeconds),
    spike: {
      ...d.spike,
      bucketSeconds: parsePositive('ALERT_SPIKE_BUCKET_SECONDS', get('ALERT_SPIKE_BUCKET_SECONDS'), d.spike.bucketSeconds, { max: 3600 }),
      historyBuckets: parsePositive('ALERT_SPIKE_HISTORY_BUCKETS', get('ALERT_SPIKE_HISTORY_BUCKETS'), d.spike.historyBuckets),
      floor: parsePositive('ALERT_SPIKE_FLOOR', get('ALERT_SPIKE_FLOOR'), d.spike.floor),
      factor: parsePositive('ALERT_SPIKE_FACTOR', get('ALERT_SPIKE_FACTOR'), d.spike.factor, { integer: false, max: 1000 }),
      minCalls: parsePositive('ALERT_SPIKE_MIN_CALLS', get('ALERT_SPIKE_MIN_CALLS'), d.spike.minCalls),
    },
    newIpLearningSeconds: get('ALERT_NEW_IP_LEARNING_SECONDS') === '0' ? 0 : parsePositive('ALERT_NEW_IP_LEARNING_SECONDS', get('ALERT_NEW_IP_LEARNING_SECONDS'), d.newIpLearningSeconds),
    quotaLow: {
      fraction: parsePositive('ALERT_QUOTA_LOW_FRACTION', get('ALERT_QUOTA_LOW_FRACTION'), d.quotaLow.fraction, { integer: false, max: 1 }),
      remaining: parsePositive('ALERT_QUOTA_LOW_REMAINING', get('ALERT_QUOTA_LOW_REMAINING'), d.quotaLow.remaining),
    },
    expiring: {
      days: parsePositive('ALERT_KEY_EXPIRING_DAYS', get('ALERT_KEY_EXPIRING_DAYS'), d.expiring.days, { max: 365 }),
      scanSeconds: parsePositive('ALERT_EXPIRY_SCAN_SECONDS', get('ALERT_EXPIRY_SCAN_SECONDS'), d.expiring.scanSeconds, { max: 86_400 }),
    },
  };
}

function parseBoolean(name: string, raw: string | undefined): boolean {
  if (raw === undefined) return false;
  const value = raw.toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(value)) return true;
  if (['0', 'false', 'no', 'off'].includes(value)) return false;
  throw new ConfigError(`${name} must be true or false, got "${raw}"`);
}

function parseDatabaseUrl(raw: string | undefined): string | null {
  if (raw === undefined) return null;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError('DATABASE_URL is not a valid URL (expected postgres://user@host:port/database)');
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') {
    throw new ConfigError(`DATABASE_URL must use postgres:// or postgresql://, got "${url.protocol}"`);
  }
  // The driver decodes these parts: a stray % (in a password, say) would fail later without a name.
  try {
    for (const part of [url.username, url.password, url.hostname, url.pathname, url.search]) decodeURIComponent(part);
  } catch {
    throw new ConfigError('DATABASE_URL has a % not followed by two hex digits: write a % in a user name or password as %25');
  }
  return raw;
}

function parseRedisUrl(raw: string | undefined): string | null {
  if (raw === undefined) return null;
  try {
    const url = new URL(raw);
    if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') throw new Error('protocol');
  } catch {
    throw new ConfigError('REDIS_URL must be a redis:// or rediss:// URL');
  }
  return raw;
}

function parseSplunkHec(rawUrl: string | undefined, token: string | undefined, rawPoll: string | undefined): Config['splunkHec'] {
  // Checked even when forwarding is off: a bad value is a configuration mistake either way.
  const pollIntervalMs = parsePositive('AUDIT_SPLUNK_HEC_POLL_MS', rawPoll, 1000, { max: 3_600_000 });
  if (rawUrl === undefined && token === undefined) return null;
  if (rawUrl === undefined) throw new ConfigError('AUDIT_SPLUNK_HEC_URL is required when AUDIT_SPLUNK_HEC_TOKEN is set');
  // Never echo the token: it is a secret.
  if (token === undefined) throw new ConfigError('AUDIT_SPLUNK_HEC_TOKEN is required when AUDIT_SPLUNK_HEC_URL is set');
  try {
    const url = new URL(rawUrl);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error('protocol');
  } catch {
    throw new ConfigError('AUDIT_SPLUNK_HEC_URL must be an http:// or https:// URL of the HEC event endpoint');
  }
  // Seals wake delivery at once; the poll only covers a missed wake-up.
  return { url: rawUrl, token, pollIntervalMs };
}

function checkPepper(name: string, pepper: string): string {
  if (pepper.length < MIN_PEPPER_LENGTH) {
    throw new ConfigError(`${name} must be at least ${MIN_PEPPER_LENGTH} characters of secret randomness`);
  }
  return pepper;
}

function embeddedPepperFile(dataDir: string): string {
  return `KEY_PEPPER file ${resolve(dataDir, 'key-pepper')}`;
}

/** In embedded mode the pepper is generated once and kept beside the data, readable only by its owner. */
function embeddedPepper(dataDir: string): string {
  const file = resolve(dataDir, 'key-pepper');
  if (existsSync(file)) return checkPepper(embeddedPepperFile(dataDir), readFileSync(file, 'utf8').trim());
  mkdirSync(dataDir, { recursive: true, mode: 0o711 });
  const pepper = randomBytes(32).toString('base64url');
  writeFileSync(file, pepper + '\n', { mode: 0o600, flag: 'wx' });
  chmodSync(file, 0o600);
  return pepper;
}

export function loadConfig(env: Env = process.env): Config {
  const port = parsePort(nonEmpty(env, 'PORT'));
  const host = nonEmpty(env, 'HOST') ?? '127.0.0.1';
  if (host !== 'localhost' && isIP(host) === 0) {
    throw new ConfigError(`HOST must be an IP address or localhost, got "${host}"`);
  }
  const databaseUrl = parseDatabaseUrl(nonEmpty(env, 'DATABASE_URL'));
  const dataDir = resolve(nonEmpty(env, 'DATA_DIR') ?? './.data');
  const databasePoolSize = parsePositive('DATABASE_POOL_SIZE', nonEmpty(env, 'DATABASE_POOL_SIZE'), 20, { max: 1000 });

  const keyPrefix = nonEmpty(env, 'KEY_PREFIX') ?? 'kl';
  if (!isValidPrefix(keyPrefix)) {
    throw new ConfigError(`KEY_PREFIX must be 2-12 lowercase letters or digits, got "${keyPrefix}"`);
  }

  const bootstrapAdminKey = nonEmpty(env, 'BOOTSTRAP_ADMIN_KEY') ?? null;
  if (bootstrapAdminKey !== null && !isWellFormedKey(bootstrapAdminKey)) {
    // Never echo the value: it is meant to be a secret.
    throw new ConfigError('BOOTSTRAP_ADMIN_KEY is not a well-formed key (generate one with: npx keyledger keygen)');
  }

  const logLevel = (nonEmpty(env, 'LOG_LEVEL') ?? 'info').toLowerCase();
  if (!LOG_LEVELS.includes(logLevel)) {
    throw new ConfigError(`LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}, got "${logLevel}"`);
  }

  const rawPepper = nonEmpty(env, 'KEY_PEPPER');
  let keyPepper: string;
  if (rawPepper !== undefined) keyPepper = checkPepper('KEY_PEPPER', rawPepper);
  else if (databaseUrl !== null) throw new ConfigError('KEY_PEPPER is required when DATABASE_URL is set');
  else keyPepper = embeddedPepper(dataDir);

  return {
    port,
    host,
    databaseUrl,
    dataDir,
    databasePoolSize,
    keyPepper,
    keyPepperSource: rawPepper !== undefined ? 'KEY_PEPPER' : embeddedPepperFile(dataDir),
    keyPrefix,
    bootstrapAdminKey,
    redisUrl: parseRedisUrl(nonEmpty(env, 'REDIS_URL')),
    keyCacheSize: parseCount('KEY_CACHE_SIZE', nonEmpty(env, 'KEY_CACHE_SIZE'), 100_000, 10_000_000),
    maxAuditTails: parseCount('MAX_AUDIT_TAILS', nonEmpty(env, 'MAX_AUDIT_TAILS'), DEFAULT_MAX_AUDIT_TAILS, 100_000),
    maxAlertSubscriptions: parseCount('MAX_ALERT_SUBSCRIPTIONS', nonEmpty(env, 'MAX_ALERT_SUBSCRIPTIONS'), DEFAULT_MAX_ALERT_SUBSCRIPTIONS, 1_000_000),
    trustProxy: parseBoolean('TRUST_PROXY', nonEmpty(env, 'TRUST_PROXY')),
    logLevel,
    alerts: parseAlertSettings(env),
    splunkHec: parseSplunkHec(
      nonEmpty(env, 'AUDIT_SPLUNK_HEC_URL'),
      nonEmpty(env, 'AUDIT_SPLUNK_HEC_TOKEN'),
      nonEmpty(env, 'AUDIT_SPLUNK_HEC_POLL_MS'),
    ),
  };
}
