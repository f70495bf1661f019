from collections import deque

from picows import WSFrame, WSListener, WSTransport

PICOWS_VERSION: str

class TextFrameListener(WSListener):
    frames: deque[str | bytes]
    _fragments: list[bytes]
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None: ...
