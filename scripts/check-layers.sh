#!/usr/bin/env bash
# Checks that each folder includes only the folders DESIGN.md's arrows let it
# use (its own, common/, and those its arrows point at: no reaching past them),
# and that libtorch is included only in inference/ and training/.
#
# The include lines that break the arrows today are listed, one per line, in
# cmake/layer-exceptions.txt ("FILE FOLDER", FOLDER being "torch" for libtorch).
# The list may only shrink: an include that breaks the arrows and is not listed
# fails the check, and so does a listed line that no longer occurs (remove it).
# Usage: scripts/check-layers.sh   (exit 0: clean; 1: violations, each named)
set -euo pipefail
cd "$(dirname "$0")/.."

# folder -> the folders it may include besides itself and common/ (DESIGN.md).
declare -A allowed=(
  [common]=""
  [protocol]=""
  [inference]=""
  [training]="inference"
  [privacy]=""
  [aggregation]="privacy"
  [federation]="aggregation protocol"
  [serving]="inference protocol"
  [node]="federation training serving"
  [coordinator]="federation"
  [sims]="node coordinator"
)
torch_allowed=" inference training "
exceptions_file=cmake/layer-exceptions.txt

found=$(mktemp)
trap 'rm -f "$found"' EXIT
for folder in "${!allowed[@]}"; do
  [[ -d "$folder" ]] || continue
  ok=" $folder common ${allowed[$folder]} "
  while IFS= read -r file; do
    # fedge/<folder>/ headers
    for used in $(grep -oE '^\s*#\s*include\s*[<"]fedge/[a-z_]+/' "$file" | sed -E 's/.*fedge\/([a-z_]+)\//\1/' | sort -u); do
      [[ "$ok" == *" $used "* ]] || echo "$file $used" >> "$found"
    done
    if [[ "$torch_allowed" != *" $folder "* ]] && grep -qE '^\s*#\s*include\s*<(torch|ATen|c10)/' "$file"; then
      echo "$file torch" >> "$found"
    fi
  done < <(find "$folder" -type f \( -name '*.h' -o -name '*.hpp' -o -name '*.cpp' \) | sort)
done
sort -u -o "$found" "$found"

listed=$( (grep -vE '^\s*(#|$)' "$exceptions_file" || true) | sort -u)
new=$(comm -23 "$found" <(echo "$listed"))
stale=$(comm -13 "$found" <(echo "$listed"))
status=0
if [[ -n "$new" ]]; then
  echo "check-layers: these includes reach past DESIGN.md's arrows (FILE FOLDER; 'torch' = libtorch outside inference/ and training/):"
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
