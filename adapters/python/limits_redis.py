#!/usr/bin/env python3
"""tk-conform adapter (protocol 2) for the `limits` library's Redis storage (limits 5.8.0).

Three limiter kinds: `fixed` (FixedWindowRateLimiter: INCRBY, expiry from the first hit, a
Redis TTL clock), `moving` (MovingWindowRateLimiter: a list of client `time.time()` stamps)
and `sliding` (SlidingWindowCounterRateLimiter: two counters weighted by their Redis PTTL).
Windows are whole seconds (limits' granularity). remaining and resetAt come from
`get_window_stats`, the library's own answer to "how much is left, and when does it reset".

    python limits_redis.py        (TK_CONFORM_REDIS_URL names the Redis)
"""

import json
import math
import os
import sys

import limits
from limits import RateLimitItemPerSecond
from limits.storage import RedisStorage
from limits.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    SlidingWindowCounterRateLimiter,
)

SECONDS = {"min": 1000, "max": 60000, "multipleOf": 1000}
LIMIT = {"min": 1, "max": 10000, "integer": True}
KINDS = [
    {"name": "fixed", "family": "fixedWindow", "clock": "store", "windowStart": "firstCall",
     "parameters": {"limit": LIMIT, "windowMs": SECONDS},
     "exposes": ["remaining", "resetAt"], "takesCost": True, "countsDenials": True,
     "description": "FixedWindowRateLimiter: INCRBY then EXPIRE on the first hit, in one Lua script"},
    {"name": "moving", "family": "slidingWindowLog", "clock": "client",
     "parameters": {"limit": LIMIT, "windowMs": SECONDS},
     "exposes": ["remaining", "resetAt"], "takesCost": True, "countsDenials": False,
     "description": "MovingWindowRateLimiter: LPUSH of time.time() stamps, LTRIM to the limit"},
    {"name": "sliding", "family": "slidingWindowCounter", "clock": "store", "windowStart": "firstCall",
     "tolerance": 1.0,
     "parameters": {"limit": LIMIT, "windowMs": SECONDS},
     "exposes": ["remaining"], "takesCost": True, "countsDenials": False,
     "description": "SlidingWindowCounterRateLimiter: previous count weighted by its PTTL"},
]
STRATEGIES = {
    "fixed": FixedWindowRateLimiter,
    "moving": MovingWindowRateLimiter,
    "sliding": SlidingWindowCounterRateLimiter,
}


class Adapter:
    def __init__(self):
        self.url = os.environ["TK_CONFORM_REDIS_URL"]
        self.storage = None
        self.limiters = {}

    def handle(self, req):
        op = req["op"]
        if op == "hello":
            return {"protocolVersion": 2,
                    "adapter": {"name": "limits", "version": limits.__version__, "language": "python",
                                "homepage": "https://github.com/alisaifee/limits"},
                    "limiters": KINDS}
        if op == "reset":
            # Every key limits writes starts with the key prefix: the namespace.
            self.storage = RedisStorage(self.url, key_prefix=req["namespace"])
            self.limiters = {}
            return {"ok": True}
        if op == "configure":
            p = req["params"]
            item = RateLimitItemPerSecond(int(p["limit"]), int(p["windowMs"]) // 1000)
            self.limiters[req["limiter"]] = (req["kind"], STRATEGIES[req["kind"]](self.storage), item)
            return {"ok": True}
        if op == "decide":
            kind, strategy, item = self.limiters[req["limiter"]]
            allowed = strategy.hit(item, req["key"], cost=int(req["cost"]))
            stats = strategy.get_window_stats(item, req["key"])
            decision = {"allowed": allowed, "remaining": max(0, int(stats.remaining))}
            if kind != "sliding":
                decision["resetAt"] = math.ceil(stats.reset_time * 1000)
            return {"decision": decision}
        if op == "shutdown":
            return {"ok": True}
        return {"error": {"kind": "unsupported", "message": f"no op {op}"}}


def native_bench(kind, calls):
    """The same decisions in-process, for `tk-conform bench exec`: prints decisions per second."""
    import time

    adapter = Adapter()
    # A namespace of its own per run, so every run starts from an empty limiter.
    adapter.handle({"op": "reset", "namespace": f"tk-conform-native-bench:{os.getpid()}:{time.time_ns()}"})
    adapter.handle({"op": "configure", "limiter": "B", "kind": kind,
                    "params": {"limit": LIMIT["max"], "windowMs": SECONDS["max"]}})
    started = time.perf_counter()
    for _ in range(calls):
        adapter.handle({"op": "decide", "limiter": "B", "key": "bench", "cost": 1})
    print(calls / (time.perf_counter() - started))


def main():
    if sys.argv[1:2] == ["--native-bench"]:
        return native_bench(sys.argv[2], int(sys.argv[3]))
    adapter = Adapter()
    import redis

    for line in sys.stdin:
        req = json.loads(line)
        try:
            reply = adapter.handle(req)
        except (redis.exceptions.ConnectionError, limits.errors.StorageError) as e:
            reply = {"error": {"kind": "unavailable", "message": str(e)}}
        except Exception as e:
            reply = {"error": {"kind": "internal", "message": repr(e)}}
        sys.stdout.write(json.dumps({"id": req["id"], **reply}) + "\n")
        sys.stdout.flush()
        if req["op"] == "shutdown":
            break


if __name__ == "__main__":
    main()
