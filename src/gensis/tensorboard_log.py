"""TensorBoard event files written synchronously (every event is on disk when ``add_*`` returns).

tensorboardX's ``SummaryWriter`` queues events to a background thread that a crash or a process that never
calls ``close`` can cut short; training runs here are killed and resumed, so this small writer frames each
event itself (tensorboardX's protobufs, summaries and ``RecordWriter``) and flushes at once. ``purge_step``
writes the ``SessionLog.START`` marker with which TensorBoard discards the events of a resumed run's lost
steps, as ``SummaryWriter(purge_step=...)`` does.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from gensis.errors import UserError
from gensis.rundir import make_folder


class TensorBoardWriter:
    def __init__(self, folder: str | os.PathLike[str], purge_step: int | None = None):
        try:
            from tensorboardX.proto.event_pb2 import Event, SessionLog
            from tensorboardX.record_writer import RecordWriter
        except ImportError:
            raise UserError("the tensorboard logger needs tensorboardX: pip install 'gensis[tensorboard]'") from None
        folder = Path(folder)
        make_folder(folder)
        name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}"
        self._Event = Event
        self._writer = RecordWriter(str(folder / name))
        self._write(Event(wall_time=time.time(), file_version="brain.Event:2"))
        if purge_step is not None:
            self._write(Event(wall_time=time.time(), step=int(purge_step),
                              session_log=SessionLog(status=SessionLog.START)))
        self._writer.flush()

    def _write(self, event: Any) -> None:
        self._writer.write(event.SerializeToString())

    def add_scalars(self, values: dict[str, float], step: int) -> None:
        from tensorboardX.summary import scalar

        for tag, v in values.items():
            self._write(self._Event(wall_time=time.time(), step=int(step), summary=scalar(tag, float(v))))
        self._writer.flush()

    def add_image(self, tag: str, image: Any, step: int, dataformats: str = "CHW") -> None:
        from tensorboardX.summary import image as image_summary

        self._write(self._Event(wall_time=time.time(), step=int(step),
                                summary=image_summary(tag, image, dataformats=dataformats)))
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
