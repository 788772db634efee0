"""Every limit a caller meets, in one place. Each bounds the work or memory one call can demand of
the server, or what one tenant may keep."""

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

MAX_KEY_LENGTH: Final = 256
# 64 KiB of UTF-8: large enough for a PEM bundle or a service-account JSON, small enough that a
# resolve of many references stays within the default 4 MiB gRPC message size.
MAX_VALUE_BYTES: Final = 64 * 1024
# Ids come from the platform (workspace, user, workflow, execution); they are opaque, but bounded
# so that a bad caller cannot make us store or log megabytes per row (SPEC 2.1: 256, emails 320).
MAX_ID_LENGTH: Final = 256
MAX_EMAIL_LENGTH: Final = 320
MAX_DISPLAY_NAME_LENGTH: Final = 200
MAX_DESCRIPTION_LENGTH: Final = 2000

# Large enough for a pasted .env of a big project; small enough that one batch stays one
# reasonable transaction. Import (which has its own limit) is the path for more.
MAX_CHANGES_PER_SAVE: Final = 1000
# SPEC 2.6: the last 10 versions are kept.
VERSIONS_KEPT: Final = 10

# A 4 MiB text of bad lines would otherwise report two million problems (about 300 MB of report
# objects). An editor shows the first ones; the rest are counted in one closing problem.
MAX_REPORTED_PROBLEMS: Final = 1000

# Overridden lines an import entry's note names; past this, the first few and a count.
NOTE_OVERRIDES_LISTED: Final = 10
# A 10,000-line .env is the import the benchmark times; twice that is still one reasonable
# transaction. The text itself is bounded by the gRPC message limit (4 MiB).
MAX_IMPORT_ENTRIES: Final = 20_000

DEFAULT_TTL_SECONDS: Final = 3600
MAX_TTL_SECONDS: Final = 86400
# A grant names at most this many keys (they travel in the token, with every resolve).
MAX_GRANT_KEYS: Final = 256
# Far above the largest grant (seven ids of 256 characters and 256 keys of 256 characters).
MAX_TOKEN_CHARS: Final = 200_000

# How long a pin holds (service/app/pins.py).
PIN_TTL_SECONDS: Final = 86400
