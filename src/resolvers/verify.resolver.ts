import { Arg, Authorized, Ctx, Query, Resolver } from 'type-graphql';
import type { GraphQLContext } from '../auth/context';
import { VerifyCode } from '../entities/enums';
import { BadInputError } from '../services/errors';
import type { VerifyOutcome, VerifyRequest } from '../services/key-verification.service';
import { assertNoNul, normalizeIp } from '../services/validation';
import { VerifyKeyInput, VerifyResult } from '../schema/verify.type';

const MAX_BATCH = 100;

export function toVerifyResult(outcome: VerifyOutcome): VerifyResult {
  const { record } = outcome;
  const usable = record !== null && (outcome.code === VerifyCode.VALID || outcome.code === VerifyCode.INSUFFICIENT_PERMISSIONS);
  return {
    valid: outcome.code === VerifyCode.VALID,
    code: outcome.code,
    keyId: record?.id ?? null,
    name: record?.name ?? null,
    ownerId: record?.ownerId ?? null,
    permissions: usable ? outcome.permissions : [],
    roles: usable ? record.roleNames : [],
    expiresAt: record?.expiresAt ?? null,
    remaining: outcome.remaining,
    rateLimit: outcome.rateLimit && {
      limit: outcome.rateLimit.limit,
      remaining: outcome.rateLimit.remaining,
      resetAt: outcome.rateLimit.resetAt,
    },
    metadata: usable ? record.metadata : null,
  };
}

function requestOf(input: VerifyKeyInput, field: string, callerIp: string | null): VerifyRequest {
  let ip: string | null = null;
  if (input.ip !== undefined && input.ip !== null) {
    ip = normalizeIp(input.ip);
    if (!ip) throw new BadInputError(`${field}.ip`, `${field}.ip is not an IPv4 or IPv6 address`);
  }
  if (input.permissions && input.permissions.length > 100) {
    throw new BadInputError(`${field}.permissions`, 'at most 100 permissions');
  }
  const resource = input.resource === undefined || input.resource === null ? null : assertNoNul(`${field}.resource`, input.resource);
  return { ip, permissions: input.permissions ?? undefined, resource, callerIp };
}

/** The services, and the address the verification request came from */
export type VerifyContext = Pick<GraphQLContext, 'services'> & { callerIp: string | null };

/**
 * verifyKey's work, shared with the fast path, which takes the answer synchronously when it is
 * (see verifyNow). Input is validated before anything is verified.
 */
export function verifyOneNow(ctx: VerifyContext, input: VerifyKeyInput): VerifyResult | Promise<VerifyResult> {
  const request = requestOf(input, 'input', ctx.callerIp);
  const outcome = ctx.services.verification.verifyNow(input.key, request);
  return outcome instanceof Promise ? outcome.then(toVerifyResult) : toVerifyResult(outcome);
}

/** verifyKeys' work: every input is validated before the first key is verified. */
export function verifyManyNow(ctx: VerifyContext, inputs: VerifyKeyInput[]): VerifyResult[] | Promise<VerifyResult[]> {
  if (inputs.length > MAX_BATCH) throw new BadInputError('inputs', `at most ${MAX_BATCH} keys per call`);
  const requests = inputs.map((input, i) => requestOf(input, `inputs[${i}]`, ctx.callerIp));
  const lines = inputs.map((input) => ctx.services.verification.lineOf(input.key));
  if (lines.some((line) => line instanceof Promise)) return Promise.all(lines).then((known) => verifyInOrder(ctx, inputs, requests, known));
  return verifyInOrder(ctx, inputs, requests, lines as string[]);
}

/**
 * Keys of one line (a key given more than once, or keys of one line of rotations, which share
 * its quota and rate limit) are verified in input order: each waits for the previous one, so the
 * earlier inputs are the ones that get what is left.
 */
function verifyInOrder(ctx: VerifyContext, inputs: VerifyKeyInput[], requests: VerifyRequest[], lines: string[]): VerifyResult[] | Promise<VerifyResult[]> {
  const inFlight = new Map<string, Promise<unknown>>();
  const outcomes = inputs.map((input, i) => {
    const previous = inFlight.get(lines[i]!);
    const outcome = previous
      ? previous.then(() => ctx.services.verification.verifyNow(input.key, requests[i]))
      : ctx.services.verification.verifyNow(input.key, requests[i]);
    if (outcome instanceof Promise) inFlight.set(lines[i]!, outcome.catch(() => undefined));
    return outcome;
  });
  if (outcomes.some((outcome) => outcome instanceof Promise)) return Promise.all(outcomes).then((settled) => settled.map(toVerifyResult));
  return (outcomes as VerifyOutcome[]).map(toVerifyResult);
}

/** A bad key is a result (valid: false, code), never an error: services branch on `code`. */
@Resolver()
export class VerifyResolver {
  @Authorized('keys:verify')
  @Query(() => VerifyResult, { description: 'Checks a presented key. Needs keys:verify. A bad key is a result (valid: false), not an error.' })
  verifyKey(@Arg('input', () => VerifyKeyInput) input: VerifyKeyInput, @Ctx() ctx: GraphQLContext): Promise<VerifyResult> {
    return Promise.resolve(verifyOneNow({ services: ctx.services, callerIp: ctx.actor.ip }, input));
  }

  @Authorized('keys:verify')
  @Query(() => [VerifyResult], { description: 'Up to 100 keys in one call, results in input order' })
  verifyKeys(@Arg('inputs', () => [VerifyKeyInput]) inputs: VerifyKeyInput[], @Ctx() ctx: GraphQLContext): Promise<VerifyResult[]> {
    return Promise.resolve(verifyManyNow({ services: ctx.services, callerIp: ctx.actor.ip }, inputs));
  }
}
