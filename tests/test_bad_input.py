"""One test per row of docs/errors.md: each kind of bad argument, and the error it raises."""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradflow as gf
from gradflow.checkpoint import load_state, save_state
from tests import catalog

NAN = math.nan
PARAMS = {"w": jnp.ones((3,), jnp.float32), "b": jnp.ones((2,), jnp.float32)}
SCHED = gf.constant_schedule(0.1)

# (call, the name the message must contain, the bad value's text)
OUT_OF_RANGE = [
    (lambda: gf.sgd(-0.1), "sgd: learning_rate", "-0.1"),
    (lambda: gf.sgd(0.1, momentum=1.5), "sgd: momentum", "1.5"),
    (lambda: gf.sgd(0.1, nesterov=True), "sgd: nesterov", "momentum=0.0"),
    (lambda: gf.adagrad(0.1, initial_accumulator_value=-1.0), "adagrad: initial_accumulator_value", "-1.0"),
    (lambda: gf.rmsprop(0.1, decay=1.0), "rmsprop: decay", "1.0"),
    (lambda: gf.adam(0.1, b1=1.5), "adam: b1", "1.5"),
    (lambda: gf.adam(0.1, eps=-1e-8), "adam: eps", "-1e-08"),
    (lambda: gf.amsgrad(0.1, b2=-0.1), "amsgrad: b2", "-0.1"),
    (lambda: gf.adamw(0.1, weight_decay=-0.1), "adamw: weight_decay", "-0.1"),
    (lambda: gf.lars(0.1, momentum=2.0), "lars: momentum", "2.0"),
    (lambda: gf.lamb(0.1, b1=1.0), "lamb: b1", "1.0"),
    (lambda: gf.adam_atan2(0.1, a=0.0), "adam_atan2: a", "0.0"),
    (lambda: gf.scale_by_adam_atan2(b=-1.0), "scale_by_adam_atan2: b", "-1.0"),
    (lambda: gf.stable_adamw(0.1, eps=0.0), "stable_adamw: eps", "0.0"),
    (lambda: gf.scale_by_stable_adam(clip_threshold=-1.0), "scale_by_stable_adam: clip_threshold", "-1.0"),
    (lambda: gf.spam(0.1, reset_interval=-1), "spam: reset_interval", "-1"),
    (lambda: gf.scale_by_spam(max_decay=1.0), "scale_by_spam: max_decay", "1.0"),
    (lambda: gf.scale_by_rss(eps=-1.0), "scale_by_rss: eps", "-1.0"),
    (lambda: gf.scale_by_rms(decay=1.2), "scale_by_rms: decay", "1.2"),
    (lambda: gf.scale_by_adam(b2=1.0), "scale_by_adam: b2", "1.0"),
    (lambda: gf.scale_by_amsgrad(b1=-0.5), "scale_by_amsgrad: b1", "-0.5"),
    (lambda: gf.scale_by_trust_ratio(eps=-1.0), "scale_by_trust_ratio: eps", "-1.0"),
    (lambda: gf.trace(1.5), "trace: decay", "1.5"),
    (lambda: gf.add_decayed_weights(-1.0), "add_decayed_weights: weight_decay", "-1.0"),
    (lambda: gf.scale(math.inf), "scale: step_size", "inf"),
    (lambda: gf.scale_by_learning_rate(-1.0), "scale_by_learning_rate: learning_rate", "-1.0"),
    (lambda: gf.clip(-1.0), "clip: max_delta", "-1.0"),
    (lambda: gf.clip_by_norm(0.0), "clip_by_norm: max_norm", "0.0"),
    (lambda: gf.clip_by_global_norm(-5.0), "clip_by_global_norm: max_norm", "-5.0"),
    (lambda: gf.clip_by_block_rms(-1.0), "clip_by_block_rms: threshold", "-1.0"),
    (lambda: gf.adaptive_grad_clip(-0.1), "adaptive_grad_clip: clipping", "-0.1"),
    (lambda: gf.autoclip(percentile=101.0), "autoclip: percentile", "101.0"),
    (lambda: gf.zclip(alpha=1.5), "zclip: alpha", "1.5"),
    (lambda: gf.adagc(beta=1.0), "adagc: beta", "1.0"),
    (lambda: gf.clip_update_norm(window=0), "clip_update_norm: window", "0"),
    (lambda: gf.clip_update_norm(8, min_history=9), "clip_update_norm: min_history", "9"),
    (lambda: gf.apply_if_finite(gf.sgd(0.1), -1), "apply_if_finite: max_consecutive_errors", "-1"),
    (lambda: gf.skip_spikes(gf.sgd(0.1), window=1), "skip_spikes: window", "1"),
    (lambda: gf.dynamic_loss_scale(gf.sgd(0.1), backoff_factor=1.5), "dynamic_loss_scale: backoff_factor", "1.5"),
    (lambda: gf.dynamic_loss_scale(gf.sgd(0.1), growth_interval=0), "dynamic_loss_scale: growth_interval", "0"),
    (lambda: gf.reduce_on_plateau(factor=2.0), "reduce_on_plateau: factor", "2.0"),
    (lambda: gf.reduce_on_plateau(eps=-1e-8), "reduce_on_plateau: eps", "-1e-08"),
    (lambda: gf.restart_on_loss(SCHED, patience=-1), "restart_on_loss: patience", "-1"),
    (lambda: gf.restart_on_loss(SCHED), "restart_on_loss: give threshold, patience or both", "None"),
    (lambda: gf.restart_on_loss(0.1, patience=1), "restart_on_loss: schedule", "0.1"),
    (lambda: gf.scale_by_schedule(0.1), "scale_by_schedule: step_size_fn", "0.1"),
    (lambda: gf.constant_schedule(-1.0), "constant_schedule: value", "-1.0"),
    (lambda: gf.polynomial_schedule(0.1, 0.0, 1.0, 0), "polynomial_schedule: transition_steps", "0"),
    (lambda: gf.linear_schedule(0.1, 0.0, 2.5), "linear_schedule: transition_steps", "2.5"),
    (lambda: gf.exponential_decay(0.1, 10, -0.5), "exponential_decay: decay_rate", "-0.5"),
    (lambda: gf.cosine_decay_schedule(0.1, 0), "cosine_decay_schedule: decay_steps", "0"),
    (lambda: gf.warmup_cosine_decay_schedule(0.0, 0.1, -1, 10), "warmup_cosine_decay_schedule: warmup_steps", "-1"),
    (lambda: gf.piecewise_constant_schedule(0.1, {20: 0.5, -10: 0.1}), "piecewise_constant_schedule", "-10"),
    (lambda: gf.join_schedules([SCHED, SCHED], [10, 5]), "join_schedules", "5"),
    (lambda: gf.warm_restarts_schedule(0.1, 0), "warm_restarts_schedule: first_cycle_steps", "0"),
    (lambda: gf.cosine_onecycle_schedule(100, 0.1, pct_start=1.5), "cosine_onecycle_schedule: pct_start", "1.5"),
    (lambda: gf.wsd_schedule(0.1, 10, 10, 10, decay_shape="bogus"), "wsd_schedule: decay_shape", "bogus"),
    (lambda: gf.inverse_sqrt_schedule(-0.1), "inverse_sqrt_schedule: peak_value", "-0.1"),
    (lambda: gf.inject_hyperparams(gf.sgd, static_args="lr")(0.1), "inject_hyperparams: static_args", "lr"),
]


@pytest.mark.parametrize("call, name, value", OUT_OF_RANGE, ids=[n for _, n, _ in OUT_OF_RANGE])
def test_row_out_of_range_hyperparameter(call, name, value):
    with pytest.raises(ValueError) as info:
        call()
    assert name in str(info.value) and value in str(info.value), str(info.value)


NAN_HYPERPARAMS = [
    ("sgd", lambda: gf.sgd(NAN)),
    ("sgd", lambda: gf.sgd(0.1, momentum=NAN)),
    ("adagrad", lambda: gf.adagrad(NAN)),
    ("rmsprop", lambda: gf.rmsprop(0.1, eps=NAN)),
    ("adam", lambda: gf.adam(0.1, b2=NAN)),
    ("amsgrad", lambda: gf.amsgrad(NAN)),
    ("adamw", lambda: gf.adamw(0.1, weight_decay=NAN)),
    ("lars", lambda: gf.lars(NAN)),
    ("lamb", lambda: gf.lamb(0.1, eps=NAN)),
    ("scale", lambda: gf.scale(NAN)),
    ("clip_by_global_norm", lambda: gf.clip_by_global_norm(NAN)),
    ("zclip", lambda: gf.zclip(z_threshold=NAN)),
    ("skip_spikes", lambda: gf.skip_spikes(gf.sgd(0.1), threshold=NAN)),
    ("reduce_on_plateau", lambda: gf.reduce_on_plateau(rtol=NAN)),
    ("restart_on_loss", lambda: gf.restart_on_loss(SCHED, threshold=NAN)),
    ("cosine_decay_schedule", lambda: gf.cosine_decay_schedule(NAN, 10)),
    ("warmup_cosine_decay_schedule", lambda: gf.warmup_cosine_decay_schedule(0.0, NAN, 2, 10)),
    ("exponential_decay", lambda: gf.exponential_decay(0.1, 10, NAN)),
]


@pytest.mark.parametrize("fn, call", NAN_HYPERPARAMS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(NAN_HYPERPARAMS)])
def test_row_nan_hyperparameter(fn, call):
    with pytest.raises(ValueError, match=rf"^{fn}: .*nan"):
        call()


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: gf.adam(10**400), "adam: learning_rate"),
        (lambda: gf.adam_atan2(0.1, a=10**400), "adam_atan2: a"),
        (lambda: gf.spam(0.1, threshold=10**400), "spam: threshold"),
        (lambda: gf.clip_relative_update(0.1, 10**400), "clip_relative_update: min_weight_rms"),
        (lambda: gf.clip_by_global_norm(10**400), "clip_by_global_norm: max_norm"),
        (lambda: gf.linear_schedule(1.0, 0.0, 10**400), "linear_schedule: transition_steps"),
    ],
    ids=["adam", "adam_atan2", "spam", "clip_relative_update", "clip_by_global_norm", "linear_schedule"],
)
def test_row_number_beyond_float64(call, name):
    with pytest.raises(ValueError, match=rf"^{name} must be a number within float64's range, got 1000"):
        call()


@pytest.mark.parametrize(
    "call",
    [lambda: gf.adam("0.1"), lambda: gf.sgd([0.1]), lambda: gf.clip_by_norm("big"), lambda: gf.trace(None)],
    ids=["adam", "sgd", "clip_by_norm", "trace"],
)
def test_row_non_number_hyperparameter(call):
    with pytest.raises(ValueError, match="must be a number or a schedule"):
        call()


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda f: gf.adam(0.1, b1=f), "adam: b1"),
        (lambda f: gf.sgd(0.1, momentum=f), "sgd: momentum"),
        (lambda f: gf.protect(gf.adam(0.1), threshold=f), "protect: threshold"),
        (lambda f: gf.skip_spikes(gf.adam(0.1), threshold=f), "skip_spikes: threshold"),
        (lambda f: gf.dynamic_loss_scale(gf.adam(0.1), init_scale=f), "dynamic_loss_scale: init_scale"),
        (lambda f: gf.clip_relative_update(max_ratio=f), "clip_relative_update: max_ratio"),
        (lambda f: gf.stable_adamw(0.1, clip_threshold=f), "stable_adamw: clip_threshold"),
        (lambda f: gf.cosine_decay_schedule(f, 100), "cosine_decay_schedule: init_value"),
    ],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_row_function_for_a_number(call, name):
    with pytest.raises(ValueError, match=f"{name} must be a number \\(a schedule is taken here only through"):
        call(lambda count: 0.5)


def test_row_function_for_a_number_is_a_schedule_where_one_is_read():
    sched = lambda count: 0.1 / (1 + count)  # noqa: E731
    params = {"w": jnp.ones(3)}
    for tx in [gf.adamw(sched, weight_decay=sched), gf.clip_by_global_norm(sched),
               gf.inject_hyperparams(gf.adam)(0.1, b1=lambda count: 0.5)]:
        u, _ = jax.jit(tx.update)(params, tx.init(params), params)
        assert np.all(np.isfinite(np.asarray(u["w"])))
    with pytest.raises(ValueError, match=r"adam: b1 must be in \[0, 1\), got 1.5"):
        gf.inject_hyperparams(gf.adam)(0.1, b1=lambda count: 1.5)  # its value at step 0 is checked


@pytest.mark.parametrize(
    "build",
    [
        lambda n: gf.apply_if_finite(gf.sgd(0.1), n),
        lambda n: gf.skip_spikes(gf.sgd(0.1), max_consecutive_skips=n),
        lambda n: gf.protect(gf.sgd(0.1), max_consecutive_skips=n),
        lambda n: gf.dynamic_loss_scale(gf.sgd(0.1), growth_interval=n),
        lambda n: gf.spam(0.1, reset_interval=n),
        lambda n: gf.zclip(warmup_steps=n),
        lambda n: gf.adagc(warmup_steps=n),
        lambda n: gf.reduce_on_plateau(patience=n),
        lambda n: gf.restart_on_loss(SCHED, patience=n),
    ],
    ids=["apply_if_finite", "skip_spikes", "protect", "dynamic_loss_scale", "spam", "zclip", "adagc",
         "reduce_on_plateau", "restart_on_loss"],
)
def test_row_step_count_beyond_int32(build):
    with pytest.raises(ValueError, match=r"must be at most 2\*\*31 - 1 = 2147483647 .*got 2147483648"):
        build(2**31)
    tx = build(2**31 - 1)  # where the int32 counters stop: "never", and it runs
    params = {"w": jnp.ones(3)}
    u, _ = jax.jit(lambda g, s: tx.update(g, s, params, value=jnp.float32(1.0)))(params, tx.init(params))
    assert np.all(np.isfinite(np.asarray(u["w"])))


@pytest.mark.parametrize(
    "build",
    [lambda n: gf.protect(gf.sgd(0.1), window=n), lambda n: gf.skip_spikes(gf.sgd(0.1), window=n),
     lambda n: gf.clip_update_norm(window=n), lambda n: gf.autoclip(10.0, history_size=n)],
    ids=["protect", "skip_spikes", "clip_update_norm", "autoclip"],
)
def test_row_step_count_beyond_int32_window(build):
    # A window is indexed by an int32 ring counter (10**12 failed at init, allocating).
    with pytest.raises(ValueError, match=r"(window|history_size) must be at most 2\*\*31 - 1 = 2147483647 .*got 1000000000000"):
        build(10**12)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: gf.adam(0.1, mu_dtype=jnp.int32), "adam: mu_dtype must be None or a floating-point"),
        (lambda: gf.adamw(0.1, nu_dtype=jnp.bool_), "adamw: nu_dtype must be None or a floating-point"),
        (lambda: gf.scale_by_amsgrad(mu_dtype="int8"), "scale_by_amsgrad: mu_dtype must be None or a floating-point"),
        (lambda: gf.spam(0.1, nu_dtype=jnp.uint8), "spam: nu_dtype must be None or a floating-point"),
        (lambda: gf.stable_adamw(0.1, mu_dtype="nope"), "stable_adamw: mu_dtype must be None or a floating-point"),
        (lambda: gf.adam_atan2(0.1, mu_dtype=jnp.int16), "adam_atan2: mu_dtype must be None or a floating-point"),
        (lambda: gf.trace(0.9, accumulator_dtype=jnp.int32), "trace: accumulator_dtype must be None or a floating"),
    ],
)
def test_row_moment_dtype_not_a_float(call, message):
    with pytest.raises(ValueError, match=message):
        call()
    gf.adam(0.1, mu_dtype=jnp.bfloat16, nu_dtype="float32")  # floating dtypes, by object or name, are fine


CHAINED = {**catalog.OPTIMIZERS, **catalog.GUARDS}


@pytest.mark.parametrize(
    "name",
    list(CHAINED) + list(catalog.CLIPPERS),
)
@pytest.mark.parametrize("dtype", [jnp.int32, jnp.bool_])
def test_row_integer_or_boolean_params(name, dtype):
    tx = {**CHAINED, **catalog.CLIPPERS}[name]()
    with pytest.raises(TypeError, match=r"\['b'\] has dtype"):
        tx.init({"w": jnp.ones((3,)), "b": jnp.ones((2,), dtype)})


# Transforms that keep per-leaf state: updates with another tree cannot be matched to it.
PER_LEAF_STATE = [n for n in CHAINED if n not in ("sgd", "lars")] + ["adagc"]


@pytest.mark.parametrize("name", PER_LEAF_STATE)
def test_row_updates_tree_differs_from_state(name):
    tx = {**CHAINED, **catalog.CLIPPERS}[name]()
    state = tx.init(PARAMS)
    with pytest.raises(TypeError, match="tree structure differs") as info:
        tx.update({"w": jnp.ones((3,))}, state, value=jnp.float32(1.0))
    assert "updates:" in str(info.value)  # both structures are shown


UPDATES_VS_PARAMS = list(CHAINED) + list(catalog.CLIPPERS)


@pytest.mark.parametrize("name", UPDATES_VS_PARAMS)
def test_row_updates_tree_differs_from_params(name):
    tx = {**CHAINED, **catalog.CLIPPERS}[name]()
    with pytest.raises(TypeError, match="tree structure differs"):
        tx.update({"w": jnp.ones((3,))}, tx.init({"w": jnp.ones((3,))}), PARAMS, value=jnp.float32(1.0))


def test_row_apply_updates_tree_differs():
    with pytest.raises(TypeError, match="apply_updates: the updates' tree structure differs"):
        gf.apply_updates(PARAMS, {"w": jnp.ones((3,))})


@pytest.mark.parametrize(
    "tx, fn",
    [(gf.lars(0.1), "scale_by_trust_ratio"), (gf.lamb(0.1), "add_decayed_weights"), (gf.adaptive_grad_clip(0.1), "adaptive_grad_clip")],
    ids=["lars", "lamb", "adaptive_grad_clip"],
)
def test_row_missing_params(tx, fn):
    with pytest.raises(ValueError, match=f"{fn}: update needs params"):
        tx.update(PARAMS, tx.init(PARAMS))


def test_row_chain_state_of_another_length():
    tx = gf.chain(gf.clip_by_global_norm(1.0), gf.sgd(0.1))
    with pytest.raises(TypeError, match="chain: state has 1 entries but the chain has 2"):
        tx.update(PARAMS, (gf.EmptyState(),), PARAMS)


def _per_leaf(step):
    """A schedule that wrongly returns one value per parameter."""
    return jnp.full((3,), 0.1) * (step + 1)


WRONG_SHAPE_SCHEDULE = [
    ("sgd", lambda s: gf.sgd(s), "scale_by_learning_rate: learning_rate"),
    ("sgd_momentum", lambda s: gf.sgd(s, momentum=0.9), "scale_by_learning_rate: learning_rate"),
    ("adam", lambda s: gf.adam(s), "scale_by_learning_rate: learning_rate"),
    ("adagrad", lambda s: gf.adagrad(s, lr_decay=0.1), "_per_leaf"),
    ("adamw_weight_decay", lambda s: gf.adamw(0.1, weight_decay=s), "add_decayed_weights: weight_decay"),
    ("lamb_weight_decay", lambda s: gf.lamb(0.1, weight_decay=s), "_per_leaf"),
    ("scale_by_schedule", lambda s: gf.scale_by_schedule(s), "scale_by_schedule: step_size_fn"),
    ("clip", lambda s: gf.clip(s), "_per_leaf"),
    ("clip_by_norm", lambda s: gf.clip_by_norm(s), "_per_leaf"),
    ("clip_by_global_norm", lambda s: gf.clip_by_global_norm(s), "_per_leaf"),
    ("adaptive_grad_clip", lambda s: gf.adaptive_grad_clip(s), "_per_leaf"),
    ("restart_on_loss", lambda s: gf.restart_on_loss(s, patience=1), "restart_on_loss: schedule"),
    ("inject_hyperparams", lambda s: gf.inject_hyperparams(gf.sgd)(s), "inject_hyperparams(sgd): learning_rate"),
]


def _traced_step(build, schedule) -> None:
    """One update of ``build(schedule)`` traced under jit."""

    def step(params):
        tx = build(schedule)
        return tx.update(params, tx.init(params), params, value=jnp.float32(1.0))

    jax.jit(step)({"w": jnp.ones((3,))})


def _no_step():
    return 0.1


SCHEDULE_ARGUMENTS = dict(argvalues=[r[1:] for r in WRONG_SHAPE_SCHEDULE], ids=[r[0] for r in WRONG_SHAPE_SCHEDULE])


@pytest.mark.parametrize("build, where", **SCHEDULE_ARGUMENTS)
def test_row_schedule_returning_an_array(build, where):
    """Raised when the update is traced (under jit too), naming the schedule and, where known, the argument."""
    with pytest.raises(ValueError, match="returned an array of shape \\(3,\\)") as info:
        _traced_step(build, _per_leaf)
    assert where in str(info.value) and "_per_leaf" in str(info.value), str(info.value)


@pytest.mark.parametrize("build, where", **SCHEDULE_ARGUMENTS)
def test_row_schedule_of_another_arity(build, where):
    """A function that does not take the step is refused when first called, naming the schedule and the argument."""
    with pytest.raises(TypeError, match="the schedule _no_step must take one argument, the step") as info:
        _traced_step(build, _no_step)
    assert where.replace("_per_leaf", "_no_step") in str(info.value), str(info.value)


def test_row_schedule_on_an_array_of_steps_is_fine():
    """A schedule evaluated elementwise on an array of steps returns that array's shape; no error."""
    assert gf.hparams.value_at(gf.cosine_decay_schedule(0.1, 10), jnp.arange(4)).shape == (4,)




@pytest.mark.parametrize(
    "make, fn",
    [
        (lambda: gf.reduce_on_plateau(), "reduce_on_plateau"),
        (lambda: gf.restart_on_loss(SCHED, patience=1), "restart_on_loss"),
        (lambda: gf.skip_spikes(gf.sgd(0.1), window=4, min_samples=2), "skip_spikes"),
    ],
    ids=["reduce_on_plateau", "restart_on_loss", "skip_spikes"],
)
@pytest.mark.parametrize("shape", [(3,), (1,)])
def test_row_value_not_a_scalar(make, fn, shape):
    tx = make()
    with pytest.raises(TypeError, match=f"{fn}: value must be a scalar"):
        tx.update(PARAMS, tx.init(PARAMS), PARAMS, value=jnp.ones(shape))


@pytest.mark.parametrize(
    "tx, fn",
    [(gf.reduce_on_plateau(), "reduce_on_plateau"), (gf.restart_on_loss(SCHED, patience=1), "restart_on_loss")],
    ids=["reduce_on_plateau", "restart_on_loss"],
)
def test_row_value_missing(tx, fn):
    with pytest.raises(TypeError, match=f"{fn}: update needs the loss"):
        tx.update(PARAMS, tx.init(PARAMS), PARAMS)


def test_row_clip_complex_leaves():
    g = {"z": jnp.asarray([3 + 4j], jnp.complex64)}
    with pytest.raises(ValueError, match="[Cc]omplex"):
        gf.clip(1.0).update(g, gf.clip(1.0).init(g))
    with pytest.raises(ValueError, match=r"^clip: params leaf \['z'\] has dtype complex64; complex gradients have no order"):
        gf.clip(1.0).init(g)


def test_row_flatten_small_update_dtype():
    params = {"w": jnp.ones((4, 3), jnp.bfloat16), "b": jnp.ones((3,), jnp.float32)}
    grads = {"w": jnp.full((4, 3), 0.1, jnp.float32), "b": jnp.full((3,), 0.1, jnp.float32)}
    tx = gf.flatten_small(gf.adam(1e-2))
    with pytest.raises(TypeError, match=r"^flatten_small: the update at \['w'\] has dtype float32 but its parameter "
                                        r"has dtype bfloat16"):
        tx.update(grads, tx.init(params), params)


@pytest.mark.parametrize("guard", ["protect", "skip_spikes"])
def test_row_guard_around_loss_scale(guard):
    params = {"w": jnp.ones(3)}
    tx = getattr(gf, guard)(gf.dynamic_loss_scale(gf.sgd(0.1)))
    with pytest.raises(ValueError, match=rf"^{guard}: inner holds a DynamicLossScaleState, which must see every "
                                         rf"non-finite step .* dynamic_loss_scale\({guard}\(\.\.\.\)\)"):
        tx.init(params)
    gf.dynamic_loss_scale(getattr(gf, guard)(gf.sgd(0.1))).init(params)  # the other way round
    gf.protect(gf.dynamic_loss_scale(gf.sgd(0.1)), skip_not_finite=False).init(params)  # overflows reach it


def test_row_loss_scale_side_by_side():
    params = {"a": jnp.ones(2), "b": jnp.ones(2)}
    tx = optax.partition({"A": gf.dynamic_loss_scale(gf.sgd(1.0)), "B": gf.dynamic_loss_scale(gf.sgd(1.0))},
                         {"a": "A", "b": "B"})
    with pytest.raises(ValueError, match="^loss_scale: the state holds 2 DynamicLossScaleStates side by side"):
        gf.loss_scale(tx.init(params))


def test_row_schedule_value_beyond_float32():
    with pytest.raises(ValueError, match=r"^linear_schedule: init_value must be at most float32's largest number"):
        gf.linear_schedule(1e39, 0.0, 10)
    with pytest.raises(ValueError, match=r"^cosine_onecycle_schedule: div_factor·final_div_factor must be a positive"):
        gf.cosine_onecycle_schedule(10, 1.0, div_factor=1e-30, final_div_factor=1e-30)  # 1e-60 is 0 in float32
    gf.linear_schedule(3e38, 0.0, 10)  # float32 holds it


def test_row_atan2_complex_leaves():
    params = {"z": jnp.asarray([3 + 4j], jnp.complex64)}
    with pytest.raises(TypeError, match=r"adam_atan2: params leaf \['z'\] has dtype complex64; atan2 needs real leaves"):
        gf.adam_atan2(0.1).init(params)


@pytest.mark.parametrize(
    "build, where",
    [
        (lambda t: gf.chain(gf.sgd(0.1), t), "chain: transforms[1]"),
        (lambda t: gf.apply_if_finite(t, 1), "apply_if_finite: inner"),
        (lambda t: gf.skip_spikes(t), "skip_spikes: inner"),
        (lambda t: gf.protect(t), "protect: inner"),
        (lambda t: gf.dynamic_loss_scale(t), "dynamic_loss_scale: inner"),
        (lambda t: gf.flatten_small(t), "flatten_small: tx"),
        (lambda t: gf.monitor(t if t is not None else 3), "monitor: inner"),  # monitor(None) watches the updates
    ],
    ids=["chain", "apply_if_finite", "skip_spikes", "protect", "dynamic_loss_scale", "flatten_small", "monitor"],
)
@pytest.mark.parametrize("bad", [None, 3, gf.adam], ids=["None", "number", "factory"])
def test_row_not_a_transform(build, where, bad):
    # a bare AttributeError ('NoneType' object has no attribute 'update') named neither
    with pytest.raises(TypeError, match=rf"{re.escape(where)} must be a gradient transformation \(with init and update\), got "):
        build(bad)


def test_row_loss_scale_without_dynamic_loss_scale():
    with pytest.raises(ValueError, match="loss_scale: the state holds no DynamicLossScaleState"):
        gf.loss_scale(gf.adam(0.1).init(PARAMS))


def test_row_inject_names():
    state = gf.inject_hyperparams(gf.sgd)(0.1).init(PARAMS)
    with pytest.raises(ValueError, match=r"set_hyperparams: no injected hyperparameter named \['lr'\]"):
        gf.set_hyperparams(state, lr=0.2)
    with pytest.raises(ValueError, match="current_hyperparams: the state holds no inject_hyperparams state"):
        gf.current_hyperparams(gf.adam(0.1).init(PARAMS))


def test_row_load_state_of_another_tree(tmp_path):
    save_state(tmp_path / "s.npz", gf.adam(0.1).init(PARAMS))
    with pytest.raises(ValueError, match="load_state: the file and `like` hold different leaves"):
        load_state(tmp_path / "s.npz", gf.sgd(0.1, momentum=0.9).init(PARAMS))
    like = gf.adam(0.1).init({"w": jnp.ones((4,)), "b": jnp.ones((2,))})
    with pytest.raises(ValueError, match=r"load_state: leaf .*\['w'\] is float32\[3\] in the file, float32\[4\]"):
        load_state(tmp_path / "s.npz", like)


def test_row_non_finite_gradients_are_not_an_error():
    """NaN gradients propagate through optimizers (so they show) and are skipped by the guards."""
    g = {"w": jnp.asarray([1.0, np.nan, 0.0]), "b": jnp.ones((2,))}
    u, _ = gf.adam(0.1).update(g, gf.adam(0.1).init(PARAMS), PARAMS)
    assert np.isnan(np.asarray(u["w"][1]))
    guard = gf.apply_if_finite(gf.adam(0.1), max_consecutive_errors=3)
    u, state = guard.update(g, guard.init(PARAMS), PARAMS)
    assert bool(state.skipped) and all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(u))


@pytest.mark.parametrize("name", CHAINED)
def test_row_updates_leaf_shape_differs(name):
    tx = CHAINED[name]()
    grads = {"w": jnp.ones((3, 1), jnp.float32), "b": jnp.ones((2,), jnp.float32)}
    with pytest.raises(ValueError, match=r"updates leaf \['w'\] has shape \(3, 1\) but the .* leaf has shape \(3,\)"):
        jax.jit(tx.update)(grads, tx.init(PARAMS), PARAMS)
    with pytest.raises(ValueError, match=r"apply_updates: updates leaf \['w'\] has shape \(3, 1\)"):
        gf.apply_updates(PARAMS, grads)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: gf.sgd(0.1, True), "sgd: momentum must be a number or a schedule, got True"),
        (lambda: gf.adam(True), "adam: learning_rate must be a number or a schedule, got True"),
        (lambda: gf.adam(0.1, b1=np.bool_(False)), "adam: b1 must be a number or a schedule"),
        (lambda: gf.apply_if_finite(gf.sgd(0.1), True), "apply_if_finite: max_consecutive_errors must be an integer"),
        (lambda: gf.reduce_on_plateau(patience=True), "reduce_on_plateau: patience must be an integer"),
    ],
)
def test_row_boolean_hyperparameter(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: gf.adam(0.1, nesterov=1), "adam: nesterov must be True or False, got 1"),
        (lambda: gf.adam(0.1, bias_correction="no"), "adam: bias_correction must be True or False, got 'no'"),
        (lambda: gf.scale_by_adam(nesterov=None), "scale_by_adam: nesterov must be True or False, got None"),
        (lambda: gf.amsgrad(0.1, max_of_debiased=0), "amsgrad: max_of_debiased must be True or False, got 0"),
        (lambda: gf.rmsprop(0.1, centered=1.0), "rmsprop: centered must be True or False, got 1.0"),
        (lambda: gf.scale_by_rms(eps_in_sqrt="yes"), "scale_by_rms: eps_in_sqrt must be True or False, got 'yes'"),
        (lambda: gf.adagrad(0.1, eps_in_sqrt=1), "adagrad: eps_in_sqrt must be True or False, got 1"),
        (lambda: gf.sgd(0.1, 0.9, nesterov=1), "sgd: nesterov must be True or False, got 1"),
        (lambda: gf.trace(0.9, nesterov="y"), "trace: nesterov must be True or False, got 'y'"),
        (lambda: gf.lars(0.1, decay_inside_norm=1), "lars: decay_inside_norm must be True or False, got 1"),
        (lambda: gf.spam(0.1, adaptive_clip=1), "spam: adaptive_clip must be True or False, got 1"),
        (lambda: gf.scale_by_learning_rate(0.1, flip_sign="False"),
         "scale_by_learning_rate: flip_sign must be True or False, got 'False'"),
        (lambda: gf.clip_by_global_norm(1.0, pytorch_eps="no"), "clip_by_global_norm: pytorch_eps must be True or False"),
        (lambda: gf.adaptive_grad_clip(0.01, pytorch_layout=1), "adaptive_grad_clip: pytorch_layout must be True or False"),
        (lambda: gf.exponential_decay(0.1, 10, 0.5, staircase="no"), "exponential_decay: staircase must be True or False"),
        (lambda: gf.warmup_exponential_decay_schedule(0.0, 0.1, 5, 10, 0.5, staircase=0),
         "warmup_exponential_decay_schedule: staircase must be True or False, got 0"),
    ],
)
def test_row_flag_that_is_not_a_boolean(call, message):
    with pytest.raises(ValueError, match=message):
        call()
    gf.adam(0.1, nesterov=np.bool_(True))  # NumPy booleans are booleans


@pytest.mark.parametrize(
    "call",
    [
        lambda: gf.adam(0.1, 0.9, 0.999, 1e-8, 0.0),  # optax's eps_root is gradflow's keyword
        lambda: gf.adamw(0.1, 0.9, 0.999, 1e-8, 1e-2),  # optax's fifth is eps_root, torch's weight_decay
        lambda: gf.amsgrad(0.1, 0.9, 0.999, 1e-8, False),
        lambda: gf.lamb(0.1, 0.9, 0.999, 1e-6, 0.01),
        lambda: gf.scale_by_adam(0.9, 0.999, 1e-8, 0.0),
        lambda: gf.rmsprop(0.1, 0.9, 1e-8, True),
        lambda: gf.spam(0.1, 0.9, 0.999, 1e-6, 0.0),
        lambda: gf.adam_atan2(0.1, 0.9, 0.99, 1.27),
    ],
)
def test_row_arguments_after_the_core_hyperparameters_are_keyword_only(call):
    with pytest.raises(TypeError, match="positional argument"):
        call()


@pytest.mark.parametrize(
    "tx, block, name",
    [(lambda: gf.adam(0.1, b2=1 - 1e-9), "scale_by_adam", "b2"), (lambda: gf.amsgrad(0.1, b1=1 - 1e-10), "scale_by_amsgrad", "b1"),
     (lambda: gf.spam(0.1, b2=1 - 1e-9), "scale_by_spam", "b2"), (lambda: gf.adam_atan2(0.1, b2=1 - 1e-9), "scale_by_adam_atan2", "b2")],
    ids=["adam", "amsgrad", "spam", "adam_atan2"],
)
def test_row_beta_that_rounds_to_one(tx, block, name):
    tx = tx()
    with pytest.raises(ValueError, match=f"{block}: {name} must be < 1 in the update's dtype float32, got 0.99999"):
        jax.jit(tx.update)(PARAMS, tx.init(PARAMS), PARAMS)


def test_row_beta_that_rounds_to_one_is_fine_in_float64(x64):
    tx = gf.adam(0.1, b2=1 - 1e-9)
    params = {"w": jnp.ones(3, jnp.float64)}
    u, _ = jax.jit(tx.update)(params, tx.init(params), params)
    assert np.all(np.isfinite(np.asarray(u["w"])))


def test_row_set_hyperparams_bad_value():
    state = gf.inject_hyperparams(gf.adam)(0.1).init(PARAMS)
    with pytest.raises(ValueError, match=r"set_hyperparams: adam: b2 must be in \[0, 1\), got 1.0"):
        gf.set_hyperparams(state, b2=1.0)
    with pytest.raises(ValueError, match=r"set_hyperparams: adam: b2 must be in \[0, 1\), got 1.0"):
        gf.set_hyperparams(state, b2=1 - 1e-9)  # judged as float32 stores it
    with pytest.raises(ValueError, match="set_hyperparams: b1 must be a scalar number"):
        gf.set_hyperparams(state, b1=np.array([0.9, 0.5, 0.0]))
    scheduled = gf.inject_hyperparams(gf.adam)(SCHED).init(PARAMS)
    with pytest.raises(ValueError, match=r"set_hyperparams: \['learning_rate'\] follow a schedule"):
        gf.set_hyperparams(scheduled, learning_rate=0.2)


@pytest.mark.parametrize("name", ["clip", "clip_by_norm", "clip_by_global_norm", "autoclip", "zclip", "adagc"])
def test_row_clipper_state_none(name):
    tx = {"clip": lambda: gf.clip(1.0), "clip_by_norm": lambda: gf.clip_by_norm(1.0),
          "clip_by_global_norm": lambda: gf.clip_by_global_norm(1.0)}.get(name, getattr(gf, name))()
    with pytest.raises(TypeError, match=f"{name}: update got state=None.*state = tx.init"):
        tx.update(PARAMS, None, PARAMS)


def test_row_load_state_names_dtypes(tmp_path):
    save_state(tmp_path / "s", gf.adam(0.1).init({"w": jnp.ones(3, jnp.bfloat16)}))
    with pytest.raises(ValueError, match=r"bfloat16\[3\] in the file, float16\[3\] in `like`"):
        load_state(tmp_path / "s", gf.adam(0.1).init({"w": jnp.ones(3, jnp.float16)}))


def test_row_python_numbers_and_numpy_integers_are_fine():
    tx = gf.adam(0.1)
    u, _ = tx.update({"a": jnp.asarray(0.5)}, tx.init({"a": 1.0}), {"a": 1.0})
    assert np.isfinite(float(gf.apply_updates({"a": 1.0}, u)["a"]))
    gf.reduce_on_plateau(patience=np.int64(3), cooldown=np.int32(1), accumulation_size=np.uint8(2))
    gf.restart_on_loss(SCHED, patience=np.int64(3))
    gf.skip_spikes(gf.sgd(0.1), window=np.int64(8), min_samples=np.int16(4))
    gf.cosine_decay_schedule(0.1, np.int64(10))
