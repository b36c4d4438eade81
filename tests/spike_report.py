"""Print how each clipper treats the fixed spike sequence of tests/reference_clipping.py.

Run from the repository root:  python -m tests.spike_report
For every clipper (defaults where it has them): how many of the injected spikes were cut,
the global norm of each spike before → after, and how many ordinary steps were changed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import gradflow as gf
from tests import reference_clipping as ref

CLIPPERS = {
    "clip(1.0)": lambda: gf.clip(1.0),
    "clip_by_norm(8.0)": lambda: gf.clip_by_norm(8.0),
    "clip_by_global_norm(8.0)": lambda: gf.clip_by_global_norm(8.0),
    "clip_by_block_rms(3.0)": lambda: gf.clip_by_block_rms(3.0),
    "adaptive_grad_clip(2.0)": lambda: gf.adaptive_grad_clip(2.0),
    "autoclip()": gf.autoclip,
    "zclip()": gf.zclip,
    "adagc()": gf.adagc,
    "skip_spikes(identity())": lambda: gf.skip_spikes(gf.identity()),
}


def main() -> None:
    grads = ref.spike_sequence(seed=0, steps=300)
    params = {k: jnp.asarray(np.random.default_rng(11).standard_normal(s), jnp.float32) for k, s in ref.SHAPES.items()}
    normal = [t for t in range(len(grads)) if t not in ref.SPIKES]
    print(f"{len(grads)} steps, typical ‖g‖ ≈ {np.median([ref.global_norm(grads[t]) for t in normal]):.2f}; "
          f"spikes at {sorted(ref.SPIKES)}")
    for name, make in CLIPPERS.items():
        tx = make()
        state = tx.init(params)
        step = jax.jit(tx.update)
        changed, cut, detail = 0, 0, []
        for t, g in enumerate(grads):
            g32 = {k: jnp.asarray(v, jnp.float32) for k, v in g.items()}
            u, state = step(g32, state, params)
            same = all(np.array_equal(np.asarray(u[k]), np.asarray(g32[k])) for k in g32)
            if t in ref.SPIKES:
                cut += not same
                detail.append(f"{ref.global_norm(g32):.3g}→{ref.global_norm(u):.3g}")
            else:
                changed += not same
        print(f"{name:26s} spikes cut {cut}/{len(ref.SPIKES)}; ordinary steps changed {changed}/{len(normal)}")
        print(f"{'':26s} ‖g‖ before→after: {', '.join(detail)}")


if __name__ == "__main__":
    main()
