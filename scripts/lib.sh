# Helpers shared by setup.sh and test.sh (sourced, not run).

# Install Debian packages that are missing, when we can (root, or sudo without a password prompt).
install_system_packages() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || { echo "note: not a Debian-like system; install ${missing[*]} yourself" >&2; return 0; }
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    if sudo -n true 2>/dev/null; then sudo="sudo"; else
      echo "note: cannot install ${missing[*]} without root; install them and re-run" >&2; return 0
    fi
  fi
  echo "installing system packages: ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

make_venv() {
  [ -x .venv/bin/python ] || python3 -m venv .venv
}

pip_install() {
  .venv/bin/python -m pip install -q --disable-pip-version-check "$@"
}
