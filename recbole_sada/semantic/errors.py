"""Error type raised by the semantic backends."""
from recbole_sada.errors import InputError


class SemanticError(InputError):
    """A problem with an encoder, a chat LLM, the cache or their configuration.

    Every message is a single line that names the offending config key, file or
    URL and says how to fix it, so that command line tools can print it as is.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
