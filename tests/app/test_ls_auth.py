"""Label Studio tokens without a server: the kind told from the form, the access token renewed before its
expiry, and the token never sent to another host across a redirect (the presign route's 303)."""

from __future__ import annotations

import base64
import http.server
import json

import pytest

from instaseg.app.ls_auth import ACCESS, LEGACY, PAT, TokenAuth, token_kind
from instaseg.app.ls_client import LabelStudioClient, LabelStudioError, presign_path
from instaseg.formats.labelstudio_images import image_reference

from .backend_fuzz import serve_handler


def jwt(claims: dict) -> str:
    part = lambda obj: base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")  # noqa: E731
    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


def test_token_kinds():
    assert token_kind(jwt({"token_type": "refresh", "exp": 4102444800})) == PAT
    assert token_kind(jwt({"token_type": "access", "exp": 4102444800})) == ACCESS
    assert token_kind("0123456789abcdef0123456789abcdef01234567") == LEGACY
    assert token_kind("a.b.c") == LEGACY  # three parts but no JSON payload


def test_access_token_renewed_before_expiry_and_on_demand():
    now = [1000.0]
    issued = []

    def exchange(refresh: str) -> str:
        issued.append(jwt({"token_type": "access", "exp": now[0] + 300, "n": len(issued)}))
        return issued[-1]

    auth = TokenAuth(jwt({"token_type": "refresh", "exp": 10**10}), exchange, clock=lambda: now[0])
    assert auth.header() == f"Bearer {issued[0]}"
    now[0] += 200
    assert auth.header() == f"Bearer {issued[0]}" and len(issued) == 1  # still valid: no exchange
    now[0] += 80  # 20 s before exp, inside the renewal margin
    assert auth.header() == f"Bearer {issued[1]}"
    assert auth.header(renew=True) == f"Bearer {issued[2]}"  # after a 401
    assert TokenAuth("0123456789abcdef0123456789abcdef01234567", exchange).header().startswith("Token ")


def test_expired_pat_is_refused_without_a_request():
    client = LabelStudioClient("http://127.0.0.1:9", jwt({"token_type": "refresh", "exp": 1}))
    with pytest.raises(LabelStudioError, match="refused the Personal Access Token.*Personal Access Token"):
        client.project(1)


def test_token_not_sent_across_a_redirect_to_another_host():
    seen = {}

    class Bucket(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen["bucket"] = self.headers.get("Authorization")
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"PIXELS")

        def log_message(self, *args):
            pass

    with serve_handler(Bucket) as bucket:

        class LabelStudio(Bucket):
            def do_GET(self):
                seen["label_studio"] = self.headers.get("Authorization"), self.path
                self.send_response(303)
                self.send_header("Location", f"{bucket}/photos/a.png?X-Amz-Signature=abc")
                self.end_headers()

        with serve_handler(LabelStudio) as url:
            client = LabelStudioClient(url, "0123456789abcdef0123456789abcdef01234567")
            assert client.download("s3://b/photos/a.png", task=7) == b"PIXELS"
    authorization, path = seen["label_studio"]
    assert authorization == "Token 0123456789abcdef0123456789abcdef01234567"
    assert path == presign_path(7, "s3://b/photos/a.png") and path.startswith("/tasks/7/presign/?fileuri=")
    assert image_reference(url + path) == ("s3://b/photos/a.png", True)
    assert seen["bucket"] is None
    with pytest.raises(LabelStudioError, match="needs its task's id"):
        client.download("s3://b/photos/a.png")
