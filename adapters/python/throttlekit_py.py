#!/usr/bin/env python3
"""tk-conform adapter for the `throttlekit-py` package (protocol version 1).

Speaks docs/adapter-protocol.md on stdin/stdout: `check` goes through throttlekit's
`RedisBackend` (its own vendored Lua, with an explicit `now`), `lease.*` through its
`LeaseSpender`. `debit` is answered `unsupported`: throttlekit-py serves token budgets only
through its gRPC `ServiceBackend.debit`, which has no explicit clock and needs a server.

The Redis URL comes from TK_CONFORM_REDIS_URL. Diagnostics go to stderr, never stdout.
"""

from __future__ import annotations

import json
import math
import os
import sys

PROTOCOL_VERSION = 1
HOMEPAGE = "https://github.com/AmeyaBorkar/throttlekit-py"
DEBIT_UNSUPPORTED = (
    "no direct tokenBudget door in the package: token budgets are served only by "
    "ServiceBackend.debit over gRPC, which uses the server's clock"
)
STRATEGIES = ["gcra", "tokenBucket", "fixedWindow", "slidingWindow", "slidingWindowLog"]


class AdapterError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def log(message: str) -> None:
    print(f"throttlekit_py adapter: {message}", file=sys.stderr, flush=True)


def number(value):
    """JSON numbers arrive as int or float; the scripts want integers where they are integral."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class Adapter:
    def __init__(self) -> None:
        import throttlekit

        self.throttlekit = throttlekit
        self.redis_url = os.environ.get("TK_CONFORM_REDIS_URL")
        self.client = None
        self.namespace = ""
        self.backends = {}
        self.spender = None

    def redis(self):
        if self.client is None:
            import redis

            self.client = redis.Redis.from_url(
                self.redis_url, socket_timeout=4, socket_connect_timeout=4
            )
        return self.client

    def hello(self, _request):
        if not self.redis_url:
            log("TK_CONFORM_REDIS_URL is not set: declaring no strategies")
        return {
            "protocolVersion": PROTOCOL_VERSION,
            "adapter": {
                "name": "throttlekit-py",
                "version": self.throttlekit.__version__,
                "language": "python",
                "homepage": HOMEPAGE,
            },
            "capabilities": {
                "strategies": STRATEGIES if self.redis_url else [],
                "tokenBudget": False,
                "leaseSpender": True,
                "explicitClock": True,
                "reasons": self.reasons(),
            },
        }

    def reasons(self) -> dict:
        reasons = {"tokenBudget": DEBIT_UNSUPPORTED}
        if not self.redis_url:
            for kind in STRATEGIES:
                reasons[kind] = "no Redis: TK_CONFORM_REDIS_URL is not set"
        return reasons

    def reset(self, request):
        self.namespace = request["namespace"]
        self.backends = {}
        self.spender = None
        return {"ok": True}

    def check(self, request):
        if not self.redis_url:
            raise AdapterError("unsupported", "no Redis: TK_CONFORM_REDIS_URL is not set")
        strategy = request["strategy"]
        options = {name: number(v) for name, v in strategy["options"].items()}
        cache_key = (strategy["kind"], tuple(sorted(options.items())))
        backend = self.backends.get(cache_key)
        if backend is None:
            from throttlekit import RedisBackend, from_spec

            try:
                spec = from_spec(strategy["kind"], options)
            except (KeyError, ValueError) as err:
                raise AdapterError("invalid", f"bad strategy {strategy!r}: {err}") from err
            backend = RedisBackend(self.redis(), spec, prefix=self.namespace)
            self.backends[cache_key] = backend
        d = backend.check(request["key"], number(request["cost"]), now=number(request["now"]))
        return {"decision": decision(d)}

    def debit(self, _request):
        raise AdapterError("unsupported", DEBIT_UNSUPPORTED)

    def lease_spender(self, lease):
        if self.spender is None:
            self.spender = self.throttlekit.LeaseSpender(
                limit=number(lease["limit"]),
                ttl_ms=number(lease["ttlMs"]),
                window_coupled=lease["windowCoupled"],
            )
        return self.spender

    def lease_grant(self, request):
        grant = self.throttlekit.LeaseGrant(
            capacity=number(request["capacity"]), expires_at=number(request["expiresAt"])
        )
        self.lease_spender(request["lease"]).apply_lease(grant)
        return {"ok": True}

    def lease_spend(self, request):
        spender = self.lease_spender(request["lease"])
        cost = number(request["cost"])
        if not (isinstance(cost, (int, float)) and math.isfinite(cost)):
            raise AdapterError("invalid", f"cost must be a finite number, got {cost!r}")
        try:
            d = spender.spend(number(request["now"]), cost)
        except ValueError as err:
            raise AdapterError("invalid", str(err)) from err
        if d is None:
            return {"needsRefresh": True}
        return {"decision": decision(d)}


def decision(d) -> dict:
    return {
        "allowed": bool(d.allowed),
        "limit": int(d.limit),
        "remaining": int(d.remaining),
        "resetAt": int(d.reset_at),
        "retryAfterMs": int(d.retry_after_ms),
    }


def main() -> int:
    adapter = Adapter()
    handlers = {
        "hello": adapter.hello,
        "reset": adapter.reset,
        "check": adapter.check,
        "debit": adapter.debit,
        "lease.grant": adapter.lease_grant,
        "lease.spend": adapter.lease_spend,
    }
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        rid = request["id"]
        op = request.get("op")
        if op == "shutdown":
            reply({"id": rid, "ok": True})
            return 0
        handler = handlers.get(op)
        try:
            if handler is None:
                raise AdapterError("unsupported", f"unknown op {op!r}")
            body = handler(request)
        except AdapterError as err:
            body = {"error": {"kind": err.kind, "message": str(err)}}
        except Exception as err:  # the engine failed: report it, keep serving
            log(f"request {rid} ({op}) failed: {type(err).__name__}: {err}")
            body = {"error": {"kind": "internal", "message": f"{type(err).__name__}: {err}"}}
        reply({"id": rid, **body})
    return 0


def reply(message: dict) -> None:
    sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
