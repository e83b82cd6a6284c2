"""core.routes: the operation generated from a declaration, path templates, refusals of a
bad declaration, and roles recorded against the route objects aiohttp created."""

from __future__ import annotations

import pytest
from aiohttp import web

from core.routes import Op, OpDoc, RouteTable, installed, operation, query_param


async def _ok(request: web.Request) -> web.Response:
    return web.Response()


def test_generated_operation_has_roles_params_and_errors() -> None:
    doc = OpDoc(
        "Edit a thing",
        "things",
        ("operator", "anchor"),
        body="ThingPatch",
        response="Thing",
        errors=(409,),
        query=[query_param("dry", {"type": "boolean"})],
        path_params={"name": {"type": "string", "maxLength": 8}},
    )
    op = operation("PATCH", "/api/things/{thing_id}/{name}", doc, "edit_thing")
    assert op["operationId"] == "edit_thing"
    assert op["x-roles"] == ["operator", "anchor"]
    assert op["security"] == [{"bearer": []}]
    params = {p["name"]: p for p in op["parameters"]}
    assert params["thing_id"]["schema"]["type"] == "integer"
    assert params["name"]["schema"] == {"type": "string", "maxLength": 8}
    assert params["dry"]["in"] == "query"
    assert op["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ThingPatch"
    }
    assert set(op["responses"]) == {"200", "400", "401", "403", "404", "409", "413"}


def test_public_operation_and_hand_written_parts() -> None:
    doc = OpDoc(
        "A list",
        "things",
        ("public",),
        ok=204,
        operation_id="things_list",
        extra={
            "responses": {"204": {"description": "nothing to say"}},
            "parameters": [{"name": "x", "in": "query", "schema": {"type": "string"}}],
            "deprecated": True,
        },
    )
    op = operation("GET", "/api/things", doc, "ignored")
    assert op["operationId"] == "things_list"
    assert op["security"] == [{}, {"bearer": []}]
    assert "401" not in op["responses"] and "403" not in op["responses"]
    assert op["responses"]["204"] == {"description": "nothing to say"}
    assert op["parameters"] == [{"name": "x", "in": "query", "schema": {"type": "string"}}]
    assert op["deprecated"] is True


def test_bad_declarations_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown role"):
        OpDoc("x", "t", ("operators",))
    with pytest.raises(ValueError, match="unknown role"):
        OpDoc("x", "t", ())
    with pytest.raises(ValueError, match="method"):
        Op("FETCH", "/api/x", _ok, OpDoc("x", "t", ("public",)))
    with pytest.raises(ValueError, match="only public"):
        Op("GET", "/files/x", _ok, OpDoc("x", "t", ("operator",)))
    table = RouteTable("t", [Op("GET", "/api/x/{id}", _ok, OpDoc("x", "t", ("public",)))])
    with pytest.raises(ValueError, match="declared twice"):
        table.add(Op("GET", "/api/x/{id:[0-9]+}", _ok, OpDoc("y", "t", ("public",))))


def test_install_records_roles_by_route_object_and_templates_regexes() -> None:
    app = web.Application()
    table = RouteTable(
        "t",
        [
            Op("GET", r"/api/play/{app:[a-z]+}/{stream:[a-z0-9]{2,8}}", _ok,
               OpDoc("play", "t", ("public",)), head=True),
            Op("DELETE", "/api/play/{app}/{stream}", _ok, OpDoc("stop", "t", ("operator",))),
            Op("GET", "/files/{name}", _ok, OpDoc("a file", "t", ("public",))),
        ],
    )  # fmt: skip
    table.install(app)
    reg = installed(app)
    by_method = {r.method: roles for r, roles in reg.roles.items() if "play" in str(r.resource)}
    assert by_method == {"HEAD": ("public",), "GET": ("public",), "DELETE": ("operator",)}
    assert all(r in set(app.router.routes()) for r in reg.roles)
    paths = table.openapi_paths()
    assert list(paths) == ["/api/play/{app}/{stream}"]  # /files/ is not part of the API
    assert set(paths["/api/play/{app}/{stream}"]) == {"get", "delete"}
    with pytest.raises(RuntimeError, match="installed twice"):
        table.install(app)
