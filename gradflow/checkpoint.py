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


def _keys(tree: Any) -> tuple[list[str], list[Any], Any]:
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
    keys = [jax.tree_util.keystr(path) or "<root>" for path, _ in leaves_with_path]
    return keys, [leaf for _, leaf in leaves_with_path], treedef


def save_state(path: str | os.PathLike, state: Any) -> None:
    """Write every leaf of ``state`` to the ``.npz`` file ``path``, keyed by its tree path.

    Args:
      path: the file to write (NumPy appends ``.npz`` when it is missing).
      state: a pytree of arrays or scalars, e.g. an optimizer state.
    """
    keys, leaves, _ = _keys(state)
    np.savez(path, **{k: np.asarray(leaf) for k, leaf in zip(keys, leaves)})


def load_state(path: str | os.PathLike, like: Any) -> Any:
    """Read a state written by :func:`save_state` into the structure of ``like``.

    Args:
      path: the ``.npz`` file.
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
    with np.load(path, allow_pickle=False) as data:
        missing = [k for k in keys if k not in data.files]
        extra = sorted(set(data.files) - set(keys))
        if missing or extra:
            raise ValueError(f"load_state: the file and `like` hold different leaves; missing {missing}, extra {extra}")
        out = []
        for key, leaf in zip(keys, leaves):
            arr = data[key]
            dtype = np.dtype(leaf.dtype) if hasattr(leaf, "dtype") else np.asarray(leaf).dtype
            shape = tuple(np.shape(leaf))
            if arr.dtype != dtype and arr.dtype.kind == "V" and arr.dtype.itemsize == dtype.itemsize:
                arr = arr.view(dtype)  # bfloat16 and other ml_dtypes are stored as raw bytes
            if arr.dtype != dtype or arr.shape != shape:
                raise ValueError(
                    f"load_state: leaf {key} is {arr.dtype}{list(arr.shape)} in the file, "
                    f"{dtype}{list(shape)} in `like`"
                )
            out.append(jnp.asarray(arr))
    return jax.tree_util.tree_unflatten(treedef, out)
