# Sourced by scripts/serve.sh and scripts/test.sh: installs the missing Debian/Ubuntu packages named
# in the `missing` array (with sudo when not root), or warns when apt-get is unavailable.
# The build itself needs libopus-dev (linked by the Opus decoder) and libclang-dev (bindgen, for
# the SILK SDK's bindings), plus make and a C compiler for LAME and the SILK SDK; see
# docs/architecture.md, "Audio codecs in-process".
build_deps() {
  command -v make >/dev/null 2>&1 || missing+=(make)
  command -v cc >/dev/null 2>&1 || missing+=(gcc)
  for pkg in libopus-dev libclang-dev; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
}

install_missing() {
  [ ${#missing[@]} -gt 0 ] || return 0
  if command -v apt-get >/dev/null 2>&1; then
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "warning: ${missing[*]} not installed and apt-get is unavailable; $1 will fail" >&2
  fi
}
