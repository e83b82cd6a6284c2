"""A publisher that stamps the wall clock into every video frame as it sends it.

    python -m bench.latency.publisher --url rtmp://127.0.0.1:1935/live/bench?sig \\
        --source bench/results/cache/source-720p30-60s.flv --progress pub.progress

Pushes the benchmark source (bench/media/publisher.py's file) over RTMP in a loop at its
own pace (like ``ffmpeg -re``), with the SEI stamp of bench/latency/stamp.py as the first
NAL unit of every H.264 frame, taken just before the frame is written to the socket. The
media time pushed so far is written to ``--progress`` as ffmpeg's ``-progress`` does
(``out_time_us=``), so bench/media's driver reads it alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from pathlib import Path
from urllib.parse import urlsplit

from bench.latency.stamp import is_avc_nalu_tag, stamp
from bench.media.publisher import Publisher, Source
from media import flv
from media.amf import encode_amf0
from media.rtmp import chunk as C
from media.rtmp.client import ClientConnection, ClientError, CommandReply

TAG_KIND = {8: C.AUDIO, 9: C.VIDEO, 18: C.DATA_AMF0}


def read_tags(path: Path) -> list[flv.FlvTag]:
    demux = flv.FlvDemuxer()
    return [t for t in demux.feed(path.read_bytes()) if isinstance(t, flv.FlvTag)]


def _is_header(tag: flv.FlvTag) -> bool:
    if tag.tag_type == 18:
        return True
    if tag.tag_type == 9:
        return len(tag.body) > 1 and tag.body[0] & 0x0F == 7 and tag.body[1] == 0
    return tag.tag_type == 8 and len(tag.body) > 1 and tag.body[0] >> 4 == 10 and tag.body[1] == 0


async def _publish_handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    client: ClientConnection,
    name: str,
) -> int:
    tx_create = client.create_stream()
    writer.write(client.data_to_send())
    stream_id = 0
    while True:
        data = await reader.read(65536)
        if not data:
            raise ConnectionError("server closed during publish")
        for ev in client.receive_data(data):
            if isinstance(ev, ClientError):
                raise ConnectionError(ev.reason)
            if not isinstance(ev, CommandReply):
                continue
            if ev.name == "_result" and ev.transaction_id == tx_create:
                stream_id = int(next((a for a in ev.args if isinstance(a, int | float)), 1))
                client.publish(stream_id, name)
            elif ev.name == "_error" or (
                ev.name == "onStatus" and "Publish.Start" not in str(ev.info.get("code"))
            ):
                raise ConnectionError(f"publish refused: {ev.name} {ev.info}")
            elif ev.name == "onStatus":
                writer.write(client.data_to_send())
                return stream_id
        out = client.data_to_send()
        if out:
            writer.write(out)


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: ClientConnection
) -> None:
    while data := await reader.read(65536):
        client.receive_data(data)
        out = client.data_to_send()
        if out:
            writer.write(out)


async def push(url: str, source: Path, progress: Path | None) -> None:
    parts = urlsplit(url)
    app, _, name = parts.path.lstrip("/").partition("/")
    if parts.query:
        name = f"{name}?{parts.query}"
    host, port = parts.hostname or "127.0.0.1", parts.port or 1935
    tags = read_tags(source)
    media = [t for t in tags if t.tag_type in (8, 9)]
    period_ms = max(t.timestamp for t in media) + 33
    reader, writer = await asyncio.open_connection(host, port)
    client = ClientConnection(chunk_size=65536)
    client.connect(app, f"rtmp://{host}:{port}/{app}")
    sid = await asyncio.wait_for(_publish_handshake(reader, writer, client, name), 10)
    pump = asyncio.create_task(_pump(reader, writer, client))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    last_progress = 0.0
    out = progress.open("a") if progress is not None else None
    try:
        for lap in range(1_000_000):
            for tag in tags:
                if lap and _is_header(tag):
                    continue
                ts = tag.timestamp + lap * period_ms
                due = t0 + ts / 1000
                now = loop.time()
                if due > now:
                    await asyncio.sleep(due - now)
                if pump.done():
                    raise ConnectionError("server closed the connection")
                body = tag.body
                if tag.tag_type == 18:
                    body = encode_amf0("@setDataFrame") + body
                elif tag.tag_type == 9 and is_avc_nalu_tag(body):
                    body = stamp(body)
                client.send_media(TAG_KIND[tag.tag_type], sid, ts & 0xFFFFFFFF, body)
                writer.write(client.data_to_send())
                if out is not None and loop.time() - last_progress >= 0.5:
                    last_progress = loop.time()
                    out.write(f"out_time_us={ts * 1000}\nprogress=continue\n")
                    out.flush()
    finally:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pump
        if out is not None:
            out.close()
        writer.close()


class StampingPublisher(Publisher):
    """bench/media's publisher handle (start, stop, media_time), running this module."""

    def __init__(self, source: Source, push_url: str, log_path: Path) -> None:
        super().__init__(source, push_url, log_path)
        import sys

        self.cmd = [
            sys.executable, "-m", "bench.latency.publisher", "--url", push_url,
            "--source", str(source.path), "--progress", str(self.progress_path),
        ]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--url", required=True)
    ap.add_argument("--source", required=True, type=Path)
    ap.add_argument("--progress", type=Path, default=None)
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.run(push(args.url, args.source, args.progress))
    except ImportError:
        asyncio.run(push(args.url, args.source, args.progress))


if __name__ == "__main__":
    main()
