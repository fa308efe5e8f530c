"""A small MLP in plain JAX (jax.numpy, no Flax) for nav-orch: the factory returns
(apply_fn, params), and nav-orch calls apply_fn(params, x)."""
import jax
import jax.numpy as jnp


def make_jax_mlp(in_features: int = 64, hidden: int = 256, classes: int = 10):
    # JAX randomness takes explicit keys: the same key gives every job the same weights.
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    params = {
        "w1": jax.random.normal(k1, (in_features, hidden), jnp.float32) / jnp.sqrt(in_features),
        "b1": jnp.zeros((hidden,), jnp.float32),
        "w2": jax.random.normal(k2, (hidden, classes), jnp.float32) / jnp.sqrt(hidden),
        "b2": jnp.zeros((classes,), jnp.float32),
    }

    def apply_fn(params, x):
        h = jax.nn.relu(x @ params["w1"] + params["b1"])
        return h @ params["w2"] + params["b2"]

    return apply_fn, params
