#!/usr/bin/env python3
"""Independent test vectors for Feishu's payload encryption and signature.

Made with Python's `cryptography` (the library Feishu's own Python SDK uses)
and hashlib, not with the Rust code under test. The IVs are fixed so the
output is deterministic: `gen.py --check` regenerates and compares with the
committed file, which the Rust unit tests read.
"""
import base64
import hashlib
import json
import os
import sys

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "feishu_crypto.json")
SEED = os.path.join(HERE, "..", "fixtures", "seed_sample.json")


def encrypt(key: str, plaintext: bytes, iv: bytes) -> str:
    aes_key = hashlib.sha256(key.encode("utf-8")).digest()
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    enc = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).encryptor()
    return base64.b64encode(iv + enc.update(padded) + enc.finalize()).decode("ascii")


def sign(timestamp: str, nonce: str, key: str, body: bytes) -> str:
    return hashlib.sha256(timestamp.encode() + nonce.encode() + key.encode() + body).hexdigest()


def vectors():
    with open(SEED, "rb") as f:
        seed = f.read().strip()
    cases = [
        ("seed sample", "test key", seed),
        ("challenge", "kudryavka", b'{"challenge":"ajls384kdjx98XX","token":"xxxxxx","type":"url_verification"}'),
        ("cjk and emoji", "\u5bc6\u94a5 key \U0001F511", '{"name":"\u7fa4\u804a \U0001F389","i18n":"\u30b0\u30eb\u30fc\u30d7"}'.encode("utf-8")),
        ("exactly one block", "k", b'{"a":"12345678"}'),
        ("empty key", "", b'{"schema":"2.0"}'),
        ("long", "long key " * 20, json.dumps({"users": [{"name": "u%d" % i} for i in range(200)]}).encode()),
    ]
    out = []
    for i, (name, key, plain) in enumerate(cases):
        iv = bytes((i * 16 + j) % 256 for j in range(16))
        encrypted = encrypt(key, plain, iv)
        body = json.dumps({"encrypt": encrypted}, separators=(",", ":")).encode()
        ts, nonce = str(1700000000 + i), "nonce-%d" % i
        out.append({
            "name": name,
            "encrypt_key": key,
            "plaintext": plain.decode("utf-8"),
            "encrypt": encrypted,
            "body": body.decode("ascii"),
            "timestamp": ts,
            "nonce": nonce,
            "signature": sign(ts, nonce, key, body),
        })
    return out


def main():
    text = json.dumps(vectors(), ensure_ascii=False, indent=2) + "\n"
    if "--check" in sys.argv:
        with open(OUT, encoding="utf-8") as f:
            if f.read() != text:
                sys.exit("tests/vectors/feishu_crypto.json is stale: run tests/vectors/gen.py")
        print("crypto vectors: up to date")
    else:
        with open(OUT, "w", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main()
