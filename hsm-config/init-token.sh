#!/usr/bin/env bash
# Creates (once) a SoftHSM2 token for Countersign and prints where it is.
#
# Idempotent: a second run with the same label finds the token and creates nothing.
#
# Environment (defaults are for development only; a real deployment sets its own PINs):
#   COUNTERSIGN_HSM_DIR        token directory and softhsm2.conf        (default: <repo>/.hsm)
#   COUNTERSIGN_TOKEN_LABEL    token label                              (default: countersign)
#   COUNTERSIGN_HSM_SO_PIN     security officer PIN, at least 4 chars   (default: countersign-so-dev)
#   COUNTERSIGN_HSM_PIN        user PIN, at least 4 chars               (default: countersign-dev)
#   COUNTERSIGN_PKCS11_MODULE  PKCS#11 module                           (default: /usr/lib/softhsm/libsofthsm2.so)
#
# Output: shell assignments on stdout (never a PIN), ready for `eval` or a Makefile:
#   SOFTHSM2_CONF=…  COUNTERSIGN_PKCS11_MODULE=…  COUNTERSIGN_TOKEN_LABEL=…
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
hsm_dir="${COUNTERSIGN_HSM_DIR:-$repo/.hsm}"
label="${COUNTERSIGN_TOKEN_LABEL:-countersign}"
so_pin="${COUNTERSIGN_HSM_SO_PIN:-countersign-so-dev}"
user_pin="${COUNTERSIGN_HSM_PIN:-countersign-dev}"
module="${COUNTERSIGN_PKCS11_MODULE:-/usr/lib/softhsm/libsofthsm2.so}"

fail() { echo "init-token: $*" >&2; exit 1; }

command -v softhsm2-util >/dev/null || fail "softhsm2-util not found; run 'make setup' (apt-get install softhsm2)"
[ -f "$module" ] || fail "no PKCS#11 module at $module; set COUNTERSIGN_PKCS11_MODULE"
[ "${#so_pin}" -ge 4 ] || fail "COUNTERSIGN_HSM_SO_PIN must be at least 4 characters"
[ "${#user_pin}" -ge 4 ] || fail "COUNTERSIGN_HSM_PIN must be at least 4 characters"
[ "${#label}" -le 32 ] || fail "token label '$label' is longer than PKCS#11's 32 characters"

mkdir -p "$hsm_dir/tokens"
chmod 700 "$hsm_dir"
hsm_dir="$(cd "$hsm_dir" && pwd)"
conf="$hsm_dir/softhsm2.conf"
sed "s|@TOKEN_DIR@|$hsm_dir/tokens|" "$here/softhsm2.conf.template" > "$conf.tmp"
mv "$conf.tmp" "$conf"
export SOFTHSM2_CONF="$conf"

# softhsm2-util pads labels with blanks; compare the trimmed value exactly.
existing="$(softhsm2-util --show-slots 2>/dev/null \
  | sed -n 's/^[[:space:]]*Label:[[:space:]]*//p' | sed 's/[[:space:]]*$//' | grep -cxF -- "$label" || true)"

if [ "$existing" -gt 1 ]; then
  fail "$existing tokens are labelled '$label' in $hsm_dir/tokens; remove the extra ones"
elif [ "$existing" -eq 1 ]; then
  echo "init-token: token '$label' already exists in $hsm_dir/tokens" >&2
else
  if [ -z "${COUNTERSIGN_HSM_PIN:-}" ] || [ -z "${COUNTERSIGN_HSM_SO_PIN:-}" ]; then
    echo "init-token: using the development default PINs; set COUNTERSIGN_HSM_PIN and COUNTERSIGN_HSM_SO_PIN for anything else" >&2
  fi
  softhsm2-util --init-token --free --label "$label" --so-pin "$so_pin" --pin "$user_pin" >/dev/null \
    || fail "softhsm2-util could not initialize token '$label'"
  echo "init-token: created token '$label' in $hsm_dir/tokens" >&2
fi

printf 'SOFTHSM2_CONF=%q\n' "$conf"
printf 'COUNTERSIGN_PKCS11_MODULE=%q\n' "$module"
printf 'COUNTERSIGN_TOKEN_LABEL=%q\n' "$label"
