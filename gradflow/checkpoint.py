"""Saving optimizer state to a ``.npz`` file and reading it back, with NumPy only.

An optimizer state is a pytree of arrays, so any pytree checkpointer
(``orbax.checkpoint``, say) saves it. These two functions are the dependency-free
alternative: each leaf is stored under its tree path (``jax.tree_util.keystr``),
and :func:`load_state` rebuilds the tree from a template of the same structure,
usually ``tx.init(params)``. The arrays come back bit for bit, in their dtypes
(bfloat16 included), so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["save_state", "load_state"]


def _keys(tree: Any) -> tuple[list[str], list[Any], Any]:
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
    keys = [jax.tree_util.keystr(path) or "<root>" for path, _ in leaves_with_path]
    return keys, [leaf for _, leaf in leaves_with_path], treedef


_DTYPES = "__dtypes__"  # the file's entry naming each leaf's dtype (bfloat16 is stored as raw bytes)


def _npz(path: str | os.PathLike, reading: bool = False) -> str:
    """``path`` with ``.npz`` appended when missing, as ``np.savez`` does (an existing file is read as named)."""
    p = os.fspath(path)
    if p.endswith(".npz") or (reading and os.path.exists(p)):
        return p
    return p + ".npz"


def save_state(path: str | os.PathLike, state: Any) -> None:
    """Write every leaf of ``state`` to the ``.npz`` file ``path``, keyed by its tree path.

    Args:
      path: the file to write (``.npz`` is appended when it is missing, and
        :func:`load_state` reads the same name).
      state: a pytree of arrays or scalars, e.g. an optimizer state.
    """
    keys, leaves, _ = _keys(state)
    arrays = {k: np.asarray(leaf) for k, leaf in zip(keys, leaves)}
    names = np.asarray([f"{k}={a.dtype.name}" for k, a in arrays.items()], dtype=np.str_)
    np.savez(_npz(path), **arrays, **{_DTYPES: names})


def load_state(path: str | os.PathLike, like: Any) -> Any:
    """Read a state written by :func:`save_state` into the structure of ``like``.

    Args:
      path: the ``.npz`` file (given with or without ``.npz``, as to :func:`save_state`).
      like: a tree with the saved state's structure, shapes and dtypes (arrays or
        ``jax.ShapeDtypeStruct`` leaves), e.g. ``tx.init(params)`` or
        ``jax.eval_shape(tx.init, params)``.

    Returns:
      The saved state as JAX arrays, in the structure of ``like``.

    Raises:
      ValueError: a leaf of ``like`` is missing from the file, the file holds a
        leaf ``like`` does not, or a shape or dtype differs.
    """
    keys, leaves, treedef = _keys(like)
    with np.load(_npz(path, reading=True), allow_pickle=False) as data:
        files = [f for f in data.files if f != _DTYPES]
        names = dict(str(e).rsplit("=", 1) for e in data[_DTYPES]) if _DTYPES in data.files else {}
        missing = [k for k in keys if k not in files]
        extra = sorted(set(files) - set(keys))
        if missing or extra:
            raise ValueError(f"load_state: the file and `like` hold different leaves; missing {missing}, extra {extra}")
        out = []
        for key, leaf in zip(keys, leaves):
            arr = data[key]
            dtype = np.dtype(leaf.dtype) if hasattr(leaf, "dtype") else np.asarray(leaf).dtype
            shape = tuple(np.shape(leaf))
            saved = names.get(key)
            if arr.dtype.kind == "V":  # bfloat16 and other ml_dtypes are stored as raw bytes
                if saved == dtype.name or (saved is None and arr.dtype.itemsize == dtype.itemsize):
                    arr = arr.view(dtype)
            file_dtype = saved or (arr.dtype.name if arr.dtype.kind != "V" else f"raw {arr.dtype.itemsize}-byte")
            if arr.dtype != dtype or arr.shape != shape:
                raise ValueError(
                    f"load_state: leaf {key} is {file_dtype}{list(arr.shape)} in the file, "
                    f"{dtype.name}{list(shape)} in `like`"
                )
            out.append(jnp.asarray(arr))
    return jax.tree_util.tree_unflatten(treedef, out)
