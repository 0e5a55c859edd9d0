#!/usr/bin/env bash
# Builds the .deb (CPack, cmake/FedgePackaging.cmake) from the build folder,
# checks what it holds and what it depends on, and, run as root, installs it
# with dpkg -i, checks the installed `fedge --version` against the build's and
# the systemd units (systemd-analyze verify where systemd is present), then
# removes it again. Prints the package's path.
# Usage: scripts/package.sh   (FEDGE_BUILD_DIR=build; FEDGE_PACKAGE_INSTALL=0 skips dpkg -i)
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir="${FEDGE_BUILD_DIR:-build}"
cmake --build "$build_dir" --target fedge
built_version=$("$build_dir/bin/fedge" --version)
(cd "$build_dir" && cpack -G DEB >cpack.log 2>&1) || { tail -30 "$build_dir/cpack.log"; exit 1; }
deb=$(ls -t "$build_dir"/fedge_*.deb | head -1)
echo "package: $deb ($(du -h "$deb" | cut -f1))"

fail() { echo "package: FAILED: $*" >&2; exit 1; }
contents=$(dpkg-deb -c "$deb")  # (a here-string below: grep -q must not cut a pipe)
for path in ./usr/bin/fedge ./usr/lib/systemd/system/fedge-coordinator.service ./usr/lib/systemd/system/fedge-node.service \
            ./usr/share/doc/fedge/README.md ./usr/share/doc/fedge/docs/DEPLOYMENT.md \
            ./usr/share/doc/fedge/examples/configs/node1.toml; do
  grep -q " $path\$" <<<"$contents" || fail "$deb lacks $path"
done
depends=$(dpkg-deb -f "$deb" Depends)
for lib in libzmq5 libsodium23 libcapnp libtorch; do
  grep -q "$lib" <<<"$depends" || fail "Depends does not name $lib: $depends"
done
echo "package: contents and Depends checked ($(wc -l <<<"$contents") entries)"

if [ "${FEDGE_PACKAGE_INSTALL:-1}" = 0 ] || [ "$(id -u)" != 0 ]; then
  echo "package: dpkg -i skipped (not root, or FEDGE_PACKAGE_INSTALL=0)"
  exit 0
fi
if dpkg -s fedge >/dev/null 2>&1; then
  fail "a fedge package is already installed here; remove it (dpkg -r fedge) before this check"
fi
trap 'dpkg -r fedge >/dev/null 2>&1 || true' EXIT
dpkg -i "$deb" >/dev/null
installed_version=$(/usr/bin/fedge --version)
[ "$installed_version" = "$built_version" ] || fail "installed fedge --version '$installed_version' is not the build's '$built_version'"
for unit in fedge-coordinator fedge-node; do
  [ -f "/usr/lib/systemd/system/$unit.service" ] || fail "$unit.service was not installed"
  if command -v systemd-analyze >/dev/null; then
    systemd-analyze verify "/usr/lib/systemd/system/$unit.service" || fail "systemd-analyze verify $unit.service"
  fi
done
echo "package: dpkg -i gives '$installed_version' and both units; removed again"
