"""``replace_push_urls``: webhook URLs swapped for relay URLs, message content untouched."""

from __future__ import annotations

import json

from adapters.a2a import parse_a2a, replace_push_urls

HOOK = "https://hooks.example.com/n"
RELAY = "https://gw.example/push/abc"


def _swap(body: dict[str, object], path: str = "/") -> dict[str, object]:
    raw = json.dumps(body).encode()
    call = parse_a2a(
        raw, http_method="POST", path=path, headers={"a2a-version": "1.0"}, max_depth=64
    )
    assert call.push_urls == (HOOK,)
    out = replace_push_urls(raw, {HOOK: RELAY}, max_depth=64)
    again = parse_a2a(
        out, http_method="POST", path=path, headers={"a2a-version": "1.0"}, max_depth=64
    )
    assert again.push_urls == (RELAY,)
    return json.loads(out)


def test_send_message_config_is_swapped_but_a_file_part_with_the_same_url_is_not() -> None:
    message = {"messageId": "m", "role": "ROLE_USER", "parts": [{"url": HOOK}]}
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "SendMessage",
        "params": {
            "message": message,
            "configuration": {"taskPushNotificationConfig": {"url": HOOK, "token": "t"}},
        },
    }
    out = _swap(body)
    params = out["params"]
    assert params["configuration"]["taskPushNotificationConfig"] == {"url": RELAY, "token": "t"}  # type: ignore[index]
    assert params["message"] == message  # type: ignore[index]


def test_rest_push_config_create_is_swapped() -> None:
    out = _swap({"url": HOOK, "token": "t"}, "/rest/tasks/t-1/pushNotificationConfigs")
    assert out == {"url": RELAY, "token": "t"}


def test_no_replacements_returns_the_same_bytes() -> None:
    raw = b'{"a": 1}'
    assert replace_push_urls(raw, {}, max_depth=64) is raw
