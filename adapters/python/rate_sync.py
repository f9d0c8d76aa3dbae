#!/usr/bin/env python3
"""tk-conform adapter (protocol 2) for rate-sync 0.4.2's Redis engine (Python >= 3.12).

Two limiter kinds, both on the adapter process's clock (`time.time()`):
  `window`  sliding window (`limit` + `window_seconds`): a sorted set of stamps, one Lua script;
  `rate`    rate-per-second mode (`rate_per_second`): at most one call per 1/rate seconds,
            i.e. GCRA with a burst of 1.
rate-sync limits one *group* per limiter object; each harness key becomes a group, and every key
carries the suite's namespace as rate-sync's `key_prefix`. `try_acquire(timeout=0)` answers
with a boolean only. The engine is fail-closed here, so a Redis failure is an error, reported
as `unavailable`.

    python rate_sync.py        (TK_CONFORM_REDIS_URL names the Redis)
"""

import asyncio
import json
import os
import sys
from importlib.metadata import version

from ratesync.engines.redis import RedisRateLimiter
from ratesync.exceptions import RateLimiterAcquisitionError

KINDS = [
    {"name": "window", "family": "slidingWindowLog", "clock": "client",
     "parameters": {"limit": {"min": 1, "max": 10000, "integer": True},
                    "windowMs": {"min": 1000, "max": 60000, "multipleOf": 1000}},
     "exposes": [], "takesCost": False, "countsDenials": False,
     "description": "sliding window: ZREMRANGEBYSCORE, ZCARD, ZADD in one Lua script"},
    {"name": "rate", "family": "gcra", "clock": "client",
     "parameters": {"limit": {"min": 1, "max": 1000}, "periodMs": {"min": 1000, "max": 1000},
                    "burst": {"min": 1, "max": 1}},
     "exposes": [], "takesCost": False, "countsDenials": False,
     "description": "rate_per_second = limit: one call per 1/limit s, SET of the last stamp"},
]


class Adapter:
    def __init__(self):
        self.url = os.environ["TK_CONFORM_REDIS_URL"]
        self.namespace = ""
        self.configs = {}
        self.groups = {}

    async def close_all(self):
        for limiter in self.groups.values():
            await limiter.disconnect()
        self.groups = {}

    async def group(self, limiter_id, key):
        if (limiter_id, key) not in self.groups:
            kind, p = self.configs[limiter_id]
            if kind == "window":
                args = {"limit": int(p["limit"]), "window_seconds": int(p["windowMs"]) // 1000}
            else:
                args = {"rate_per_second": float(p["limit"])}
            limiter = RedisRateLimiter(self.url, group_id=key, key_prefix=f"{self.namespace}:{limiter_id}",
                                       fail_closed=True, **args)
            await limiter.initialize()
            self.groups[(limiter_id, key)] = limiter
        return self.groups[(limiter_id, key)]

    async def handle(self, req):
        op = req["op"]
        if op == "hello":
            return {"protocolVersion": 2,
                    "adapter": {"name": "rate-sync", "version": version("rate-sync"), "language": "python",
                                "homepage": "PyPI package rate-sync"},
                    "limiters": KINDS}
        if op == "reset":
            await self.close_all()
            self.namespace = req["namespace"]
            self.configs = {}
            return {"ok": True}
        if op == "configure":
            self.configs[req["limiter"]] = (req["kind"], req["params"])
            return {"ok": True}
        if op == "decide":
            limiter = await self.group(req["limiter"], req["key"])
            return {"decision": {"allowed": await limiter.try_acquire(timeout=0)}}
        if op == "shutdown":
            await self.close_all()
            return {"ok": True}
        return {"error": {"kind": "unsupported", "message": f"no op {op}"}}


async def main():
    adapter = Adapter()
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        req = json.loads(line)
        try:
            reply = await adapter.handle(req)
        except (RateLimiterAcquisitionError, ConnectionError, OSError) as e:
            reply = {"error": {"kind": "unavailable", "message": str(e)}}
        except Exception as e:
            reply = {"error": {"kind": "internal", "message": repr(e)}}
        sys.stdout.write(json.dumps({"id": req["id"], **reply}) + "\n")
        sys.stdout.flush()
        if req["op"] == "shutdown":
            break


if __name__ == "__main__":
    asyncio.run(main())
