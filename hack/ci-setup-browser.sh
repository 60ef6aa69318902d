#!/usr/bin/env bash
# Installs the browser the console's tests drive: Debian's chromium (headless), which
# Playwright (a Python test dependency) launches by path. Playwright's own browser
# download (`playwright install`) is never used. Idempotent: instant when installed.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
echo "[ci-setup-browser] installing chromium (apt)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
/usr/bin/chromium --version
