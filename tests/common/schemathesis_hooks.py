"""Schemathesis hooks for tests/contract.rs.

The fuzzing admin may create, change and delete any account but its own:
demoting, deactivating or renaming itself (allowed once the fuzzer has
created another admin) would turn the rest of the run into 401s and 403s.
Such a request is sent to an id no account has instead, and answered 404.
"""

import os

import schemathesis

PROTECTED_ID = os.environ.get("TESSERA_FUZZ_PROTECTED_ID")
NO_SUCH_ACCOUNT = "00000000-0000-7000-8000-000000000000"


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    if (
        PROTECTED_ID
        and case.operation.path == "/api/v1/users/{id}"
        and case.method.upper() in ("PATCH", "DELETE")
        and case.path_parameters
        and str(case.path_parameters.get("id", "")).lower() == PROTECTED_ID.lower()
    ):
        case.path_parameters["id"] = NO_SUCH_ACCOUNT
