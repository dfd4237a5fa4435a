#!/usr/bin/env python3
"""A Docker-Hub-like token server for tests, on 127.0.0.1.

GET /token?service=S&scope=repository:NAME:ACTIONS returns a JWT signed with RS256 and an
x5c header, as Docker Hub's auth.docker.io does. Anonymous callers get `pull` only; callers
with the Basic credentials given on the command line get every action they ask for. The
self-signed certificate is written to --cert-out for the registry's rootcertbundle.
"""

import argparse
import base64
import datetime
import http.server
import json
import os
import time
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_key_and_cert():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test token issuer")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert-out", required=True)
    parser.add_argument("--issuer", default="test-issuer")
    parser.add_argument("--user", default="")
    parser.add_argument("--password", default="")
    parser.add_argument("--expires-in", type=int, default=300)
    args = parser.parse_args()

    key, cert = make_key_and_cert()
    tmp = args.cert_out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    os.rename(tmp, args.cert_out)
    x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
    expected_auth = "Basic " + base64.b64encode(f"{args.user}:{args.password}".encode()).decode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            url = urllib.parse.urlparse(self.path)
            if url.path != "/token":
                self.send_error(404)
                return
            query = urllib.parse.parse_qs(url.query)
            auth = self.headers.get("Authorization")
            authenticated = bool(args.user) and auth == expected_auth
            if auth and not authenticated:
                self.send_response(401)
                self.end_headers()
                return
            access = []
            for scope in query.get("scope", []):
                for one in scope.split(" "):
                    parts = one.split(":")
                    if len(parts) != 3 or parts[0] != "repository":
                        continue
                    wanted = parts[2].split(",")
                    granted = wanted if authenticated else [a for a in wanted if a == "pull"]
                    access.append({"type": "repository", "name": parts[1], "actions": granted})
            now = int(time.time())
            header = {"typ": "JWT", "alg": "RS256", "x5c": [x5c]}
            claims = {
                "iss": args.issuer,
                "sub": args.user if authenticated else "",
                "aud": query.get("service", [""])[0],
                "exp": now + args.expires_in,
                "nbf": now - 10,
                "iat": now,
                "jti": b64url(os.urandom(12)),
                "access": access,
            }
            signing_input = (
                b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
            )
            signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
            token = signing_input + "." + b64url(signature)
            body = json.dumps(
                {
                    "token": token,
                    "access_token": token,
                    "expires_in": args.expires_in,
                    "issued_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.serve_forever()


if __name__ == "__main__":
    main()
