# Source this file: it makes a local PyTorch 2.13.0 (the libtorch that tch 0.26
# needs) available to cargo, installing it on first use.
#
#   . scripts/torch-env.sh
#
# The venv lives outside the clone, in ~/.cache/opguard/torch-2.13.0 (or
# $OPGUARD_TORCH_VENV), so that every clone and every run after the first
# reuses it. It is about 5 GB, with PyTorch's CUDA libraries. It is installed
# beside its final place and moved there when complete, so a run that is
# stopped halfway, or two runs at once, never leave a broken one behind.
_opguard_torch_version=2.13.0
_opguard_venv=${OPGUARD_TORCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/opguard/torch-$_opguard_torch_version}

_opguard_torch_ok() {
    "$1/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$_opguard_torch_version')" >/dev/null 2>&1
}

if ! _opguard_torch_ok "$_opguard_venv"; then
    echo "opguard: installing torch==$_opguard_torch_version into $_opguard_venv (about a minute, 5 GB)" >&2
    mkdir -p "$(dirname "$_opguard_venv")" || return 1 2>/dev/null || exit 1
    _opguard_tmp=$(mktemp -d "$_opguard_venv.partial.XXXXXX") || return 1 2>/dev/null || exit 1
    if ! { python3 -m venv "$_opguard_tmp" &&
        "$_opguard_tmp/bin/python" -m pip install --quiet --disable-pip-version-check "torch==$_opguard_torch_version"; }; then
        rm -rf "$_opguard_tmp"
        return 1 2>/dev/null || exit 1
    fi
    # A broken venv in the way goes first; if another run finished first, its
    # venv stays and ours goes.
    _opguard_torch_ok "$_opguard_venv" || rm -rf "$_opguard_venv"
    mv -T "$_opguard_tmp" "$_opguard_venv" 2>/dev/null || rm -rf "$_opguard_tmp"
    unset _opguard_tmp
fi

export VIRTUAL_ENV=$_opguard_venv
export PATH=$_opguard_venv/bin:$PATH
export LIBTORCH_USE_PYTORCH=1
_opguard_torch_lib=$("$_opguard_venv/bin/python" -c "import torch, os; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))" 2>/dev/null)
export LD_LIBRARY_PATH=$_opguard_torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
unset _opguard_venv _opguard_torch_version _opguard_torch_lib
unset -f _opguard_torch_ok
