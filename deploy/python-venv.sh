#!/usr/bin/env bash
# Makes VENV a Python virtualenv with exactly REQUIREMENTS (a lock file of
# deploy/pip-lock.sh: versions and hashes) installed, rebuilding it when
# the file changed since; a no-op when it is already so. Used by
# deploy/test.sh (the researcher client's packages), deploy/k8s/validate.sh,
# deploy/tools.sh, bench/utility.sh and bench/aggregate.sh.
#
#   deploy/python-venv.sh VENV REQUIREMENTS "what it is for"
set -euo pipefail
if [ "$#" -ne 3 ]; then
  echo "usage: deploy/python-venv.sh VENV REQUIREMENTS WHAT" >&2
  exit 2
fi
venv=$1 requirements=$2 what=$3
if [ -x "$venv/bin/python" ] && cmp -s "$requirements" "$venv/requirements.txt"; then
  exit 0
fi
echo "python-venv: creating $venv ($what) from $requirements"
rm -rf "$venv"
python3 -m venv "$venv"
# Every file pinned by its hash (deploy/pip-lock.sh writes the locks):
# a package not in the lock, or a file that changed on the index, fails.
"$venv/bin/pip" install -q --disable-pip-version-check --require-hashes -r "$requirements"
cp "$requirements" "$venv/requirements.txt"
