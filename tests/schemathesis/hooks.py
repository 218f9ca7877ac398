"""Schemathesis hooks for scripts/schemathesis.sh (named by `hooks` in schemathesis.toml).

Three things a schema cannot say or a client library cannot do, and nothing else:

1. The WebSocket operations (`/api/v1/chat/ws`, `/api/v1/live/ws`, `/api/live_chat/ws`, …) answer
   a valid handshake with `101 Switching Protocols`, after which the connection speaks WebSocket.
   `requests` does not know that: it would put the connection back into its pool and send the
   next test case's HTTP request into the socket, where it waits forever. So a connection that
   answered 101 is closed as soon as the response is read, and the pool opens a fresh one.
   Nothing about the request or the response changes: schemathesis still checks the 101.

2. A multipart part whose value is an empty list is not sent at all (a list is its part
   repeated), so a negative test that breaks a part's name (`propertyNames`) with an empty list as
   its value sends a valid request; its acceptance is not a failure.

3. A schema cannot say that an id must name something that exists, that a password must be the
   right one, or that base64 must hold a real image or real speech. A schema-valid request that
   names nothing, or that sends media the fuzzer cannot make, is refused with one of the texts
   below (a 400, AstrBot's status and text for most of them), and "schema-valid request
   rejected" (ST202) is then not a failure. Every other refusal of a schema-valid request still
   is, and every other check applies to these responses as to any other. Schemathesis counts and
   prints the failures dropped here.
"""

import re

import requests.adapters
import schemathesis

_build_response = requests.adapters.HTTPAdapter.build_response


def _build_response_closing_upgrades(self, req, resp):
    response = _build_response(self, req, resp)
    if response.status_code == 101:
        connection = getattr(resp, "connection", None)
        if connection is not None:
            connection.close()
    return response


requests.adapters.HTTPAdapter.build_response = _build_response_closing_upgrades


NOT_A_SCHEMA_MATTER = re.compile(
    "|".join(
        [
            # An id that names nothing the caller may use.
            r"attachment not found: ",
            r"reply message not found: ",
            r"config_id not found: ",
            r"config_name not found: ",
            r"selected_provider not found: ",
            r"Bot not found or not running for platform: ",  # an IM platform id not configured
            r"Last-Event-ID belongs to another run$",  # an event id of another run than the one resumed
            # The account's current password: the harness never gives it to the fuzzer.
            r"原密码错误$",
            # A message id that names a message, but not one this operation applies to (AstrBot's
            # ChatUI rules: only the latest question is edited, only the latest answer regenerated).
            r"Message does not belong to the session$",
            r"Message type cannot be changed$",
            r"Only user messages can be edited$",
            r"Only the latest user message can be edited$",
            r"This message is not linked to LLM history and cannot be edited$",
            r"Only bot messages can be regenerated$",
            r"Message is not linked to LLM history$",
            r"Linked user message not found$",
            r"Regenerating older turns requires branching$",
            # Media the fuzzer cannot make: base64 that decodes, but not to an image or to speech.
            r"messages\[\d+\] is not a recognised image$",
            r"image data URL does not hold an image$",
            r".*: (?:unrecognised audio format|(?:corrupt|unsupported) \S+ audio: .*|no speech was recognised)$",
        ]
    )
)


def _message(response):
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    message = body.get("message")
    if message is None and isinstance(body.get("error"), dict):
        message = body["error"].get("message")  # the OpenAI door's error object
    return message if isinstance(message, str) else None


# What a multipart part name may not hold (see the upload operations' `propertyNames`).
_BAD_PART_NAME = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _unsent_bad_part_names(case):
    body = case.body
    if not (case.media_type or "").startswith("multipart/") or not isinstance(body, dict):
        return False
    bad = [name for name in body if _BAD_PART_NAME.search(name)]
    return bool(bad) and all(body[name] == [] for name in bad)


@schemathesis.hook
def filter_failure(context, failure, case, response):
    if failure.code == "ST201" and _unsent_bad_part_names(case):
        return False
    if failure.code != "ST202" or response.status_code != 400:
        return True
    message = _message(response)
    return message is None or NOT_A_SCHEMA_MATTER.match(message) is None
