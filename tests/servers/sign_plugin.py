"""Signs a .difypkg the way Dify's tooling does, independently of dify-bundle.

usage: sign_plugin.py IN OUT KEY_OUT_PREFIX
Writes a fresh RSA key (KEY_OUT_PREFIX.private.pem, KEY_OUT_PREFIX.public.pem in PKCS#1) and
OUT: IN's files, zipped again in the same order, with the signature in the zip comment.
"""
import hashlib
import base64
import json
import sys
import zipfile

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

src, dst, prefix = sys.argv[1:4]
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
with open(prefix + ".public.pem", "wb") as f:
    f.write(
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
        .strip()
    )
signed = b""
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
    for info in zin.infolist():
        if info.is_dir():
            continue
        data = zin.read(info.filename)
        signed += hashlib.sha256(data).digest()
        zout.writestr(info.filename, data)
    when = 1760000000
    signed += str(when).encode()
    signature = key.sign(signed, padding.PKCS1v15(), hashes.SHA256())
    zout.comment = json.dumps(
        {"signature": base64.b64encode(signature).decode(), "time": when}
    ).encode()
