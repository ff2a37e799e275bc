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

# llama.cpp is compiled for this CPU (-march=native). Its Intel AMX kernels crash (SIGSEGV in
# ggml_backend_amx_mul_mat on the first quantized matmul) on Xeon VMs that do not grant the AMX
# tile state, and no laptop CPU has AMX, so they are left out. An explicit -mno-* flag wins over
# -march=native whatever the order. The RPC backend (GGML_RPC) lets `--rpc` spread a model over
# other machines running `edge-ai rpc-server`.
llama_cpp_build_flags() {
  if [ "$(uname -m)" = x86_64 ]; then
    local no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    export CFLAGS="${CFLAGS:-} $no_amx" CXXFLAGS="${CXXFLAGS:-} $no_amx"
  fi
  export CMAKE_ARGS="${CMAKE_ARGS:-} -DGGML_RPC=ON"
}

# True when the venv's llama-cpp-python was built with the AMX kernels (an older set-up, or a wheel
# pip cached from one).
llama_cpp_has_amx() {
  local lib
  lib=$(.venv/bin/python -c 'import llama_cpp, pathlib; print(pathlib.Path(llama_cpp.__file__).parent / "lib" / "libggml-cpu.so")' 2>/dev/null) || return 1
  grep -q ggml_backend_amx_mul_mat "$lib" 2>/dev/null
}

# True when the venv's llama-cpp-python was built without the RPC backend (an older set-up, or a
# wheel pip cached from one: pip's wheel cache does not key on CMAKE_ARGS).
llama_cpp_lacks_rpc() {
  local lib
  lib=$(.venv/bin/python -c 'import llama_cpp, pathlib; print(pathlib.Path(llama_cpp.__file__).parent / "lib")' 2>/dev/null) || return 1
  [ ! -e "$lib/libggml-rpc.so" ]
}

# Install the project with the given extras; llama-cpp-python is built without AMX and with RPC
# (rebuilt once if a build without them came from the venv or pip's wheel cache).
install_project() {
  llama_cpp_build_flags
  pip_install -e ".[$1]"
  if llama_cpp_has_amx || llama_cpp_lacks_rpc; then
    echo "rebuilding llama-cpp-python without the AMX kernels (they crash on this CPU) and with RPC" >&2
    .venv/bin/python -m pip uninstall -q -y llama-cpp-python
    .venv/bin/python -m pip cache remove 'llama_cpp_python*' >/dev/null 2>&1 || true
    pip_install -e ".[$1]"
  fi
}

# Silero VAD's ONNX file: its package declares torch and torchaudio, which voice mode never imports, so
# it is installed without dependencies (runtime.audio.vad finds the file and never imports the package).
install_voice_models() {
  pip_install --no-deps silero-vad==6.2.3
}
