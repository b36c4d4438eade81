"""Review findings: gradflow transforms inside the JAX ecosystem's tools (optax, flax, pickle).

Each test is small and fast. Tests that fail on the current code pin a bug (the comment says
what happens and what should happen); tests marked ``# guarantee`` pass today and pin an
interop promise that no other test covers.
"""

from __future__ import annotations

import os
import pickle
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradflow as gf


def _params() -> dict:
    rng = np.random.default_rng(0)
    return {"w": jnp.asarray(rng.standard_normal((4, 3)), jnp.float32), "b": jnp.zeros((3,), jnp.float32)}


def _grads(scale: float = 0.1) -> dict:
    return jax.tree.map(lambda p: jnp.full_like(p, scale), _params())


def _max_abs_diff(a, b) -> float:
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# --------------------------------------------------------------------------------------------
# Finding 1: flatten_small forwards every extra keyword argument to the wrapped transform.
#
# Every other gradflow wrapper (chain, protect, dynamic_loss_scale, skip_spikes, apply_if_finite,
# inject_hyperparams, monitor) filters the extra args with base.extra_args_filter, so a plain
# optax GradientTransformation (optax.scale_by_adam(), optax.clip(...), ...; their update takes no
# **extra_args) can be wrapped; optax.chain does the same via optax.with_extra_args_support.
# flatten_small calls ``tx.update(..., **extra_args)`` unfiltered, so as soon as anything passes
# ``value=loss`` (protect, which flatten_small's own docstring says to wrap around it:
# ``protect(flatten_small(tx))``), it dies with
#   TypeError: scale_by_adam.<locals>.update_fn() got an unexpected keyword argument 'value'
# Expected: the extra args are dropped for a transform that cannot take them, and the updates
# equal the unwrapped transform's. Fix: gradflow/flat.py:flatten_small (filter with
# base.extra_args_filter(tx.update), as protect/guards do).


@pytest.mark.parametrize(
    "wrap",
    [
        lambda tx: gf.protect(gf.flatten_small(tx), max_update_ratio=None),
        lambda tx: optax.chain(gf.flatten_small(tx)),
        lambda tx: gf.chain(gf.flatten_small(tx)),
    ],
    ids=["protect", "optax.chain", "gf.chain"],
)
def test_flatten_small_drops_extra_args_a_plain_optax_transform_cannot_take(wrap):
    params, g = _params(), _grads()
    tx = wrap(optax.scale_by_adam())
    updates, _ = tx.update(g, tx.init(params), params, value=jnp.float32(1.0))
    ref = optax.scale_by_adam()
    want, _ = ref.update(g, ref.init(params), params)
    assert _max_abs_diff(updates, want) < 1e-6


# Finding 1b: flatten_small with gradients whose dtype differs from the parameters' (float32
# gradients for bfloat16 parameters, a common mixed-precision set-up that gf.adam and optax.adam
# both accept) fails deep inside the inner optimizer with an error about gradflow's private packed
# tree:
#   TypeError: scale_by_adam: the updates' tree structure differs from the second moment'.
#     updates: PyTreeDef({'flat': (*,), 'large': ()})   second moment: PyTreeDef({'flat': (*, *), ...})
# (init packs by the parameters' dtypes, update by the gradients'.) The docstring says "the updates
# must have the parameters' dtypes", but the user gets no word of dtypes, leaves or flatten_small.
# Expected: either it works (pack by the dtypes init saw and cast, giving gf.adam's updates), or a
# TypeError from flatten_small naming the leaf and both dtypes. Fix: gradflow/flat.py:flatten_small
# (update_fn: compare the layout with the one init built, or build it from params).


def test_flatten_small_with_gradients_in_another_dtype_works_or_says_so():
    params = {"w": jnp.ones((4, 3), jnp.bfloat16), "b": jnp.ones((3,), jnp.float32)}
    grads = {"w": jnp.full((4, 3), 0.1, jnp.float32), "b": jnp.full((3,), 0.1, jnp.float32)}
    tx = gf.flatten_small(gf.adam(1e-2))
    try:
        updates, _ = tx.update(grads, tx.init(params), params)
    except (TypeError, ValueError) as e:
        msg = str(e)
        assert msg.startswith("flatten_small") and "dtype" in msg and "bfloat16" in msg, msg
        return
    ref = gf.adam(1e-2)
    want, _ = ref.update(grads, ref.init(params), params)
    assert _max_abs_diff(updates, want) < 1e-6


# --------------------------------------------------------------------------------------------
# Finding 2: a gf.inject_hyperparams state cannot be pickled.
#
# inject.py:_state_type builds a new class per configuration with ``type("InjectHyperparamsState",
# (InjectHyperparamsState,), ...)`` and ``__module__ = "gradflow.inject"``, so pickle looks up
# gradflow.inject.InjectHyperparamsState, finds the base class, and fails:
#   PicklingError: Can't pickle <class 'gradflow.inject.InjectHyperparamsState'>: it's not the same
#   object as gradflow.inject.InjectHyperparamsState
# Every other gradflow state, and optax.inject_hyperparams' state, pickles (pickle is how states
# go through multiprocessing, ad-hoc checkpoints, ray/dask, ...). Expected: pickle round trip gives
# an equal state of the same tree structure that keeps working. Fix: gradflow/inject.py:_state_type
# (give the subclass a __reduce__ that rebuilds it from the config key / a module-level registry,
# or keep the check/schedule metadata out of the type).


def test_inject_hyperparams_state_pickles_like_optax_s():
    params, g = _params(), _grads()
    ref = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)
    pickle.loads(pickle.dumps(ref.init(params)))  # optax's pickles

    tx = gf.inject_hyperparams(gf.adam)(learning_rate=1e-3)
    state = tx.init(params)
    back = pickle.loads(pickle.dumps(state))
    assert jax.tree.structure(back) == jax.tree.structure(state)
    u1, _ = tx.update(g, state, params)
    u2, _ = tx.update(g, back, params)
    assert _max_abs_diff(u1, u2) == 0.0


# Finding 2b: two builds of the same gf.inject_hyperparams configuration give states of different
# pytree types when the factory is a lambda or functools.partial (a new object per build).
#
# _config_key keys the per-configuration state class by the factory object, so
# ``make()`` called twice (once for jax.eval_shape / an orbax abstract target / a sharding spec,
# once for training; or after `TrainState.replace(tx=make())`) yields two distinct classes both
# named gradflow.inject.InjectHyperparamsState. A state from one build then cannot be carried by
# the other build's update through jax.lax.scan / fori_loop:
#   TypeError: scan body function carry input and carry output must have the same pytree structure
#   ... is a <class 'gradflow.inject.InjectHyperparamsState'> but ... is a <class 'gradflow.i...
# and every build leaks one class into inject._STATE_TYPES. optax.inject_hyperparams' states have
# the same structure across builds (and the scan runs). Expected: equal tree structures for equal
# configurations. Fix: gradflow/inject.py:_state_type / _config_key (one state class; keep the
# per-configuration check out of the pytree type).


def test_inject_hyperparams_states_of_two_identical_builds_have_one_structure():
    params, g = _params(), _grads()

    def make():
        return gf.inject_hyperparams(lambda learning_rate: gf.chain(gf.clip_by_global_norm(1.0), gf.adam(learning_rate)))(
            learning_rate=1e-3
        )

    first, second = make(), make()
    state = first.init(params)
    assert jax.tree.structure(state) == jax.tree.structure(second.init(params))
    jax.lax.fori_loop(0, 2, lambda i, s: second.update(g, s, params)[1], state)


def test_inject_hyperparams_one_configuration_one_state_type_and_two_configurations_two():
    # a functools.partial built twice is one configuration; other fixed arguments or another
    # closure value are another (each keeps its own set_hyperparams checks)
    import functools

    params = _params()
    t = lambda tx: type(tx.init(params))  # noqa: E731
    part = lambda: gf.inject_hyperparams(functools.partial(gf.adam, nesterov=True))(learning_rate=1e-3)  # noqa: E731
    assert t(part()) is t(part())
    assert t(part()) is not t(gf.inject_hyperparams(functools.partial(gf.adam, nesterov=False))(learning_rate=1e-3))

    def make(b1):
        return gf.inject_hyperparams(lambda learning_rate: gf.adam(learning_rate, b1=b1))(learning_rate=1e-3)

    assert t(make(0.9)) is t(make(0.9)) and t(make(0.9)) is not t(make(0.5))


def test_inject_hyperparams_state_copies_keep_their_type_and_checks():
    import copy

    params = _params()
    state = gf.inject_hyperparams(gf.adam)(learning_rate=1e-3).init(params)
    for back in (copy.copy(state), copy.deepcopy(state), pickle.loads(pickle.dumps(state))):
        assert type(back) is type(state)
        with pytest.raises(ValueError, match="^set_hyperparams: adam: b1"):
            gf.set_hyperparams(back, b1=1.5)


# --------------------------------------------------------------------------------------------
# Finding 3: gf.stats names under flax.nnx.Optimizer all end in "/value".
#
# nnx.Optimizer stores the optax state with every array leaf wrapped in an nnx Variable
# (OptArray), a pytree node with one child keyed ``.value``; diagnostics._walk spells that child's
# key, so gf.stats(optimizer.opt_state) gives "protect/num_skipped/value",
# "dynamic_loss_scale/scale/value", ... instead of the documented "protect/num_skipped" (README:
# "gf.stats(opt_state) shows protect/num_skipped, ..."), and logging code written against a plain
# optax state breaks when moved to nnx. Expected: the same names as for the unwrapped state.
# Fix: gradflow/diagnostics.py:_walk (see through a single-child wrapper node such as
# nnx.Variable instead of appending its key).


def test_stats_names_under_nnx_optimizer_match_the_plain_state():
    nnx = pytest.importorskip("flax.nnx")
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    tx = gf.protect(gf.adam(1e-3))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    plain = tx.init(jax.tree.map(jnp.array, nnx.state(model, nnx.Param)))
    assert sorted(gf.stats(optimizer.opt_state)) == sorted(gf.stats(plain))
    assert "protect/num_skipped" in gf.stats(optimizer.opt_state)


# --------------------------------------------------------------------------------------------
# Finding 4: protect(dynamic_loss_scale(opt)) (and skip_spikes(...)) never lowers the loss scale: training stalls.
#
# protect skips every step whose gradient is non-finite *before* the inner transform runs and
# leaves the inner state bit for bit as it was, so the DynamicLossScaleState never sees the
# overflow and never backs off. An overflowing float16 run then overflows again at the same scale,
# is skipped again, and so on forever (protect's max_consecutive_skips only counts spike-skips, not
# non-finite ones); protect/num_not_finite climbs silently and the model never trains. The order is
# easy to write: the README tells users to "start with gf.protect around the optimizer you already
# use", and that optimizer may already be dynamic_loss_scale(...). (GradScaler's contract, which
# dynamic_loss_scale follows, is that every overflow lowers the scale.)
# Expected: either protect refuses an inner holding a dynamic_loss_scale (ValueError at build or
# init naming `inner` and saying to use dynamic_loss_scale(protect(...))), or the overflow reaches
# it and the scale backs off. Fix: gradflow/protect.py:protect and gradflow/guards.py:skip_spikes
# (which freezes it the same way).


@pytest.mark.parametrize(
    "guard",
    [
        lambda inner: gf.protect(inner, watch_loss=False, max_update_ratio=None),
        lambda inner: gf.skip_spikes(inner),
    ],
    ids=["protect", "skip_spikes"],
)
def test_guard_around_dynamic_loss_scale_does_not_freeze_the_scale(guard):
    # (gf.apply_if_finite(dynamic_loss_scale(...), k) recovers: it lets the (k+1)-th overflow through.)
    params = _params()
    inf = jax.tree.map(lambda p: jnp.full_like(p, jnp.inf), params)
    try:
        tx = guard(gf.dynamic_loss_scale(gf.sgd(0.1)))
        state = tx.init(params)
    except ValueError as e:  # refusing the composition is an acceptable fix
        assert "dynamic_loss_scale" in str(e)
        return
    for _ in range(10):
        _, state = tx.update(inf, state, params, value=jnp.float32(1.0))
    assert float(gf.loss_scale(state)) < 2.0**16


# --------------------------------------------------------------------------------------------
# Finding 5: gf.loss_scale silently picks one of several loss scales (optax.partition groups).
#
# With a dynamic_loss_scale per parameter group (optax.partition / multi_transform), the groups'
# scales diverge as soon as one group overflows and the other does not. loss_scale(state) returns
# the first DynamicLossScaleState it meets, the user scales the loss by it, and the other group
# unscales by its own, different S: its gradients come out 2x (4x, ...) too large, silently.
# Repro: partition {"a": dls(sgd(1)), "b": dls(sgd(1))}; a step where only b's gradient is inf
# (b backs off to 2^15, a stays 2^16); the next step with true gradient 0.5 everywhere, scaled by
# loss_scale(state) = 2^16, gives updates a = -0.5 but b = -1.0.
# optax.tree_utils.tree_get(state, "scale") raises KeyError("Found multiple values for 'scale'")
# and gf.current_hyperparams raises ValueError on a name held twice; loss_scale should likewise
# raise ValueError when the state holds several DynamicLossScaleStates that are not nested in one
# another (nested ones are the documented "outermost wins" case). Fix:
# gradflow/loss_scale.py:loss_scale.


def test_loss_scale_refuses_sibling_loss_scales_instead_of_picking_one():
    # refused from the start, while the scales are still equal: they part at the first overflow
    params = {"a": jnp.ones(2), "b": jnp.ones(2)}
    tx = optax.partition(
        {"A": gf.dynamic_loss_scale(optax.sgd(1.0)), "B": gf.dynamic_loss_scale(optax.sgd(1.0))},
        {"a": "A", "b": "B"},
    )
    state = tx.init(params)
    with pytest.raises(ValueError, match="^loss_scale: the state holds 2 DynamicLossScaleStates side by side"):
        gf.loss_scale(state)
    # nested ones stay the documented case: the outermost is used
    nested = gf.dynamic_loss_scale(gf.dynamic_loss_scale(optax.sgd(1.0), init_scale=8.0), init_scale=4.0)
    assert float(gf.loss_scale(nested.init(params))) == 4.0


# --------------------------------------------------------------------------------------------
# Guarantees (pass today): value= reaches protect through optax's wrappers, and states survive
# orbax and the numpy checkpoint bit for bit.


@pytest.mark.parametrize(
    "wrap",
    [
        lambda tx: optax.MultiSteps(tx, every_k_schedule=2),
        lambda tx: optax.partition({"a": tx, "f": optax.set_to_zero()}, {"w": "a", "b": "f"}),
        lambda tx: optax.masked(tx, {"w": True, "b": False}),
        lambda tx: optax.apply_if_finite(tx, 3),
        lambda tx: optax.chain(optax.clip(10.0), tx),
    ],
    ids=["MultiSteps", "partition", "masked", "optax.apply_if_finite", "optax.chain"],
)
def test_value_reaches_protect_through_optax_wrappers(wrap):
    # guarantee: protect (watch_loss=True) needs value=; each optax wrapper must forward it.
    params, g = _params(), _grads()
    tx = wrap(gf.protect(optax.adam(1e-3)))
    state = tx.init(params)
    step = jax.jit(lambda g, s, v: tx.update(g, s, params, value=v))
    for _ in range(2):
        _, state = step(g, state, jnp.float32(1.25))
    st = gf.stats(state)
    losses = [v for k, v in st.items() if k.endswith("protect/loss")]
    assert losses and float(losses[0]) == 1.25


def test_orbax_round_trip_of_protect_inject_state_is_bit_exact_and_resumes():
    # guarantee: an orbax StandardCheckpointer restore into tx.init's structure gives the same
    # leaves, dtypes and next step as the live state.
    ocp = pytest.importorskip("orbax.checkpoint")
    params, g = _params(), _grads()
    tx = gf.protect(gf.inject_hyperparams(gf.adam)(learning_rate=1e-3))
    state = tx.init(params)
    for i in range(3):
        _, state = tx.update(g, state, params, value=jnp.float32(1.0 + i))
    path = os.path.join(tempfile.mkdtemp(), "ckpt")
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(path, state)
    ckpt.wait_until_finished()
    restored = ckpt.restore(path, tx.init(params))
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
        assert a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b))
    u1, s1 = tx.update(g, state, params, value=jnp.float32(2.0))
    u2, s2 = tx.update(g, restored, params, value=jnp.float32(2.0))
    for a, b in zip(jax.tree.leaves((u1, s1)), jax.tree.leaves((u2, s2))):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_optax_tree_utils_reach_hyperparams_inside_gradflow_wrappers():
    # guarantee: optax.tree_utils.tree_get / tree_set find an injected learning rate through
    # protect and dynamic_loss_scale (gradflow's inject state and optax's).
    params = _params()
    for inject in (gf.inject_hyperparams, optax.inject_hyperparams):
        tx = gf.dynamic_loss_scale(gf.protect(inject(gf.adam)(learning_rate=1e-3)))
        state = tx.init(params)
        assert float(optax.tree_utils.tree_get(state, "learning_rate")) == pytest.approx(1e-3)
        state = optax.tree_utils.tree_set(state, learning_rate=5e-4)
        assert float(gf.current_hyperparams(state)["learning_rate"]) == pytest.approx(5e-4)
