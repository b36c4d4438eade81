"""Saving optimizer state to a ``.npz`` file and reading it back, with NumPy only.

An optimizer state is a pytree of arrays, so any pytree checkpointer
(``orbax.checkpoint``, say) saves it. These two functions are the dependency-free
alternative: each leaf is stored under its tree path (``jax.tree_util.keystr``),
and :func:`load_state` rebuilds the tree from a template of the same structure,
usually ``tx.init(params)``. The arrays come back bit for bit, in their dtypes
(bfloat16 and typed PRNG keys included) and with the template's shardings, so a
resumed run continues exactly where it stopped.
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


def _npz(path: str | os.PathLike) -> str:
    """The file both functions use: ``path`` with ``.npz`` appended when missing, as ``np.savez`` does."""
    p = os.fspath(path)
    return p if p.endswith(".npz") else p + ".npz"


def _is_key(dtype: Any) -> bool:
    return jnp.issubdtype(dtype, jax.dtypes.prng_key)


def save_state(path: str | os.PathLike, state: Any) -> None:
    """Write every leaf of ``state`` to the ``.npz`` file ``path``, keyed by its tree path.

    A typed PRNG key (``jax.random.key``, as in ``optax.add_noise``'s state) is
    stored as its ``jax.random.key_data`` with its implementation's name, so
    :func:`load_state` rebuilds the same key.

    Args:
      path: the file to write: ``path`` itself when it ends in ``.npz``, else
        ``path + ".npz"``; :func:`load_state` reads the same name.
      state: a pytree of arrays, typed PRNG keys or scalars, e.g. an optimizer state.
    """
    keys, leaves, _ = _keys(state)
    arrays, names = {}, []
    for k, leaf in zip(keys, leaves):
        if _is_key(getattr(leaf, "dtype", None)):
            arrays[k] = np.asarray(jax.random.key_data(leaf))
            names.append(f"{k}=key<{jax.random.key_impl(leaf)}>")
        else:
            arrays[k] = np.asarray(leaf)
            names.append(f"{k}={arrays[k].dtype.name}")
    np.savez(_npz(path), **arrays, **{_DTYPES: np.asarray(names, dtype=np.str_)})


def load_state(path: str | os.PathLike, like: Any) -> Any:
    """Read a state written by :func:`save_state` into the structure of ``like``.

    A leaf of ``like`` that carries a sharding (a committed ``jax.Array``, or a
    ``jax.ShapeDtypeStruct`` built with ``sharding=...``, e.g. from
    :func:`gradflow.state_sharding`) is put with that sharding
    (``jax.device_put``), so a sharded state is never gathered onto one device;
    the other leaves come back on the default device, uncommitted.

    Args:
      path: the ``.npz`` file, by the same rule as :func:`save_state`: ``path``
        itself when it ends in ``.npz``, else ``path + ".npz"`` (whatever else
        is named ``path`` is never read).
      like: a tree with the saved state's structure, shapes and dtypes (arrays or
        ``jax.ShapeDtypeStruct`` leaves), e.g. ``tx.init(params)`` or
        ``jax.eval_shape(tx.init, params)``.

    Returns:
      The saved state as JAX arrays (typed PRNG keys where ``like`` has them,
      of the saved implementation), in the structure of ``like``.

    Raises:
      ValueError: a leaf of ``like`` is missing from the file, the file holds a
        leaf ``like`` does not, or a shape or dtype (a key's implementation
        included) differs.

    Example:
      >>> import os, tempfile, optax, gradflow as gf
      >>> params = {"w": jnp.ones(3)}
      >>> tx = optax.chain(optax.add_noise(0.1, 0.55, 0), gf.sgd(0.1))
      >>> path = os.path.join(tempfile.mkdtemp(), "opt_state")
      >>> save_state(path, tx.init(params))  # writes opt_state.npz
      >>> state = load_state(path, jax.eval_shape(tx.init, params))  # reads opt_state.npz
      >>> state[0].rng_key.dtype
      key<fry>
    """
    keys, leaves, treedef = _keys(like)
    with np.load(_npz(path), allow_pickle=False) as data:
        files = [f for f in data.files if f != _DTYPES]
        names = dict(str(e).rsplit("=", 1) for e in data[_DTYPES]) if _DTYPES in data.files else {}
        missing = [k for k in keys if k not in files]
        extra = sorted(set(files) - set(keys))
        if missing or extra:
            raise ValueError(f"load_state: the file and `like` hold different leaves; missing {missing}, extra {extra}")
        out = []
        for key, leaf in zip(keys, leaves):
            arr, saved = data[key], names.get(key)
            dtype = leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype
            dtype = dtype if _is_key(dtype) else np.dtype(dtype)
            shape = tuple(np.shape(leaf))
            if saved is not None and saved.startswith("key<"):  # a typed PRNG key, stored as its key data
                arr = jax.random.wrap_key_data(arr, impl=saved[len("key<") : -1])
                saved = str(arr.dtype)
            elif arr.dtype.kind == "V":  # bfloat16 and other ml_dtypes are stored as raw bytes
                if saved == dtype.name or (saved is None and arr.dtype.itemsize == dtype.itemsize):
                    arr = arr.view(dtype)
            file_dtype = saved or (arr.dtype.name if arr.dtype.kind != "V" else f"raw {arr.dtype.itemsize}-byte")
            if arr.dtype != dtype or arr.shape != shape:
                raise ValueError(
                    f"load_state: leaf {key} is {file_dtype}{list(arr.shape)} in the file, "
                    f"{dtype.name}{list(shape)} in `like`"
                )
            sharding = getattr(leaf, "sharding", None)
            if sharding is not None and getattr(leaf, "committed", True):
                out.append(jax.device_put(arr, sharding))
            else:
                out.append(jnp.asarray(arr))
    return jax.tree_util.tree_unflatten(treedef, out)
