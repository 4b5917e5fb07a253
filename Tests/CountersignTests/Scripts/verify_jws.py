"""Verify a Countersign authorization the way a merchant would, with a JOSE library nobody here wrote.

Usage: verify_jws.py <jwks-url> <compact-jws>
Fetches the JWKS over HTTP, verifies the ES256 signature with joserfc, checks the amount against the
key's published max_amount, and prints the header and claims as JSON.
"""
import json
import sys
import urllib.request

from joserfc import jws
from joserfc.jwk import KeySet

url, token = sys.argv[1], sys.argv[2]
with urllib.request.urlopen(url, timeout=10) as response:
    key_set_json = json.load(response)
key_set = KeySet.import_key_set(key_set_json)
verified = jws.deserialize_compact(token, key_set, algorithms=["ES256"])
claims = json.loads(verified.payload)
header = verified.headers()
jwk = next(key for key in key_set_json["keys"] if key["kid"] == header["kid"])
if claims["amount"] > jwk["max_amount"][claims["currency"]]:
    sys.exit("amount above the key's max_amount")
print(json.dumps({"header": header, "claims": claims}, sort_keys=True))
