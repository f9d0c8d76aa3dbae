#!/usr/bin/env python3
"""tk-conform adapter (protocol 2) for derp-py 0.2.15's KV client `rate_limit` over Valkey GLIDE
(Python >= 3.12). One limiter kind, `fixed`: a fixed window that starts at the first call
(INCR, then EXPIRE when the count is 1) and ends with the key's Redis TTL, in whole seconds.
It takes no cost; a denied call still increments the counter.

    python derp_kv.py        (TK_CONFORM_REDIS_URL names the Redis, redis://host:port)
"""

import asyncio
import json
import os
import sys
from importlib.metadata import version
from urllib.parse import urlparse


KINDS = [
    {"name": "fixed", "family": "fixedWindow", "clock": "store", "windowStart": "firstCall",
     "parameters": {"limit": {"min": 1, "max": 10000, "integer": True},
                    "windowMs": {"min": 1000, "max": 60000, "multipleOf": 1000}},
     "exposes": ["remaining", "retryAfterMs"], "takesCost": False, "countsDenials": True,
     "description": "KVClient.rate_limit: INCR, then EXPIRE on the first hit (two round trips)"},
]


async def connect():
    # derp imports a large dependency tree; hello is answered before it is loaded.
    from derp.config import ValkeyConfig
    from derp.kv.valkey import ValkeyClient

    url = urlparse(os.environ["TK_CONFORM_REDIS_URL"])
    kv = ValkeyClient(ValkeyConfig(addresses=[(url.hostname, url.port or 6379)]))
    await kv.connect()
    return kv


async def main():
    kv = None
    namespace, limiters = "", {}
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        req = json.loads(line)
        op = req["op"]
        try:
            if op == "hello":
                reply = {"protocolVersion": 2,
                         "adapter": {"name": "derp-py", "version": version("derp-py"), "language": "python",
                                     "homepage": "PyPI package derp-py"},
                         "limiters": KINDS}
            elif op == "reset":
                kv = kv or await connect()
                namespace, limiters, reply = req["namespace"], {}, {"ok": True}
            elif op == "configure":
                limiters[req["limiter"]] = req["params"]
                reply = {"ok": True}
            elif op == "decide":
                p = limiters[req["limiter"]]
                r = await kv.rate_limit(req["key"], limit=int(p["limit"]), window=p["windowMs"] / 1000,
                                        key_prefix=f"{namespace}:{req['limiter']}")
                retry = 0 if r.allowed else int((r.retry_after or 0) * 1000)
                reply = {"decision": {"allowed": r.allowed, "remaining": r.remaining, "retryAfterMs": retry}}
            elif op == "shutdown":
                reply = {"ok": True}
            else:
                reply = {"error": {"kind": "unsupported", "message": f"no op {op}"}}
        except (ConnectionError, OSError) as e:
            reply = {"error": {"kind": "unavailable", "message": str(e)}}
        except Exception as e:
            # GLIDE reports a lost store as its own error types.
            kind = "unavailable" if "Connection" in type(e).__name__ else "internal"
            reply = {"error": {"kind": kind, "message": repr(e)}}
        sys.stdout.write(json.dumps({"id": req["id"], **reply}) + "\n")
        sys.stdout.flush()
        if op == "shutdown":
            break
    if kv is not None:
        await kv.disconnect()


if __name__ == "__main__":
    asyncio.run(main())
