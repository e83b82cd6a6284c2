"""The relay's HTTP routes: each route, its roles and its API doc, declared once.

* ``GET /{app}/{stream}.flv``: HTTP-FLV, or WS-FLV with an ``Upgrade`` (:mod:`relay.http`;
  a plain play usually never gets here, :mod:`relay.fastplay` answers it first);
* ``GET /{app}/{stream}.m3u8`` and ``/{app}/{stream}.hls/{token}/{file}``: LL-HLS playlist
  (blocking reload), init segments, segments and parts (:mod:`relay.hls_http`);
* ``GET /api/streams[/{app}/{stream}]``: this node's live figures (operators: they show
  publisher addresses);
* ``GET /api/play/{app}/{stream}``: where to play (public), and ``/api/cluster/*``: the
  cluster's nodes, streams and forwarding rules (operators) (:mod:`relay.scheduler`);
* ``POST /whep/{app}/{stream}`` and the session resource ``/whep/{app}/{stream}/{session}``
  (``DELETE``; ``PATCH`` 405; ``OPTIONS`` for CORS): WebRTC playback (:mod:`relay.whep`).

Schemas are in :mod:`relay.openapi`; ``relay.wiring.setup`` installs :data:`ROUTES`.
"""

from __future__ import annotations

from core.routes import Op, OpDoc, RouteTable, query_param
from relay import hls_http, http, scheduler, whep
from relay.openapi import NAME_SCHEMA, SCHEMAS

__all__ = ["ROUTES"]

_SEG = r"[A-Za-z0-9_.\-]+"
_WHEP = rf"/whep/{{app:{_SEG}}}/{{stream:{_SEG}}}"
_WHEP_SESSION = _WHEP + r"/{session:[A-Za-z0-9_\-]{8,64}}"
_NAMES = {"app": NAME_SCHEMA, "stream": NAME_SCHEMA}
_N = scheduler.NAME
_OPERATOR = ("operator",)

ROUTES = RouteTable(
    "relay",
    [
        Op(
            "GET",
            rf"/{{app:{_SEG}}}/{{stream:{_SEG}}}.flv",
            http.flv_handler,
            OpDoc("Play a live stream: HTTP-FLV, or WS-FLV with an Upgrade", "relay", ("public",)),
            head=True,
        ),
        Op(
            "GET",
            rf"/{{app:{_SEG}}}/{{stream:{_SEG}}}.m3u8",
            hls_http.playlist_handler,
            OpDoc(
                "Play a live stream: LL-HLS playlist (_HLS_msn/_HLS_part: blocking reload)",
                "relay",
                ("public",),
            ),
            head=True,
        ),
        Op(
            "GET",
            rf"/{{app:{_SEG}}}/{{stream:{_SEG}}}.hls/{{token:[0-9a-f]{{8}}}}"
            r"/{file:[a-z0-9.\-]+}",
            hls_http.file_handler,
            OpDoc("LL-HLS init segment, segment or part (cacheable)", "relay", ("public",)),
            head=True,
        ),
        Op(
            "POST",
            _WHEP,
            whep.post_handler,
            OpDoc(
                "Play a live stream over WebRTC (WHEP): SDP offer in, answer out",
                "relay",
                ("public",),
            ),
        ),
        Op(
            "OPTIONS",
            _WHEP,
            whep.options_handler,
            OpDoc("WHEP CORS preflight", "relay", ("public",)),
        ),
        Op(
            "DELETE",
            _WHEP_SESSION,
            whep.delete_handler,
            OpDoc("End a WHEP playback session", "relay", ("public",)),
        ),
        Op(
            "PATCH",
            _WHEP_SESSION,
            whep.patch_handler,
            OpDoc(
                "Trickle ICE for a WHEP session: 405 (every candidate is in the answer)",
                "relay",
                ("public",),
            ),
        ),
        Op(
            "OPTIONS",
            _WHEP_SESSION,
            whep.options_handler,
            OpDoc("WHEP session CORS preflight", "relay", ("public",)),
        ),
        Op(
            "GET",
            "/api/whep",
            whep.stats_handler,
            OpDoc(
                "WHEP sessions on this node: per stream its RTP figures and its viewers'",
                "relay",
                _OPERATOR,
                operation_id="relay_whep",
                response_media={"application/json": {"schema": {"type": "object"}}},
            ),
            head=True,
        ),
        Op(
            "GET",
            "/api/streams",
            http.streams_handler,
            OpDoc(
                "Live streams on this node with their figures",
                "relay",
                _OPERATOR,
                operation_id="relay_streams",
                response="RelayStreamList",
            ),
            head=True,
        ),
        Op(
            "GET",
            rf"/api/streams/{{app:{_SEG}}}/{{stream:{_SEG}}}",
            http.stream_handler,
            OpDoc(
                "One live stream on this node",
                "relay",
                _OPERATOR,
                operation_id="relay_stream",
                path_params=_NAMES,
                response="RelayStream",
            ),
            head=True,
        ),
        Op(
            "GET",
            rf"/api/play/{{app:{_N}}}/{{stream:{_N}}}",
            scheduler.play_handler,
            OpDoc(
                "Where to play a stream: the least-loaded live edge (CDN scheduler)",
                "cluster",
                ("public",),
                operation_id="relay_play",
                path_params=_NAMES,
                query=[
                    query_param("protocol", {"type": "string", "enum": list(scheduler.PROTOCOLS)}),
                    query_param(
                        "redirect",
                        {"type": "string", "enum": ["0", "1"]},
                        "1: answer 302 to the URL",
                    ),
                ],
                response="RelayPlay",
                errors=(503,),
                extra={
                    "responses": {
                        "302": {"description": "redirect to the chosen node's URL (redirect=1)"}
                    }
                },
            ),
            head=True,
        ),
        Op(
            "GET",
            "/api/cluster/nodes",
            scheduler.nodes_handler,
            OpDoc(
                "Live nodes of the cluster with their load",
                "cluster",
                _OPERATOR,
                operation_id="relay_cluster_nodes",
                response="RelayNodeList",
            ),
            head=True,
        ),
        Op(
            "GET",
            "/api/cluster/streams",
            scheduler.cluster_streams_handler,
            OpDoc(
                "Streams across the cluster, viewers summed per node",
                "cluster",
                _OPERATOR,
                operation_id="relay_cluster_streams",
                response="RelayClusterStreamList",
            ),
            head=True,
        ),
        Op(
            "GET",
            "/api/cluster/forwards",
            scheduler.forwards_handler,
            OpDoc(
                "Per-broadcast RTMP forwarding rules",
                "cluster",
                _OPERATOR,
                operation_id="relay_forwards",
                response="RelayForwardList",
            ),
            head=True,
        ),
        Op(
            "PUT",
            rf"/api/cluster/forwards/{{app:{_N}}}/{{stream:{_N}}}",
            scheduler.forward_put_handler,
            OpDoc(
                "Set the RTMP destinations of one broadcast (empty list removes them)",
                "cluster",
                _OPERATOR,
                operation_id="relay_forward_put",
                path_params=_NAMES,
                body="RelayForwardPut",
                response="RelayForward",
            ),
        ),
        Op(
            "DELETE",
            rf"/api/cluster/forwards/{{app:{_N}}}/{{stream:{_N}}}",
            scheduler.forward_delete_handler,
            OpDoc(
                "Remove the forwarding rules of one broadcast",
                "cluster",
                _OPERATOR,
                operation_id="relay_forward_delete",
                path_params=_NAMES,
                ok=204,
            ),
        ),
    ],
    schemas=SCHEMAS,
)
