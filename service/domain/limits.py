"""Request limits. Each bounds the work or memory one call can demand of the server."""

from typing import Final

# Nesting of objects and lists inside one block's inputs. Real workflow inputs are a few levels
# deep; the bound keeps a hostile input from costing recursion or stack, well below the 100 levels
# at which protobuf itself refuses to parse.
MAX_INPUT_DEPTH: Final = 32
MAX_BLOCKS_PER_REQUEST: Final = 500
MAX_REFERENCES_PER_REQUEST: Final = 2000
# Distinct keys per resolve: they become one `key = ANY($3)` array in one query.
MAX_KEYS_PER_REQUEST: Final = 500
# gRPC's own default receive limit; stated here so that the server sets it explicitly.
MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024
# Values (strings, numbers, objects, lists) walked in one request's inputs. The walk is Python
# work on the event loop, about 1.5 µs a value: a 4 MiB request of 300,000 fields held every
# other call (health checks included) for over half a second. 25,000 keeps one walk near 40 ms
# and is far beyond the inputs of a real block.
MAX_INPUT_VALUES_PER_REQUEST: Final = 25_000
# `{{` in one input string (references and escapes alike): each is a step of Python parsing, so
# one string of a million `\{{` took 0.4 s. Real strings hold a handful.
MAX_BRACES_PER_STRING: Final = 10_000
