# Sourced by the build scripts: sets `launcher` to the CMake options that
# compile through ccache, when it is installed (scripts/install-deps.sh does)
# and FEDGE_CCACHE is not 0, and makes paths under the repository relative in
# ccache's hashes (CCACHE_BASEDIR), so that builds in different folders of the
# same sources share objects: CI's portable build (scripts/test-portable-core.sh)
# compiles mostly what the main build already did.
launcher=()
if [[ "${FEDGE_CCACHE:-1}" != 0 ]] && command -v ccache >/dev/null; then
  launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$PWD}"
fi
