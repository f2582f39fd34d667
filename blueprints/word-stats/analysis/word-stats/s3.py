#!/usr/bin/env python3
"""A tiny S3 client (standard library only): get and put objects with Signature Version 4.

Usage: s3.py get BUCKET KEY FILE | s3.py put BUCKET KEY FILE

Credentials, region and endpoint come from the environment as the AWS tools read them
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION or AWS_DEFAULT_REGION,
AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL). Addressing is path-style.
"""
import datetime
import hashlib
import hmac
import os
import sys
import urllib.parse
import urllib.request


def _sign(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def request(method, bucket, key, body=b""):
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") \
        or f"https://s3.{region}.amazonaws.com"
    access, secret = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
    url = urllib.parse.urlsplit(endpoint)
    path = "/" + urllib.parse.quote(bucket, safe="") + "/" + urllib.parse.quote(key, safe="/~")
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload = hashlib.sha256(body).hexdigest()
    headers = {"host": url.netloc, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
    if os.environ.get("AWS_SESSION_TOKEN"):
        headers["x-amz-security-token"] = os.environ["AWS_SESSION_TOKEN"]
    signed = ";".join(sorted(headers))
    canonical = "\n".join([method, path, "", *(f"{k}:{headers[k]}" for k in sorted(headers)), "", signed, payload])
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    k = _sign(_sign(_sign(_sign(("AWS4" + secret).encode(), day), region), "s3"), "aws4_request")
    signature = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={access}/{scope}, "
                                f"SignedHeaders={signed}, Signature={signature}")
    req = urllib.request.Request(f"{url.scheme}://{url.netloc}{path}", data=body if method == "PUT" else None,
                                 method=method, headers=headers)
    with urllib.request.urlopen(req) as resp:
        return resp.read()


def main(argv):
    if len(argv) != 5 or argv[1] not in ("get", "put"):
        sys.exit(__doc__)
    _, verb, bucket, key, path = argv
    if verb == "get":
        data = request("GET", bucket, key)
        with open(path, "wb") as f:
            f.write(data)
    else:
        with open(path, "rb") as f:
            request("PUT", bucket, key, f.read())


if __name__ == "__main__":
    main(sys.argv)
