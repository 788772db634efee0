"""Client library for the workflow secrets service (secrets.v1).

async with ExecutorClient("127.0.0.1:50051", token) as client:
    resolution = await client.resolve("ws1", {"http": {"auth": "Bearer {{API_TOKEN}}"}},
                                      trigger="manual", triggering_user_id="u1")
    redactor = resolution.redactor()          # mask the values in anything you log
    logging.getLogger().handlers[0].addFilter(RedactingFilter(redactor))
"""

from secrets_client.client import (
    BlockError,
    DirectoryClient,
    EditorClient,
    ExecutorClient,
    OpsClient,
    Reference,
    Resolution,
    ResolvedBlock,
    resolution_from_response,
)
from secrets_client.errors import (
    AlreadyExists,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    RevisionConflict,
    SecretsError,
    Unauthenticated,
    Unavailable,
)
from secrets_client.grants import OrchestratorClient, RunGrant
from secrets_client.redact import MIN_MASKED_LENGTH, RedactingFilter, Redactor

__all__ = [
    "MIN_MASKED_LENGTH",
    "AlreadyExists",
    "BlockError",
    "DataLoss",
    "DeadlineExceeded",
    "DirectoryClient",
    "EditorClient",
    "ExecutorClient",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "OpsClient",
    "OrchestratorClient",
    "PermissionDenied",
    "RedactingFilter",
    "Redactor",
    "Reference",
    "Resolution",
    "ResolvedBlock",
    "ResourceExhausted",
    "RevisionConflict",
    "RunGrant",
    "SecretsError",
    "Unauthenticated",
    "Unavailable",
    "resolution_from_response",
]
