"""Route tables: every HTTP route declared once, with its roles and its API doc.

A package lists its routes in one :class:`RouteTable`. Each entry (:class:`Op`) is a
method, a path, a handler and an :class:`OpDoc`: the summary, tag and **roles**, plus what
the OpenAPI operation needs (body schema, response, errors, query parameters). From that
one declaration:

* :meth:`RouteTable.install` adds the routes to the aiohttp router and records each
  route's roles keyed by the aiohttp **route object** it created (not by its path string,
  so a typo cannot silently change who may call it);
* :meth:`RouteTable.openapi_paths` gives the package's part of ``/api/openapi.json``
  (``control.openapi.build_spec`` merges every installed table, with the table's
  ``schemas`` into ``components.schemas``);
* the auth middleware (:mod:`control.auth`) asks :func:`roles_of` for the matched route's
  roles. A route under ``/api/`` that no table declares is refused (``403
  undeclared_route``), never silently given a default.

Roles: ``operator``, ``anchor``, ``moderator``; ``public`` (no token needed) and ``any``
(any signed-in user). Operators pass every check.

**Ownership** is a property of the resource, declared per route: every route that an
``anchor``, a ``moderator`` or ``any`` signed-in user may call declares ``owner=`` (an
:class:`Owner`): how to find the broadcast(s) the request acts on, by loading the
resource (a sale -> its broadcast; a body's ``broadcast_id`` -> that broadcast; a danmaku
room -> its broadcast), or :data:`CALLERS_OWN` when the handler only ever touches the
caller's own records (their tokens, a list filtered to them). The auth middleware
(:mod:`control.auth`) resolves it before the handler runs and asks whether this
principal may act on those broadcasts; a non-operator calling a route without an
``owner`` is refused (``403 undeclared_owner``). Which placeholder a URL has plays no
part.

Example (a package ``shelf`` with two routes)::

    from aiohttp import web
    from core.routes import OpDoc, RouteTable, ref

    ROUTES = RouteTable("shelf", schemas={"ShelfItem": {"type": "object", ...}})

    @ROUTES.route("GET", "/api/shelves/{broadcast_id}",
                  OpDoc("The shelf of a broadcast", "shelf", ("public",),
                        response_media={"application/json": {"schema": {
                            "type": "array", "items": ref("ShelfItem")}}}))
    async def get_shelf(request: web.Request) -> web.Response: ...

    @ROUTES.route("PUT", "/api/shelves/{broadcast_id}",
                  OpDoc("Replace the shelf", "shelf", ("operator", "anchor"),
                        body="ShelfPut", response="Shelf", errors=(409,)),
                  owner=broadcast_in_path("broadcast_id"))
    async def put_shelf(request: web.Request) -> web.Response: ...

    def setup(app: web.Application, config: ShelfConfig) -> None:
        ROUTES.install(app)          # at setup time, before the app starts

The generated operation gets: ``operationId`` (the handler's name unless
``OpDoc.operation_id``), ``x-roles``, ``security``, the path parameters (``{id}`` and
``{..._id}`` are integers unless ``OpDoc.path_params`` says otherwise, others strings),
``OpDoc.query``, the request body, the success response, and error responses: those in
``OpDoc.errors``, plus ``400``/``413`` with a body, ``400`` with a query, ``401``/``403``
unless public, ``404`` with a path parameter. A hand-written piece of the operation can
be merged over that with ``OpDoc.extra`` (its ``responses`` and ``parameters`` are merged
by status code and by name; other keys replace).

``install`` adds the routes in declaration order, and aiohttp tries them in that order:
put a hot route first, and a specific path before a pattern that would also match it.
``Op(..., head=True)`` (or ``route(..., head=True)``) answers ``HEAD`` on a ``GET`` too.

Routes outside ``/api/`` that a package serves (media files, playlists, ``/metrics``)
are declared the same way (their roles are documentation: the auth middleware guards
``/api/`` only, so declare them ``("public",)``); they stay out of the API document,
which describes ``/api/``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

logger = logging.getLogger(__name__)

__all__ = [
    "CALLERS_OWN",
    "ERROR_TEXT",
    "ID",
    "PAGING",
    "ROLE_NAMES",
    "ROUTES",
    "InstalledRoutes",
    "Op",
    "OpDoc",
    "Owner",
    "RouteTable",
    "Scope",
    "broadcast_in_body",
    "broadcast_in_path",
    "installed",
    "nullable",
    "op_of",
    "operation",
    "query_param",
    "ref",
    "resolved_by",
    "roles_of",
    "room_in_body",
    "room_in_query",
]

J = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PUBLIC = "public"
ANY = "any"
ROLE_NAMES = frozenset({PUBLIC, ANY, "operator", "anchor", "moderator"})
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})  # OPTIONS: CORS

ID: J = {"type": "integer", "minimum": 1, "maximum": 2**53}

ERROR_TEXT = {
    400: "invalid input",
    401: "not signed in, or the token is unknown, expired or revoked",
    403: "the caller's role may not do this",
    404: "no such object (or not yours)",
    409: "not possible in the object's current state",
    413: "body too large",
    415: "unsupported media type",
    429: "too many attempts; see Retry-After",
    503: "not available on this node right now",
}


def ref(name: str) -> J:
    """``{"$ref": "#/components/schemas/<name>"}``."""
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: J) -> J:
    if "$ref" in schema:
        return {"allOf": [schema], "nullable": True}
    return {**schema, "nullable": True}


def query_param(name: str, schema: J, description: str = "") -> J:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


PAGING = [
    query_param("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}),
    query_param("offset", {"type": "integer", "minimum": 0, "maximum": 1_000_000, "default": 0}),
]


@dataclass(frozen=True)
class OpDoc:
    """Who may call an operation, and its OpenAPI description."""

    summary: str
    tag: str
    roles: tuple[str, ...]
    body: str | None = None
    """Name of the JSON request body's schema (in ``components.schemas``)."""
    body_required: bool = True
    body_media: Mapping[str, J] | None = None
    """A non-JSON request body: ``{media type: {"schema": ...}}``."""
    ok: int = 200
    also_ok: tuple[int, ...] = ()
    response: str | None = None
    """Name of the JSON response's schema."""
    response_media: Mapping[str, J] | None = None
    """Any other response content: ``{media type: {"schema": ...}}``."""
    errors: tuple[int, ...] = ()
    query: list[J] = field(default_factory=list)
    description: str = ""
    path_params: Mapping[str, J] = field(default_factory=dict)
    """Schemas of path parameters that are not integer ids."""
    operation_id: str = ""
    extra: Mapping[str, Any] | None = None
    """Hand-written parts merged over the generated operation."""

    def __post_init__(self) -> None:
        bad = set(self.roles) - ROLE_NAMES
        if bad or not self.roles:
            raise ValueError(f"unknown role(s) {sorted(bad)}; use {sorted(ROLE_NAMES)}")


@dataclass(frozen=True)
class Scope:
    """What one request acts on, for the ownership check (:class:`Owner` finds it)."""

    broadcasts: frozenset[str] = frozenset()
    """Broadcast ids (control's id, as text)."""
    rooms: frozenset[str] = frozenset()
    """Danmaku rooms (``<app>/<stream>``); the check maps them to their broadcast."""
    everything: bool = False
    """The request acts across every broadcast (a list or log without a filter)."""
    missing: str = ""
    """The resource named does not exist (``"flash sale 7"``): 404 for a non-operator."""

    @staticmethod
    def of(broadcasts: Iterable[object] = (), rooms: Iterable[str] = ()) -> Scope:
        return Scope(frozenset(str(b) for b in broadcasts), frozenset(rooms))


Resolver = Callable[[web.Request], Awaitable[Scope]]


@dataclass(frozen=True)
class Owner:
    """How the auth check finds the broadcast(s) a request acts on.

    ``parts``: resolvers, each with the status a refusal gets (``404`` when the resource
    named in the path is someone else's; ``403`` when a body or query points at someone
    else's broadcast). No parts: the handler only ever acts on the caller's own records.
    """

    parts: tuple[tuple[Resolver, int], ...]
    doc: str

    def __add__(self, other: Owner) -> Owner:
        return Owner(self.parts + other.parts, f"{self.doc}; {other.doc}")


CALLERS_OWN = Owner((), "the caller's own records only (the handler filters by the caller)")


def _path_value(request: web.Request, name: str) -> str:
    return request.match_info.get(name, "")


def broadcast_in_path(name: str) -> Owner:
    """The broadcast whose id is the path parameter ``name`` (a route *of* a broadcast)."""

    async def resolve(request: web.Request) -> Scope:
        return Scope.of([_path_value(request, name)])

    return Owner(((resolve, 404),), f"the broadcast {{{name}}}")


async def _json_field(request: web.Request, name: str) -> object:
    from core.http import read_json  # core.http imports nothing of this module's users

    if not request.body_exists:
        return None
    return (await read_json(request)).get(name)


def broadcast_in_body(name: str = "broadcast_id") -> Owner:
    """The broadcast named by the JSON body's field ``name`` (if present)."""

    async def resolve(request: web.Request) -> Scope:
        value = await _json_field(request, name)
        return Scope.of([] if value is None else [value])

    return Owner(((resolve, 403),), f"the broadcast of the body's {name}")


def room_in_body(name: str = "room") -> Owner:
    """The broadcast of the danmaku room named by the JSON body's field ``name``."""

    async def resolve(request: web.Request) -> Scope:
        value = await _json_field(request, name)
        return Scope.of(rooms=[] if value is None else [str(value)])

    return Owner(((resolve, 403),), f"the broadcast of the body's {name}")


def room_in_query(name: str = "room") -> Owner:
    """The broadcast of the danmaku room in the query's ``name``; without it, every room."""

    async def resolve(request: web.Request) -> Scope:
        value = request.query.get(name)
        return Scope(everything=True) if not value else Scope.of(rooms=[value])

    return Owner(((resolve, 403),), f"the broadcast of the query's {name} (else all)")


def resolved_by(resolve: Resolver, doc: str, status: int = 404) -> Owner:
    """An owner found by loading the resource: ``resolve`` returns the :class:`Scope`
    (``Scope(missing=...)`` when the resource does not exist)."""
    return Owner(((resolve, status),), doc)


@dataclass(frozen=True)
class Op:
    """One route: method, path (aiohttp syntax, regexes allowed), handler and doc."""

    method: str
    path: str
    handler: Handler
    doc: OpDoc
    head: bool = False
    """For a GET: answer HEAD too (as ``router.add_get`` does); not in the API document."""
    owner: Owner | None = None
    """Whose resource the request acts on: required when an anchor, a moderator or any
    signed-in user may call the route (see :class:`Owner`)."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"{self.method} {self.path}: method must be one of {sorted(METHODS)}")
        if not self.path.startswith("/api/") and self.doc.roles != (PUBLIC,):
            raise ValueError(f"{self.method} {self.path}: outside /api/ only public is enforced")

    @property
    def roles(self) -> tuple[str, ...]:
        return self.doc.roles

    @property
    def template(self) -> str:
        """The path as OpenAPI writes it: ``/api/play/{app:[a-z]+}`` -> ``/api/play/{app}``."""
        return _template(self.path)


_PARAM = re.compile(r"\{([_a-zA-Z][_a-zA-Z0-9]*)(?::(?:[^{}]|\{[^{}]*\})*)?\}")


def _template(path: str) -> str:
    return _PARAM.sub(lambda m: "{" + m[1] + "}", path)


def _path_params(path: str) -> list[str]:
    return [m[1] for m in _PARAM.finditer(path)]


def operation(method: str, path: str, doc: OpDoc, op_id: str) -> J:
    """The OpenAPI operation object of one declared route."""
    op: J = {
        "operationId": doc.operation_id or op_id,
        "summary": doc.summary,
        "tags": [doc.tag],
        "x-roles": list(doc.roles),
    }
    public = PUBLIC in doc.roles
    if doc.description:
        op["description"] = doc.description
    op["security"] = [{}, {"bearer": []}] if public else [{"bearer": []}]
    params: list[J] = []
    for name in _path_params(path):
        default = ID if name == "id" or name.endswith("_id") else {"type": "string"}
        schema = dict(doc.path_params.get(name, default))
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    params.extend(doc.query)
    if doc.body is not None:
        op["requestBody"] = {
            "required": doc.body_required,
            "content": {"application/json": {"schema": ref(doc.body)}},
        }
    elif doc.body_media is not None:
        op["requestBody"] = {"required": doc.body_required, "content": dict(doc.body_media)}
    responses: J = {}
    if doc.ok == 204:
        responses["204"] = {"description": "done"}
    elif doc.response_media is not None:
        responses[str(doc.ok)] = {"description": "ok", "content": dict(doc.response_media)}
    else:
        responses[str(doc.ok)] = {
            "description": "ok",
            "content": {"application/json": {"schema": ref(doc.response or "Error")}},
        }
    for status in doc.also_ok:
        responses[str(status)] = responses[str(doc.ok)]
    errors = set(doc.errors)
    if doc.body is not None or doc.body_media is not None:
        errors |= {400, 413}
    if doc.query:
        errors.add(400)
    if not public:
        errors |= {401, 403}
    if "{" in path:
        errors.add(404)
    for status in sorted(errors):
        responses[str(status)] = {
            "description": ERROR_TEXT.get(status, "error"),
            "content": {"application/json": {"schema": ref("Error")}},
        }
    extra = dict(doc.extra or {})
    if "parameters" in extra:
        by_name = {(p.get("in"), p.get("name")): p for p in extra.pop("parameters")}
        params = [by_name.pop((p["in"], p["name"]), p) for p in params] + list(by_name.values())
    if "responses" in extra:
        responses.update(extra.pop("responses"))
    op.update(extra)
    if params:
        op["parameters"] = params
    op["responses"] = responses
    return op


class RouteTable:
    """The routes of one package. Build it at import time; :meth:`install` it in ``setup``."""

    def __init__(
        self, package: str, ops: Iterable[Op] = (), *, schemas: Mapping[str, J] | None = None
    ) -> None:
        self.package = package
        self.schemas: J = dict(schemas or {})
        self._ops: list[Op] = []
        for op in ops:
            self.add(op)

    def add(self, op: Op) -> Op:
        for other in self._ops:
            if other.method == op.method and other.template == op.template:
                raise ValueError(f"{self.package}: {op.method} {op.template} declared twice")
        self._ops.append(op)
        return op

    def route(
        self, method: str, path: str, doc: OpDoc, *, head: bool = False, owner: Owner | None = None
    ) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`add`; returns the handler unchanged."""

        def declare(handler: Handler) -> Handler:
            self.add(Op(method, path, handler, doc, head=head, owner=owner))
            return handler

        return declare

    def __iter__(self) -> Iterator[Op]:
        return iter(self._ops)

    def __len__(self) -> int:
        return len(self._ops)

    def openapi_paths(self) -> J:
        """``{path template: {method: operation}}`` for every op under ``/api/``."""
        paths: J = {}
        for op in self._ops:
            if not op.path.startswith("/api/"):
                continue
            op_id = getattr(op.handler, "__name__", "op")
            paths.setdefault(op.template, {})[op.method.lower()] = operation(
                op.method, op.template, op.doc, op_id
            )
        return paths

    def install(self, app: web.Application) -> None:
        """Add every route to ``app``'s router (in declaration order) and record its roles."""
        reg = installed(app)
        if any(t is self or t.package == self.package for t in reg.tables):
            raise RuntimeError(f"route table {self.package!r} installed twice")
        reg.tables.append(self)
        for op in self._ops:
            resource = app.router.add_resource(op.path)
            if op.head and op.method == "GET":
                head = resource.add_route("HEAD", op.handler)
                reg.roles[head] = op.roles
                reg.ops[head] = op
            route = resource.add_route(op.method, op.handler)
            reg.roles[route] = op.roles
            reg.ops[route] = op


@dataclass
class InstalledRoutes:
    """What :meth:`RouteTable.install` recorded on one app."""

    tables: list[RouteTable] = field(default_factory=list)
    roles: dict[web.AbstractRoute, tuple[str, ...]] = field(default_factory=dict)
    ops: dict[web.AbstractRoute, Op] = field(default_factory=dict)

    def openapi_paths(self) -> J:
        paths: J = {}
        for table in self.tables:
            for path, item in table.openapi_paths().items():
                mine = paths.setdefault(path, {})
                for method, op in item.items():
                    if method in mine:
                        raise ValueError(f"{method.upper()} {path} declared by two tables")
                    mine[method] = op
        return paths

    def schemas(self) -> J:
        out: J = {}
        for table in self.tables:
            out.update(table.schemas)
        return out


ROUTES: web.AppKey[InstalledRoutes] = web.AppKey("berrylive.routes", InstalledRoutes)


def installed(app: web.Application) -> InstalledRoutes:
    """The route record of ``app`` (created on first use)."""
    reg = app.get(ROUTES)
    if reg is None:
        reg = app[ROUTES] = InstalledRoutes()
    return reg


def roles_of(request: web.Request) -> tuple[str, ...] | None:
    """The roles declared for the route ``request`` matched, or ``None`` if undeclared."""
    reg = request.app.get(ROUTES)
    if reg is None:
        return None
    return reg.roles.get(request.match_info.route)


def op_of(request: web.Request) -> Op | None:
    """The declared :class:`Op` of the route ``request`` matched, or ``None``."""
    reg = request.app.get(ROUTES)
    if reg is None:
        return None
    return reg.ops.get(request.match_info.route)
