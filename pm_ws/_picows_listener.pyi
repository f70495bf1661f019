from collections import deque
from collections.abc import Callable

from picows import WSFrame, WSListener, WSTransport

PICOWS_VERSION: str

class TextFrameListener(WSListener):
    frames: deque[str | bytes]
    deliver: Callable[[], None] | None
    _fragments: list[bytes]
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None: ...
