"""Reads what the server signed the way an agent's Python tooling reads what it sent, and compares.

Usage: differential.py <cases.jsonl>
Each line is {"body": base64 of the AUTHORIZE body's bytes, "agent": id, "jws": compact JWS}: a body the
server authorized. For each, Python's json module reads the body (as an agent's tooling would) and the
signed claims must say exactly that: the merchant (aud), the amount (an int, never a float), the currency,
the category, the agent (sub), and the intent hash over the intent Python read, every member included.
Prints a summary line and the first mismatches; exits 1 if there is any.
"""
import base64
import hashlib
import json
import sys


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def without_nulls(value):
    """docs/protocol.md: a member whose value is null is absent, and absent members are not in the canonical form."""
    if isinstance(value, dict):
        return {key: without_nulls(member) for key, member in value.items() if member is not None}
    if isinstance(value, list):
        return [without_nulls(element) for element in value]
    return value


def canonical(value):
    # Keys sorted by code point (the same order as by UTF-8 bytes), no whitespace, non-ASCII as UTF-8;
    # json.dumps escapes exactly '"', '\\' and U+0000-U+001F, as docs/protocol.md's canonical JSON does.
    return json.dumps(without_nulls(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def check(case):
    body = base64.b64decode(case["body"])
    try:
        request = json.loads(body.decode("utf-8"))
    except Exception as error:  # the server signed what Python cannot even read
        return f"Python cannot read a signed body: {error}"
    claims = json.loads(b64url_decode(case["jws"].split(".")[1]))
    problems = []
    amount = request.get("amount")
    if type(amount) is not int:
        problems.append(f"amount is {type(amount).__name__} {amount!r} to Python, signed {claims['amount']!r}")
    expected = {
        "aud": request.get("merchant_id"),
        "amount": amount,
        "currency": request.get("currency"),
        "mcc": request.get("merchant_category_code"),
        "sub": case["agent"],
        "intent_hash": b64url(hashlib.sha256(canonical(request.get("intent"))).digest()),
    }
    for claim, value in expected.items():
        if claims.get(claim) != value:
            problems.append(f"{claim}: Python reads {value!r}, the server signed {claims.get(claim)!r}")
    return "; ".join(problems) or None


def main():
    mismatches = []
    count = 0
    with open(sys.argv[1], encoding="utf-8") as cases:
        for line in cases:
            case = json.loads(line)
            count += 1
            problem = check(case)
            if problem:
                mismatches.append({"body": base64.b64decode(case["body"]).decode("utf-8", "replace"), "problem": problem})
    print(json.dumps({"checked": count, "mismatches": len(mismatches), "first": mismatches[:10]}, ensure_ascii=False))
    sys.exit(1 if mismatches else 0)


main()
