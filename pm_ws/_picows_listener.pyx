"""The picows transport's listener, whole text frames taken in C: optional, built only where picows is installed.

picows hands every frame to ``on_ws_frame``; from Python that costs a method lookup, a frame and an enum
member built for ``frame.msg_type`` each time. Compiled against picows's own declarations, the common
frame (one whole text frame outside a fragmented message) costs a C call and a copy of its payload; every
other frame, and text that is not UTF-8, goes to the Python listener's ``take_frame``, which decides as
it would alone. After the last frame of the bytes picows read, the shard's ``deliver`` (or ``chunk_end``)
takes the frames. The module records the picows it was built against: the transport uses it only with
that very version (a picows built differently may lay its objects out differently).
"""

from picows.picows cimport WSFrame, WSListener, WSMsgType, WSTransport

cdef extern from *:
    const char *PM_WS_PICOWS_VERSION  # defined by setup.py: the picows version the module is compiled against

PICOWS_VERSION = PM_WS_PICOWS_VERSION.decode()


cdef class TextFrameListener(WSListener):
    """Queues whole text frames into ``frames``, hands each chunk over; ``take_frame`` (Python) gets the rest.

    The attributes are the :class:`~pm_ws._inbox.FrameBuffer` members the hot path reads, held in C slots.
    """

    cdef public object frames
    cdef public object deliver
    cdef public list _fragments

    cpdef on_ws_frame(self, WSTransport transport, WSFrame frame):
        if frame.msg_type != WSMsgType.TEXT or not frame.fin or self._fragments:
            self.take_frame(transport, frame)
            return
        try:
            text = frame.get_payload_as_utf8_text()
        except UnicodeDecodeError:
            self.take_frame(transport, frame)  # decodes again and closes the socket with the right code
            return
        self.frames.append(text)
        if frame.last_in_buffer:  # the chunk picows read is all queued: hand it over (chunk_end, inlined)
            if self.deliver is not None:
                self.deliver()
            else:
                self.chunk_end()
