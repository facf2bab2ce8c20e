# Source this file: it makes a local PyTorch 2.13.0 (the libtorch that tch 0.26
# needs) available to cargo, installing it on first use.
#
#   . scripts/torch-env.sh
#
# The venv lives in target/torch-venv (or $OPGUARD_TORCH_VENV), so a second run
# skips the install. It is about 5 GB, with PyTorch's CUDA libraries.
_opguard_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_opguard_venv=${OPGUARD_TORCH_VENV:-$_opguard_root/target/torch-venv}
_opguard_torch_version=2.13.0

if ! "$_opguard_venv/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$_opguard_torch_version')" >/dev/null 2>&1; then
    echo "opguard: installing torch==$_opguard_torch_version into $_opguard_venv (about a minute, 5 GB)" >&2
    python3 -m venv "$_opguard_venv" || return 1 2>/dev/null || exit 1
    "$_opguard_venv/bin/pip" install --quiet --disable-pip-version-check "torch==$_opguard_torch_version" \
        || return 1 2>/dev/null || exit 1
fi

export VIRTUAL_ENV=$_opguard_venv
export PATH=$_opguard_venv/bin:$PATH
export LIBTORCH_USE_PYTORCH=1
_opguard_torch_lib=$("$_opguard_venv/bin/python" -c "import torch, os; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))" 2>/dev/null)
export LD_LIBRARY_PATH=$_opguard_torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
unset _opguard_root _opguard_venv _opguard_torch_version _opguard_torch_lib
