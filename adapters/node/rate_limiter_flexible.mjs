#!/usr/bin/env node
// tk-conform adapter (protocol 2) for rate-limiter-flexible 11.4.0 over ioredis: two limiter
// kinds, `atomic` (RateLimiterRedis: one Lua script, SET NX EX + INCRBY) and `nonAtomic`
// (RateLimiterRedisNonAtomic: GET+PTTL, then SET+PEXPIRE, in two MULTI round trips). Both are
// fixed windows that start at the first call and end with the key's Redis TTL; durations are
// whole seconds. `consume` resolves on admit and rejects with the same result on denial, or with
// an Error when Redis fails (reported as `unavailable`).
//
//   node rate_limiter_flexible.mjs      (TK_CONFORM_REDIS_URL names the Redis)
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';

const require = createRequire(import.meta.url);
const Redis = require('ioredis');
const { RateLimiterRedis, RateLimiterRedisNonAtomic, RateLimiterRes } = require('rate-limiter-flexible');
const version = require('rate-limiter-flexible/package.json').version;

const kind = (name, description) => ({
  name, family: 'fixedWindow', clock: 'store', windowStart: 'firstCall',
  parameters: { limit: { min: 1, max: 10000, integer: true }, windowMs: { min: 1000, max: 60000, multipleOf: 1000 } },
  exposes: ['remaining', 'retryAfterMs'], takesCost: true, countsDenials: true, description,
});
const KINDS = [
  kind('atomic', 'RateLimiterRedis: SET NX EX, INCRBY, PTTL in one Lua script; denied points are counted'),
  kind('nonAtomic', 'RateLimiterRedisNonAtomic: GET+PTTL, then SET+PEXPIRE, two MULTI round trips'),
];
const CLASSES = { atomic: RateLimiterRedis, nonAtomic: RateLimiterRedisNonAtomic };

// Fail fast instead of queueing commands while Redis is away, so a store failure is an error.
const redis = new Redis(process.env.TK_CONFORM_REDIS_URL, {
  enableOfflineQueue: false, maxRetriesPerRequest: 1, lazyConnect: false,
});
// Without the offline queue a command sent before the connection is up fails: serve only once
// it is (a store that never comes up leaves hello unanswered, which the harness reports).
if (redis.status !== 'ready') await new Promise((resolve) => redis.once('ready', resolve));
let namespace = '';
let limiters = new Map();

const decision = (res, allowed) => ({
  allowed, remaining: Math.max(0, res.remainingPoints), retryAfterMs: allowed ? 0 : Math.max(0, Math.ceil(res.msBeforeNext)),
});

async function handle(req) {
  switch (req.op) {
    case 'hello':
      return { protocolVersion: 2, adapter: { name: 'rate-limiter-flexible', version, language: 'javascript', homepage: 'https://github.com/animir/node-rate-limiter-flexible' }, limiters: KINDS };
    case 'reset':
      namespace = req.namespace;
      limiters = new Map();
      return { ok: true };
    case 'configure': {
      const Class = CLASSES[req.kind];
      limiters.set(req.limiter, new Class({
        storeClient: redis, keyPrefix: namespace, points: req.params.limit, duration: req.params.windowMs / 1000,
      }));
      return { ok: true };
    }
    case 'decide':
      try {
        return { decision: decision(await limiters.get(req.limiter).consume(req.key, req.cost), true) };
      } catch (e) {
        if (e instanceof RateLimiterRes) return { decision: decision(e, false) };
        return { error: { kind: 'unavailable', message: String(e && e.message || e) } };
      }
    case 'shutdown':
      return { ok: true };
    default:
      return { error: { kind: 'unsupported', message: `no op ${req.op}` } };
  }
}

// One request at a time, in order.
const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  const req = JSON.parse(line);
  const reply = await handle(req).catch((e) => ({ error: { kind: 'internal', message: String(e) } }));
  process.stdout.write(JSON.stringify({ id: req.id, ...reply }) + '\n');
  if (req.op === 'shutdown') break;
}
redis.disconnect();
// The readline interface keeps stdin referenced after the loop: exit now, not when the
// harness gives up waiting and kills the process.
process.exit(0);
