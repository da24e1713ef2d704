"""A TCP proxy that cuts the first image stream after some bytes: a server gone mid-stream;
or (``upload=``) the first upload whose request starts with those bytes, after ``cut_after``
bytes of its body: a network gone mid-capture."""

from __future__ import annotations

import asyncio
import threading


class CuttingProxy:
    """Forward 127.0.0.1:<port> to a server; drop the first ``GET /images/`` after ``cut_after``."""

    def __init__(self, target_port: int, cut_after: int, upload: bytes = b""):
        self.target_port = target_port
        self.cut_after = cut_after
        self.upload = upload
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
        if self.upload:
            await self._upload(head, reader, writer, up_reader, up_writer)
            return
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

    async def _upload(self, head, reader, writer, up_reader, up_writer) -> None:  # type: ignore[no-untyped-def]
        """Forward both ways; cut the first matching upload after ``cut_after`` body bytes,
        closing both sides (the client sees its upload fail, the server a short body)."""
        armed = self.cuts == 0 and head.startswith(self.upload)
        sent = len(head) - (head.find(b"\r\n\r\n") + 4 if b"\r\n\r\n" in head else 0)
        up_writer.write(head)

        async def up() -> None:
            nonlocal sent
            try:
                while chunk := await reader.read(65536):
                    if armed and self.cuts == 0 and sent + len(chunk) > self.cut_after:
                        up_writer.write(chunk[: max(0, self.cut_after - sent)])
                        await up_writer.drain()
                        self.cuts += 1
                        writer.close()
                        break
                    sent += len(chunk)
                    up_writer.write(chunk)
                    await up_writer.drain()
            except OSError:
                pass
            finally:
                up_writer.close()

        async def down() -> None:
            try:
                while chunk := await up_reader.read(65536):
                    writer.write(chunk)
                    await writer.drain()
            except OSError:
                pass
            finally:
                writer.close()

        await asyncio.gather(up(), down())
