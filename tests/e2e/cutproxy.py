"""A TCP proxy that cuts the first image stream after some bytes: a server gone mid-stream."""

from __future__ import annotations

import asyncio
import threading


class CuttingProxy:
    """Forward 127.0.0.1:<port> to a server; drop the first ``GET /images/`` after ``cut_after``."""

    def __init__(self, target_port: int, cut_after: int):
        self.target_port = target_port
        self.cut_after = cut_after
        self.cuts = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CuttingProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        head = await reader.read(65536)
        cut = self.cuts == 0 and b"GET /images/" in head and b"Range:" not in head
        if cut:
            self.cuts += 1
        up_writer.write(head)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, limit: int) -> None:
            sent = 0
            try:
                while chunk := await src.read(65536):
                    if limit and sent + len(chunk) > limit:
                        dst.write(chunk[: limit - sent])
                        await dst.drain()
                        break
                    sent += len(chunk)
                    dst.write(chunk)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(
            pump(reader, up_writer, 0), pump(up_reader, writer, self.cut_after if cut else 0)
        )
