"""The embedded default's broker: kombu's filesystem transport, with whole-file writes.

kombu writes a message by creating its file under the final name and then writing into it,
while a worker polling the folder moves away any file with a matching name. A worker that
polls between the two reads an empty file, fails to decode it and dies (seen here under
load: the web process was writing a wake-up as the worker polled). Here the message is
written under a name no reader matches and renamed into place, which is atomic within one
folder, so a reader sees a whole message or none. An unreadable file that gets there anyway
(a process killed in kombu's own writer) is dropped with a warning: messages only announce
work that the sweep finds in the database regardless.

Settings create nothing, so a channel makes its folders when it opens: whichever process
uses the broker first (web, worker or beat) sets them up.
"""

import logging
import os
import uuid
from queue import Empty

from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

logger = logging.getLogger(__name__)

# Only folders the options name are made: kombu's defaults are relative to the current
# directory, where nothing should appear.
FOLDER_OPTIONS = ("data_folder_in", "data_folder_out", "processed_folder", "control_folder")


class Channel(filesystem.Channel):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for option in FOLDER_OPTIONS:
            if option in self.transport_options:
                os.makedirs(self.transport_options[option], exist_ok=True)

    def _put(self, queue, payload, **kwargs):
        final = os.path.join(
            self.data_folder_out, f"{int(filesystem.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        )
        # A leading dot: kombu's reader only takes "<anything>.<queue>.msg" from the folder.
        partial = os.path.join(self.data_folder_out, f".{uuid.uuid4()}.partial")
        try:
            with open(partial, "wb") as file:
                file.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise filesystem.ChannelError(f"Cannot add file {final!r} to directory") from exc

    def _get(self, queue):
        try:
            return super()._get(queue)
        except ValueError:
            logger.warning(
                "Dropped an unreadable message of queue %s from the broker folder", queue
            )
            raise Empty() from None


class Transport(filesystem.Transport):
    Channel = Channel
