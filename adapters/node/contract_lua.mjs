#!/usr/bin/env node
// tk-conform adapter (protocol version 1) that drives the project's own contract Lua
// (contract/scripts/manifest.json + *.lua) through a Redis connection. No npm dependencies:
// a minimal RESP client over `net` is enough for EVALSHA / EVAL.
//
//   node adapters/node/contract_lua.mjs [--scripts DIR]
//
// ARGV is marshalled by the names the manifest lists, never by a hard-coded order. Diagnostics go
// to stderr; stdout carries protocol replies only.

import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const argIndex = process.argv.indexOf('--scripts');
const scriptsDir = argIndex > 0 ? process.argv[argIndex + 1] : path.join(here, '../../contract/scripts');
const redisUrl = process.env.TK_CONFORM_REDIS_URL;

const log = (message) => process.stderr.write(`contract_lua adapter: ${message}\n`);

class AdapterError extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind;
  }
}

// --- the scripts manifest (spec 6) -------------------------------------------------------------

function loadScripts(dir) {
  const manifestPath = path.join(dir, 'manifest.json');
  const manifest = JSON.parse(readFileSync(manifestPath, 'utf8'));
  if (manifest.contractVersion !== '1') {
    throw new Error(`${manifestPath}: contractVersion ${manifest.contractVersion}, expected "1"`);
  }
  const checks = new Map();
  for (const entry of manifest.scripts) {
    if (entry.role !== 'check') continue;
    const file = path.join(dir, entry.file);
    const bytes = readFileSync(file);
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    if (sha256 !== entry.sha256) {
      throw new Error(`${file}: sha256 ${sha256} does not match the manifest's ${entry.sha256}`);
    }
    const source = bytes.toString('utf8');
    checks.set(entry.strategy, {
      name: entry.name,
      argv: entry.argv,
      keys: entry.keys,
      source,
      sha1: createHash('sha1').update(source).digest('hex'),
    });
  }
  return checks;
}

// --- a minimal RESP2 client ---------------------------------------------------------------------

class Redis {
  constructor(url) {
    const u = new URL(url);
    const options = u.protocol === 'unix:' ? { path: u.pathname } : { host: u.hostname, port: Number(u.port || 6379) };
    this.socket = net.connect(options);
    this.socket.setTimeout(4000, () => this.socket.destroy(new Error('Redis did not answer within 4 s')));
    this.buffer = Buffer.alloc(0);
    this.waiting = [];
    this.socket.on('data', (chunk) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      this.drain();
    });
    this.socket.on('error', (err) => this.failAll(err));
    this.socket.on('close', () => this.failAll(new Error('Redis connection closed')));
  }

  failAll(err) {
    // A broken connection is never reused: the next check opens a new one.
    this.dead = true;
    for (const { reject } of this.waiting.splice(0)) reject(err);
  }

  drain() {
    while (this.waiting.length > 0) {
      const parsed = parse(this.buffer, 0);
      if (parsed === undefined) return;
      this.buffer = this.buffer.subarray(parsed.end);
      const { resolve } = this.waiting.shift();
      resolve(parsed.value);
    }
  }

  command(...args) {
    const parts = [`*${args.length}\r\n`];
    for (const arg of args) {
      const bytes = Buffer.from(String(arg), 'utf8');
      parts.push(`$${bytes.length}\r\n`, bytes, '\r\n');
    }
    return new Promise((resolve, reject) => {
      if (this.dead) return reject(new Error('Redis connection is closed'));
      this.waiting.push({ resolve, reject });
      this.socket.write(Buffer.concat(parts.map((p) => (Buffer.isBuffer(p) ? p : Buffer.from(p)))));
    });
  }

  close() {
    this.socket.end();
  }
}

class RedisError extends Error {}

// Parses one RESP2 value at `at`; undefined when the buffer does not hold all of it yet.
function parse(buf, at) {
  const eol = buf.indexOf('\r\n', at);
  if (eol < 0) return undefined;
  const type = String.fromCharCode(buf[at]);
  const head = buf.toString('utf8', at + 1, eol);
  const next = eol + 2;
  switch (type) {
    case '+': return { value: head, end: next };
    case '-': return { value: new RedisError(head), end: next };
    case ':': return { value: Number(head), end: next };
    case '$': {
      const len = Number(head);
      if (len < 0) return { value: null, end: next };
      if (buf.length < next + len + 2) return undefined;
      return { value: buf.toString('utf8', next, next + len), end: next + len + 2 };
    }
    case '*': {
      const len = Number(head);
      if (len < 0) return { value: null, end: next };
      const items = [];
      let end = next;
      for (let i = 0; i < len; i++) {
        const item = parse(buf, end);
        if (item === undefined) return undefined;
        items.push(item.value);
        end = item.end;
      }
      return { value: items, end };
    }
    default:
      throw new Error(`unexpected RESP type byte ${JSON.stringify(type)}`);
  }
}

// --- the adapter ---------------------------------------------------------------------------------

const STRATEGIES = ['gcra', 'tokenBucket', 'fixedWindow', 'slidingWindow', 'slidingWindowLog'];
let scripts = new Map();
let scriptsProblem = null;
try {
  scripts = loadScripts(scriptsDir);
} catch (err) {
  scriptsProblem = err.message;
  log(`cannot load the contract scripts: ${err.message}`);
}
let redis = null;
let namespace = '';

function hello() {
  const reasons = {
    tokenBudget: 'the contract Lua has no tokenBudget script: budgets are served by the service door',
    leaseSpender: 'the lease spender is client-side code, not contract Lua',
  };
  const strategies = [];
  for (const kind of STRATEGIES) {
    if (!redisUrl) reasons[kind] = 'no Redis: TK_CONFORM_REDIS_URL is not set';
    else if (scriptsProblem) reasons[kind] = `no contract scripts: ${scriptsProblem}`;
    else if (!scripts.has(kind)) reasons[kind] = `the manifest in ${scriptsDir} has no ${kind} check script`;
    else strategies.push(kind);
  }
  return {
    protocolVersion: 1,
    adapter: {
      name: 'tk-conform contract Lua (node)',
      version: '1',
      language: `javascript (node ${process.versions.node})`,
      homepage: 'adapters/node/contract_lua.mjs',
    },
    capabilities: { strategies, tokenBudget: false, leaseSpender: false, explicitClock: true, reasons },
  };
}

async function check(req) {
  const { kind, options } = req.strategy;
  const script = scripts.get(kind);
  if (!script || !redisUrl) throw new AdapterError('unsupported', `${kind} is not served here`);
  const values = { ...options, now: req.now, cost: req.cost };
  const argv = script.argv.map((name) => {
    if (!(name in values)) throw new AdapterError('invalid', `${script.name} needs ARGV \`${name}\`, not in the request`);
    return values[name];
  });
  const keys = script.keys.map(() => `${namespace}:${req.key}`);
  if (!redis || redis.dead) redis = new Redis(redisUrl);
  let reply = await redis.command('EVALSHA', script.sha1, keys.length, ...keys, ...argv);
  if (reply instanceof RedisError && reply.message.startsWith('NOSCRIPT')) {
    // Empty script cache (first use, restart, failover): EVAL runs and caches it.
    reply = await redis.command('EVAL', script.source, keys.length, ...keys, ...argv);
  }
  if (reply instanceof RedisError) throw new AdapterError('internal', `${script.name}: ${reply.message}`);
  if (!Array.isArray(reply) || reply.length !== 5) {
    throw new AdapterError('internal', `${script.name} returned ${JSON.stringify(reply)}, not a 5-tuple`);
  }
  const [allowed, limit, remaining, resetAt, retryAfterMs] = reply;
  return { decision: { allowed: allowed === 1, limit, remaining, resetAt, retryAfterMs } };
}

function emit(message) {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  if (!line.trim()) continue;
  const req = JSON.parse(line);
  let body;
  try {
    switch (req.op) {
      case 'hello': body = hello(); break;
      case 'reset': namespace = req.namespace; body = { ok: true }; break;
      case 'check': body = await check(req); break;
      case 'shutdown':
        emit({ id: req.id, ok: true });
        redis?.close();
        process.exit(0);
      default: throw new AdapterError('unsupported', `op ${req.op} is not served by this adapter`);
    }
  } catch (err) {
    if (!(err instanceof AdapterError)) log(`request ${req.id} (${req.op}) failed: ${err.stack}`);
    body = { error: { kind: err.kind ?? 'internal', message: err.message } };
  }
  emit({ id: req.id, ...body });
}
redis?.close();
