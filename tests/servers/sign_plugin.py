"""Signs a .difypkg the way the plugin daemon's signer does, independently of dify-bundle.

usage: sign_plugin.py IN OUT KEY_OUT_PREFIX [CATEGORY]

Follows `SignPluginWithPrivateKey` in langgenius/dify-plugin-daemon
`pkg/plugin_packager/signer/withkey/sign_with_key.go` (tags 0.5.3 and 0.6.10):
- every record of IN is walked in central-directory order, duplicates included, read back by
  name (Go's `zip.Reader.Open` gives the first record of a name), hashed and written to OUT;
- with CATEGORY, `.verification.dify.json` = `{"authorized_category":CATEGORY}` (Go's compact
  `json.Marshal`) is written as the last record and its sha256 appended after the others;
  without it no record is written (0.6.10's signer takes a nil verification);
- then the signing time in decimal; RSA PKCS#1 v1.5 / SHA-256 over those bytes; the comment is
  `{"signature":BASE64,"time":N}`.
A re-signed package that already holds a verification record therefore carries two, as the
marketplace's do.

Writes a fresh RSA key (KEY_OUT_PREFIX.private.pem, KEY_OUT_PREFIX.public.pem in PKCS#1), unless
KEY_OUT_PREFIX.private.pem exists, in which case that key signs.
"""
import base64
import hashlib
import json
import os
import sys
import time
import warnings
import zipfile

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

src, dst, prefix = sys.argv[1:4]
category = sys.argv[4] if len(sys.argv) > 4 else None

if os.path.exists(prefix + ".private.pem"):
    with open(prefix + ".private.pem", "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
else:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with open(prefix + ".private.pem", "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
    with open(prefix + ".public.pem", "wb") as f:
        f.write(
            key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
            .strip()
        )

warnings.simplefilter("ignore")  # zipfile warns on duplicate names; Go's writer does not care
signed = b""
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
    first = {}
    for info in zin.infolist():
        first.setdefault(info.filename, info)
    for info in zin.infolist():
        data = zin.read(first[info.filename])
        signed += hashlib.sha256(data).digest()
        zout.writestr(info.filename, data)
    if category is not None:
        record = json.dumps({"authorized_category": category}, separators=(",", ":")).encode()
        zout.writestr(".verification.dify.json", record)
        signed += hashlib.sha256(record).digest()
    when = int(os.environ.get("SIGN_TIME", time.time()))
    signed += str(when).encode()
    signature = key.sign(signed, padding.PKCS1v15(), hashes.SHA256())
    zout.comment = json.dumps(
        {"signature": base64.b64encode(signature).decode(), "time": when},
        separators=(",", ":"),
    ).encode()
