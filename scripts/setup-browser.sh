#!/usr/bin/env bash
# Installs what the processor's browser test needs (processor/tests/browser.rs), and
# nothing that is already there: Chromium from Debian (`/usr/bin/chromium`) and the pinned
# `playwright-core` npm package (processor/tests/browser/package.json + package-lock.json)
# into processor/tests/browser/node_modules. Playwright drives the system Chromium over CDP;
# it downloads no browser of its own. Safe to run again: it only acts on what is missing.
#
# Needs: Debian/Ubuntu with apt (root, or sudo, only if Chromium is missing), Node.js >= 20
# with npm, and access to the npm registry.
#
# Environment: CHROMIUM (default /usr/bin/chromium) to use another Chromium binary.
set -euo pipefail
cd "$(dirname "$0")/.."
BROWSER_DIR=processor/tests/browser
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

if [ -x "$CHROMIUM" ]; then
  echo "setup-browser: chromium present: $CHROMIUM"
else
  echo "setup-browser: installing chromium (Debian package)"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup-browser: need root or sudo to apt-get install chromium" >&2; exit 2; }
    SUDO=sudo
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y --no-install-recommends chromium \
    || { $SUDO apt-get update && $SUDO apt-get install -y --no-install-recommends chromium; }
fi

command -v node >/dev/null || { echo "setup-browser: node (Node.js >= 20) is missing" >&2; exit 2; }
command -v npm >/dev/null || { echo "setup-browser: npm is missing" >&2; exit 2; }

# The wanted version, from package.json (the one place it is pinned).
WANT=$(node -e 'console.log(require(process.argv[1]).dependencies["playwright-core"])' "$PWD/$BROWSER_DIR/package.json")
HAVE=$(node -e 'try { console.log(require(process.argv[1]).version) } catch { console.log("") }' \
  "$PWD/$BROWSER_DIR/node_modules/playwright-core/package.json")
if [ "$HAVE" = "$WANT" ]; then
  echo "setup-browser: playwright-core $HAVE present"
else
  echo "setup-browser: installing playwright-core $WANT into $BROWSER_DIR/node_modules"
  # Playwright must not download browsers: the system Chromium is used.
  export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
  if [ -f "$BROWSER_DIR/package-lock.json" ]; then
    (cd "$BROWSER_DIR" && npm ci --no-audit --no-fund --loglevel=error)
  else
    (cd "$BROWSER_DIR" && npm install --no-audit --no-fund --loglevel=error)
  fi
fi

"$CHROMIUM" --version 2>/dev/null | head -1 || true
echo "setup-browser: ready"
