"""The one exception type users see.

An `SdloraError` carries a message a user can act on (what is wrong, where, what to do).
The CLI prints it as a single line without a traceback. It subclasses ValueError so that
library callers can treat bad input the usual Python way.
"""


class SdloraError(ValueError):
    """Bad input or an unusable file: the message names the file/field and what to do."""
