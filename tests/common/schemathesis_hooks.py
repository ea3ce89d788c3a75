"""Schemathesis hooks for tests/contract.rs.

The fuzzing admin may create, change and delete any account but its own:
demoting, deactivating or renaming itself (allowed once the fuzzer has
created another admin) would turn the rest of the run into 401s and 403s.
Such a request is sent to an id no account has instead, and answered 404.

Creating an API key needs the caller's password, which a fuzzer cannot
guess: a request that sends a well-formed one gets the fuzzing account's own,
so the operation is tested past its password check. (A malformed one is left
alone, so schema-invalid requests stay invalid.)

A request whose only flaw is an extra header it made up is not generated:
HTTP recipients ignore header fields they do not know (RFC 9110 §5.1), so
the server rightly accepts it, while Schemathesis reads the documented header
parameters as a closed object and would expect a rejection.
"""

import os

import schemathesis

PROTECTED_ID = os.environ.get("TESSERA_FUZZ_PROTECTED_ID")
PASSWORD = os.environ.get("TESSERA_FUZZ_PASSWORD")
MAX_PRESENTED_PASSWORD_CHARS = 1024
# The names Schemathesis gives a property it adds to a closed object.
MADE_UP_HEADERS = {"x-schemathesis-unknown-property", "schemathesis-unknown-property", "unknown-property-0"}


@schemathesis.hook
def filter_case(ctx, case):
    headers = {name.lower() for name in (case.headers or {})}
    return not headers & MADE_UP_HEADERS
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
    if (
        PASSWORD
        and case.operation.path == "/api/v1/auth/api-keys"
        and case.method.upper() == "POST"
        and isinstance(case.body, dict)
        and isinstance(case.body.get("current_password"), str)
        and len(case.body["current_password"]) <= MAX_PRESENTED_PASSWORD_CHARS
    ):
        case.body["current_password"] = PASSWORD
