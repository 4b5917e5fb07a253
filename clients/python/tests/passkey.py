"""A passkey in software, made with python-fido2's data types: what a browser's authenticator answers, under the
test's control (counter, flags, origin), and an HTTP session with the approvals console as its page script talks to it."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from fido2.cose import ES256
from fido2.utils import sha256, websafe_decode, websafe_encode
from fido2.webauthn import Aaguid, AttestationObject, AttestedCredentialData, AuthenticatorData, CollectedClientData

UP, UV, AT = AuthenticatorData.FLAG.UP, AuthenticatorData.FLAG.UV, AuthenticatorData.FLAG.AT


class SoftPasskey:
    def __init__(self, rp_id: str = "localhost") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.credential_id = os.urandom(32)
        self.rp_id = rp_id
        self.counter = 0

    def register(self, options: dict[str, Any], origin: str, token: str) -> dict[str, Any]:
        public = options["publicKey"]
        client = CollectedClientData.create(type=CollectedClientData.TYPE.CREATE, challenge=websafe_decode(public["challenge"]), origin=origin)
        attested = AttestedCredentialData.create(Aaguid.NONE, self.credential_id, ES256.from_cryptography_key(self.key.public_key()))
        data = AuthenticatorData.create(sha256(self.rp_id.encode()), UP | UV | AT, self.counter, attested)
        attestation = AttestationObject.create("none", data, {})
        return {
            "ceremony": options["ceremony"],
            "token": token,
            "id": websafe_encode(self.credential_id),
            "response": {"clientDataJSON": websafe_encode(bytes(client)), "attestationObject": websafe_encode(bytes(attestation))},
        }

    def assertion(self, options: dict[str, Any], origin: str, flags: int = UP | UV, counter: int | None = None) -> dict[str, Any]:
        public = options["publicKey"]
        self.counter = self.counter + 1 if counter is None else counter
        client = CollectedClientData.create(type=CollectedClientData.TYPE.GET, challenge=websafe_decode(public["challenge"]), origin=origin)
        data = AuthenticatorData.create(sha256(self.rp_id.encode()), flags, self.counter)
        signature = self.key.sign(bytes(data) + client.hash, ec.ECDSA(hashes.SHA256()))
        return {
            "ceremony": options["ceremony"],
            "id": websafe_encode(self.credential_id),
            "response": {
                "clientDataJSON": websafe_encode(bytes(client)),
                "authenticatorData": websafe_encode(bytes(data)),
                "signature": websafe_encode(signature),
            },
        }


class Browser:
    """The console as its own pages use it: a session cookie, the page's CSRF token, the console's Origin header."""

    def __init__(self, port: int, origin: str, source: str = "127.0.0.1") -> None:
        self.port = port
        self.origin = origin
        # Another loopback address is another client for the server's rate limits.
        self.source = source
        self.cookie: str | None = None
        self.csrf: str | None = None

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20, source_address=(self.source, 0))
        sent = {"Host": f"localhost:{self.port}"}
        if body is not None:
            sent["Content-Type"] = "application/json"
        if method == "POST":
            sent["Origin"] = self.origin
            if self.csrf:
                sent["X-CSRF-Token"] = self.csrf
        if self.cookie:
            sent["Cookie"] = self.cookie
        sent.update(headers or {})
        connection.request(method, path, body=None if body is None else json.dumps(body), headers=sent)
        response = connection.getresponse()
        data = response.read()
        answer = {name.lower(): value for name, value in response.getheaders()}
        for name, value in response.getheaders():
            if name.lower() == "set-cookie" and value.startswith("countersign_session="):
                pair = value.split(";", 1)[0]
                self.cookie = None if pair.split("=", 1)[1] == "" else pair
        connection.close()
        return response.status, answer, data

    def post(self, path: str, body: Any = None, **headers: str) -> tuple[int, dict[str, Any]]:
        status, _, data = self.request("POST", path, body if body is not None else {}, headers)
        return status, (json.loads(data) if data else {})

    def page(self, path: str) -> tuple[int, str]:
        status, _, data = self.request("GET", path)
        text = data.decode()
        marker = '<meta name="csrf-token" content="'
        if marker in text:
            self.csrf = text.split(marker, 1)[1].split('"', 1)[0]
        return status, text

    def enroll(self, link: str, passkey: SoftPasskey) -> dict[str, Any]:
        token = link.split("#", 1)[1]
        status, options = self.post("/console/api/enroll/options", {"token": token})
        assert status == 200, options
        status, done = self.post("/console/api/enroll", passkey.register(options, self.origin, token))
        assert status == 200, done
        return done

    def sign_in(self, principal: str, passkey: SoftPasskey) -> dict[str, Any]:
        status, options = self.post("/console/api/login/options", {"principal": principal})
        assert status == 200, options
        status, done = self.post("/console/api/login", passkey.assertion(options, self.origin))
        assert status == 200, done
        self.page(done["redirect"])
        return done


def enrollment_link(server: Any, principal: str, role: str | None = None) -> str:
    arguments = ["approvers", "enroll", principal] + (["--role", role] if role else [])
    env = dict(server.env, COUNTERSIGN_CREDENTIAL=str(server.admin))
    done = subprocess.run([str(server_binary(server)), *arguments], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def server_binary(server: Any) -> Any:
    from .conftest import BIN

    return BIN / "countersign"
