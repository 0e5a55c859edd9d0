#!/usr/bin/env bash
# Checks that each folder includes only the folders DESIGN.md's arrows let it
# use (its own, common/, and those its arrows point at: no reaching past them),
# that each folder it includes is linked in its CMakeLists.txt (fedge_<folder>),
# that libtorch is included only in inference/ and training/, that only
# protocol/ and federation/src/wire.cpp see the wire schema's generated code,
# and that federation/ stays sans-I/O (no logging, sockets, SQLite or threads).
#
# The include lines that break the arrows today are listed, one per line, in
# cmake/layer-exceptions.txt ("FILE FOLDER", FOLDER being "torch" for libtorch).
# The list may only shrink: an include that breaks the arrows and is not listed
# fails the check, and so does a listed line that no longer occurs (remove it).
# Usage: scripts/check-layers.sh   (exit 0: clean; 1: violations, each named)
set -euo pipefail
cd "$(dirname "$0")/.."

# folder -> the folders it may include besides itself and common/ (DESIGN.md),
# plus three uses one step further down that docs/ARCHITECTURE.md explains:
# federation/ -> privacy/ (the round's own clip, noise and accountant) and the
# drivers node/ and coordinator/ -> protocol/ (the sockets they own).
declare -A allowed=(
  [common]=""
  [protocol]=""
  [inference]=""
  [training]="inference"
  [privacy]=""
  [aggregation]="privacy"
  [federation]="aggregation protocol privacy"
  [serving]="inference protocol"
  [node]="federation training serving protocol"
  [coordinator]="federation protocol"
  [sims]="node coordinator"
)
torch_allowed=" inference training "
exceptions_file=cmake/layer-exceptions.txt

found=$(mktemp)
trap 'rm -f "$found"' EXIT
# One grep per folder rather than per file: a fork per file made this take
# 20 s on a loaded 2-core machine.
for folder in "${!allowed[@]}"; do
  [[ -d "$folder" ]] || continue
  ok=" $folder common ${allowed[$folder]} "
  declare -A linked=()
  while IFS=: read -r file used; do
    if [[ "$ok" != *" $used "* ]]; then
      echo "$file $used" >> "$found"
    elif [[ "$used" != "$folder" && "$used" != common ]]; then
      # A folder links what it includes: the arrow must be declared in CMake.
      if [[ -z "${linked[$used]:-}" ]]; then
        linked[$used]=no
        grep -qE "\bfedge_$used\b" "$folder/CMakeLists.txt" && linked[$used]=yes
      fi
      [[ "${linked[$used]}" == yes ]] ||
        echo "$file $used (not linked: add fedge_$used to $folder/CMakeLists.txt)" >> "$found"
    fi
  done < <(find "$folder" -type f \( -name '*.h' -o -name '*.hpp' -o -name '*.cpp' \) -print0 |
             xargs -0 -r grep -oHE '^\s*#\s*include\s*[<"]fedge/[a-z_]+/' |
             sed -E 's/^([^:]+):.*fedge\/([a-z_]+)\/$/\1:\2/' | sort -u)
  unset linked
  if [[ "$torch_allowed" != *" $folder "* ]]; then
    while IFS= read -r file; do
      echo "$file torch" >> "$found"
    done < <(find "$folder" -type f \( -name '*.h' -o -name '*.hpp' -o -name '*.cpp' \) -print0 |
               xargs -0 -r grep -lE '^\s*#\s*include\s*<(torch|ATen|c10)/' | sort)
  fi
done
# federation/ is sans-I/O: no logging, sockets, database or threads; its
# cores return events and messages, and the drivers do the I/O.
while IFS= read -r file; do
  echo "$file I/O" >> "$found"
done < <(grep -lE '^\s*#\s*include\s*[<"](spdlog/|zmq|sqlite3|thread>|httplib)' -r federation --include='*.h' --include='*.cpp' 2>/dev/null || true)
# The wire schema's C++ form is protocol's; the one reader outside it is
# federation/src/wire.cpp, which owns the C++ form of the opaque parts (the
# secure-aggregation messages). Anyone else reads plain structs.
while IFS= read -r file; do
  [[ "$file" == protocol/* || "$file" == federation/src/wire.cpp ]] && continue
  echo "$file schema" >> "$found"
done < <(grep -lE '^\s*#\s*include\s*[<"](fedge/protocol/opaque\.h|fedge\.capnp\.h)' -r "${!allowed[@]}" --include='*.h' --include='*.cpp' 2>/dev/null || true)
sort -u -o "$found" "$found"

listed=$( (grep -vE '^\s*(#|$)' "$exceptions_file" || true) | sort -u)
new=$(comm -23 "$found" <(echo "$listed"))
stale=$(comm -13 "$found" <(echo "$listed"))
status=0
if [[ -n "$new" ]]; then
  echo "check-layers: these includes reach past DESIGN.md's arrows (FILE FOLDER; 'torch' = libtorch outside inference/ and training/; 'I/O' = logging, sockets, SQLite or threads in sans-I/O federation/; 'schema' = the generated wire schema outside protocol/ and federation/src/wire.cpp):"
  echo "$new" | sed 's/^/  /'
  echo "  use the folder's own interface instead, or move the code where the arrows allow it"
  status=1
fi
if [[ -n "$stale" ]]; then
  echo "check-layers: $exceptions_file lists includes that no longer occur; remove these lines:"
  echo "$stale" | sed 's/^/  /'
  status=1
fi
if [[ $status -eq 0 ]]; then
  echo "check-layers: every include follows the arrows, but for the $(echo "$listed" | grep -c . || true) listed in $exceptions_file"
fi
exit $status
