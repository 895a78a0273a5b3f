"""The HTTP API: a FastAPI app over a :class:`~verinet.serve.engine.VerifyEngine`.

The same app is the Ray Serve ingress (``verinet.serve.app``) and, for tests and the
benchmark, runs under plain uvicorn with in-process members.

Routes: ``POST /v1/verify``, ``POST /v1/verify/batch``, ``GET /v1/models``, ``GET /healthz``
(liveness), ``GET /readyz`` (a quorum of members answers health checks), ``GET /metrics``
(Prometheus), ``GET /docs`` and ``/openapi.json``.

Every error is JSON, ``{"error": {"code", "message", "field", "limit"}}``:

* 400 ``invalid_json`` -- the body is not JSON (including bytes that are not UTF-8 and nesting deeper
  than the parser allows);
* 401 ``unauthorized`` -- a token is configured and the request lacks ``Authorization: Bearer <token>``;
* 415 ``unsupported_media_type`` -- a body that says it is not JSON;
* 413 ``body_too_large`` -- more than ``limits.max_body_bytes`` (checked before the body is read
  when Content-Length says so);
* 422 -- wrong fields or types (``validation_error``), too many steps, characters or batch items,
  empty chains or steps, a question not in the named family's format, ...;
* 503 ``overloaded`` (``max_queue`` requests in flight) and ``quorum_miss`` (fewer members answered
  than the quorum), both with ``Retry-After``;
* 504 ``timeout`` -- not answered within ``timeout_s`` (the request's own, capped by the server's).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

import verinet
from verinet.serve.api import (
    BatchRequest, BatchResponse, ErrorBody, ModelsResponse, Status, VerifyRequest, VerifyResponse,
)
from verinet.serve.chains import RequestError
from verinet.orchestration.protocol import QuorumError
from verinet.serve.engine import Overloaded, VerifyEngine

log = logging.getLogger("verinet.serve")

ROUTES = ("/v1/verify", "/v1/verify/batch", "/v1/models", "/healthz", "/readyz", "/metrics", "/docs",
          "/openapi.json")
OPEN_ROUTES = {"/healthz", "/readyz", "/docs", "/openapi.json", "/docs/oauth2-redirect"}
_WHY = {
    400: "the body is not JSON (invalid_json)",
    401: "a token is configured and the request lacks 'Authorization: Bearer <token>' (unauthorized)",
    413: "the body is larger than limits.max_body_bytes (body_too_large)",
    415: "the body says it is not JSON (unsupported_media_type)",
    422: "wrong fields or types (validation_error), or a chain the server cannot verify: too many steps or "
         "characters, a question not in the named family's format, a reserved token, k too large, ...",
    503: "too many requests in flight (overloaded) or too few members answered (quorum_miss); see Retry-After",
    504: "not verified within the timeout (timeout)",
}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, each an ErrorBody with what causes it."""
    return {s: {"model": ErrorBody, "description": _WHY[s]} for s in statuses}


_VERIFY_ERRORS = _errors(400, 401, 413, 415, 422, 503, 504)


def error(status: int, code: str, message: str, *, field: str | None = None, limit: float | None = None,
          headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "field": field, "limit": limit}},
                        status_code=status, headers=headers)


class Guard:
    """ASGI middleware: counts and times every request, checks the token and the body size first."""

    def __init__(self, app: Any, engine: VerifyEngine, token_sha256: str | None) -> None:
        self.app, self.engine, self.token_sha256 = app, engine, token_sha256
        self.max_body = engine.config.limits.max_body_bytes
        self.public_metrics = engine.config.auth.public_metrics

    def _authorized(self, scope: dict) -> bool:
        if self.token_sha256 is None:
            return True
        header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        digest = hashlib.sha256(token.strip().encode("utf-8", "surrogateescape")).hexdigest()
        return scheme.lower() == "bearer" and hmac.compare_digest(digest, self.token_sha256)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        route = path if path in ROUTES else "other"
        status = {"code": 500}
        t0 = time.perf_counter()

        async def send_counted(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            open_route = path in OPEN_ROUTES or (path == "/metrics" and self.public_metrics)
            if not open_route and not self._authorized(scope):
                return await error(401, "unauthorized", "missing or invalid token: send the header "
                                   "'Authorization: Bearer <token>'",
                                   headers={"WWW-Authenticate": "Bearer"})(scope, receive, send_counted)
            if scope.get("method") in ("POST", "PUT", "PATCH"):
                ctype = dict(scope.get("headers") or []).get(b"content-type", b"").decode("latin-1").lower()
                mime = ctype.split(";")[0].strip()
                if mime and mime != "application/json" and not mime.endswith("+json"):
                    not_json = error(415, "unsupported_media_type", "the body must be JSON: send the header "
                                     f"'Content-Type: application/json' (got {mime[:100]!r})")
                    return await not_json(scope, receive, send_counted)
                if not mime:  # a body without a Content-Type is read as JSON
                    headers = [*scope.get("headers", []), (b"content-type", b"application/json")]
                    scope = {**scope, "headers": headers}
                body = await self._read_body(scope, receive)
                if body is None:
                    too_large = error(413, "body_too_large", f"the request body is larger than "
                                      f"{self.max_body} bytes", limit=self.max_body)
                    return await too_large(scope, receive, send_counted)
                receive = _replay(body, receive)
            await self.app(scope, receive, send_counted)
        finally:
            m = self.engine.metrics
            m.requests.labels(route=route, status=str(status["code"])).inc()
            m.request_duration.labels(route=route).observe(time.perf_counter() - t0)

    async def _read_body(self, scope: dict, receive: Any) -> bytes | None:
        """The whole body, or None as soon as it is known to exceed the limit."""
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _replay(body: bytes, receive: Any) -> Any:
    """A ``receive`` that hands the app the body already read, then waits for the disconnect."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def create_app(engine: VerifyEngine, token_sha256: str | None = None, *, health_loop: bool = True) -> FastAPI:
    """The FastAPI app; ``token_sha256`` (SHA-256 hex of the bearer token) turns auth on."""
    cfg = engine.config

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(engine.health_loop()) if health_loop else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    app = FastAPI(
        title="verinet verification API", version=verinet.__version__, lifespan=lifespan,
        description="An ensemble of small language models verifies each step of a reasoning chain. "
                    "Authenticate with 'Authorization: Bearer <token>' when the server has a token.")
    bearer = HTTPBearer(auto_error=False, description="the server's token (checked before the body is read)")
    secured = [Depends(bearer)] if token_sha256 else []

    @app.exception_handler(RequestError)
    async def _request_error(_r: Request, e: RequestError) -> JSONResponse:
        return error(e.status, e.code, e.message, field=e.field, limit=e.limit)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_r: Request, e: RequestValidationError) -> JSONResponse:
        errs = e.errors()
        bad_json = next((x for x in errs if x.get("type") == "json_invalid"), None)
        if bad_json is not None:
            ctx = bad_json.get("ctx") or {}
            why = str(ctx.get("error", ""))
            return error(400, "invalid_json", f"the request body is not valid JSON: {why}".strip())
        parts, first = [], None
        for x in errs:
            loc = ".".join(str(p) for p in x.get("loc", ())[1:]) or "(body)"
            first = first or loc
            msg = str(x.get("msg", "")).removeprefix("Value error, ")
            if x.get("type") == "extra_forbidden":
                msg = "unknown field (check the spelling)"
            parts.append(f"{loc}: {msg}")
        return error(422, "validation_error", "; ".join(parts)[:2000], field=first)

    @app.exception_handler(StarletteHTTPException)
    async def _http(r: Request, e: StarletteHTTPException) -> JSONResponse:
        if e.status_code == 400:
            # FastAPI's answer when json.loads fails other than by a JSONDecodeError: bytes that are not
            # UTF-8, or nesting deeper than the parser's recursion limit. Every 400 here is a body parse.
            return error(400, "invalid_json", "the request body is not valid JSON: not UTF-8 text, or "
                         "nested too deeply")
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        headers = dict(getattr(e, "headers", None) or {})
        if e.status_code == 405:  # every method of the path, not only those of the last route tried
            allowed = {m for rt in app.routes if getattr(rt, "path", None) == r.url.path
                       for m in getattr(rt, "methods", None) or ()}
            headers["Allow"] = ", ".join(sorted(allowed))
        return error(e.status_code, code, str(e.detail), headers=headers or None)

    @app.exception_handler(Exception)
    async def _internal(_r: Request, e: Exception) -> JSONResponse:
        log.exception("internal error")
        return error(500, "internal_error", f"internal error ({type(e).__name__}); see the server log")

    async def run(coro: Any, timeout: float | None) -> Any:
        limit = engine.request_limit(timeout)
        try:
            with engine.admit():
                return await asyncio.wait_for(coro, limit)
        except Overloaded as e:
            coro.close()
            return error(503, "overloaded", f"the server is busy: {e}; retry later",
                         headers={"Retry-After": str(cfg.retry_after_s)})
        except asyncio.TimeoutError:
            return error(504, "timeout", f"not verified within {limit:g}s", limit=limit)
        except QuorumError as e:
            return error(503, "quorum_miss", f"too few members answered: {e.message}",
                         headers={"Retry-After": str(cfg.retry_after_s)})

    @app.post("/v1/verify", response_model=VerifyResponse, responses=_VERIFY_ERRORS, dependencies=secured,
              summary="Verify one chain: per-step posteriors and verdicts, earliest error, agreement, graph")
    async def verify(body: VerifyRequest) -> Any:
        return await run(engine.verify(body), body.timeout_s)

    @app.post("/v1/verify/batch", response_model=BatchResponse, responses=_VERIFY_ERRORS, dependencies=secured,
              summary="Verify several chains with one call per member")
    async def verify_batch(body: BatchRequest) -> Any:
        t0 = time.perf_counter()
        out = await run(engine.verify_batch(body), body.limit_s())
        if isinstance(out, Response):
            return out
        return BatchResponse(results=out, timings_s={"total_s": time.perf_counter() - t0})

    @app.get("/v1/models", response_model=ModelsResponse, dependencies=secured,
             responses=_errors(401), summary="The ensemble's members, their model versions and readiness")
    async def models() -> ModelsResponse:
        from verinet.graph.aggregate import METHODS
        from verinet.graph.topology import TOPOLOGIES

        return ModelsResponse(models=engine.models(), quorum=engine.quorum,
                              topologies=[t for t in TOPOLOGIES if t != "self"], aggregations=list(METHODS))

    @app.get("/healthz", response_model=Status, response_model_exclude_none=True, operation_id="healthz",
             summary="Liveness: the ingress answers")
    @app.head("/healthz", response_model=Status, response_model_exclude_none=True, operation_id="healthz_head",
              summary="Liveness, headers only (for probes that send HEAD)")
    async def healthz() -> Status:
        return Status(status="ok")

    @app.get("/readyz", response_model=Status, responses={503: {"model": Status}},
             summary="Readiness: at least a quorum of members answered the latest health check")
    async def readyz() -> Any:
        n = sum(engine.ready.values())
        body = Status(status="ready" if engine.is_ready else "not_ready", members_ready=n,
                      quorum=engine.quorum)
        return body if engine.is_ready else JSONResponse(body.model_dump(), status_code=503,
                                                         headers={"Retry-After": str(cfg.retry_after_s)})

    metrics_ok = {200: {"description": "the Prometheus text exposition",
                        "content": {"text/plain": {"schema": {"type": "string"}}}}}
    @app.get("/metrics", dependencies=[] if cfg.auth.public_metrics else secured, response_class=Response,
             responses=metrics_ok if cfg.auth.public_metrics else {**metrics_ok, **_errors(401)},
             summary="Prometheus metrics (text exposition format)")
    async def metrics() -> Response:
        return Response(engine.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(Guard, engine=engine, token_sha256=token_sha256)
    app.openapi = lambda: _contract(app, engine)  # type: ignore[method-assign]
    return app


def _contract(app: FastAPI, engine: VerifyEngine) -> dict[str, Any]:
    """The OpenAPI document with this server's own limits and reserved tokens written into the schemas,
    so what it states valid is what this server accepts."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    limits, schemas = engine.config.limits, doc["components"]["schemas"]
    req = schemas["VerifyRequest"]["properties"]
    text_fields = ("question", "chain", "answer")
    reserved = sorted(engine.reserved)
    def literal(t: str) -> str:
        return "".join("\\" + c if c in r"\^$.|?*+()[]{}" else c for c in t)

    no_reserved = {"not": {"pattern": "|".join(literal(t) for t in reserved)}} if reserved else None

    def strings(prop: dict[str, Any]) -> list[dict[str, Any]]:
        return [b for b in prop.get("anyOf", [prop]) if b.get("type") == "string"]

    for name in text_fields:
        for branch in strings(req[name]):
            branch["maxLength"] = limits.max_chars
            if no_reserved:
                branch.setdefault("allOf", []).append(no_reserved)
    for branch in req["steps"]["anyOf"]:
        if branch.get("type") == "array":
            branch["maxItems"] = limits.max_steps
            branch["items"]["maxLength"] = limits.max_chars
            if no_reserved:
                branch["items"]["allOf"].append(no_reserved)
    for branch in req["k"]["anyOf"]:
        if branch.get("type") == "integer":
            branch["maximum"] = engine.max_k
    schemas["BatchRequest"]["properties"]["items"]["maxItems"] = limits.max_batch
    app.openapi_schema = doc
    return doc


__all__ = ["Guard", "create_app", "error"]
