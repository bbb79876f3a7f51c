"""A numpy evaluator of an XGBoost tree ensemble, for predicting a few rows at a time.

Why: `Booster.inplace_predict` costs about 0.3 ms per call whatever the number of rows or trees
(measured with xgboost 3.2 on one thread), a quarter of the CPU a single-ride request costs the
prediction service. Walking the trees with numpy costs a fraction of that for a handful of rows;
for large batches XGBoost's own predictor is faster, so callers use this one below a row count.

The forest is built from the booster's JSON model and checked against XGBoost on probe rows: a
booster this code does not reproduce exactly (categorical splits, dart, linear boosters, a model
format it misreads) gets no forest, and callers keep using XGBoost.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace

import numpy as np
import xgboost as xgb

logger = logging.getLogger(__name__)

PROBE_ROWS = 256
# Predictions are minutes; float32 sums in another order differ by far less than this.
TOLERANCE = 1e-3


@dataclass(frozen=True)
class Forest:
    """Every tree's nodes in flat arrays; a leaf's children are itself, so walking on is a no-op."""

    feature: np.ndarray  # int64: feature index tested at each node (0 at leaves)
    threshold: np.ndarray  # float32: go left when value < threshold
    left: np.ndarray  # int64: global index of the left child
    right: np.ndarray  # int64
    default_left: np.ndarray  # bool: where a missing (NaN) value goes
    leaf_value: np.ndarray  # float32: the leaf's output (0 at internal nodes)
    roots: np.ndarray  # int64: global index of each tree's root
    depth: int  # the deepest leaf's depth: that many steps reach every leaf
    offset: float  # base score: prediction = offset + sum of the leaves reached

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Predictions (float32) for a float32 matrix (rows, features)."""
        rows = np.arange(len(features))[:, None]
        node = np.broadcast_to(self.roots, (len(features), len(self.roots)))
        for _ in range(self.depth):
            value = features[rows, self.feature[node]]
            go_left = np.where(
                np.isnan(value), self.default_left[node], value < self.threshold[node]
            )
            node = np.where(go_left, self.left[node], self.right[node])
        total = self.leaf_value[node].sum(axis=1, dtype=np.float32)
        return total + np.float32(self.offset)


def _tree_arrays(tree: dict, first: int) -> dict[str, np.ndarray]:
    left = np.asarray(tree["left_children"], dtype=np.int64)
    right = np.asarray(tree["right_children"], dtype=np.int64)
    is_leaf = left == -1
    own = np.arange(len(left), dtype=np.int64)
    conditions = np.asarray(tree["split_conditions"], dtype=np.float32)
    return {
        "feature": np.where(is_leaf, 0, np.asarray(tree["split_indices"], dtype=np.int64)),
        "threshold": np.where(is_leaf, np.float32(0), conditions),
        "left": np.where(is_leaf, own, left) + first,
        "right": np.where(is_leaf, own, right) + first,
        "default_left": np.asarray(tree["default_left"], dtype=bool),
        "leaf_value": np.where(is_leaf, conditions, np.float32(0)),
    }


def _depth(left: np.ndarray, right: np.ndarray, roots: np.ndarray) -> int:
    depth, frontier = 0, roots
    while True:
        children = np.concatenate([left[frontier], right[frontier]])
        moving = children[~np.isin(children, frontier)]
        if moving.size == 0:
            return depth
        depth, frontier = depth + 1, np.unique(moving)


def _structure(booster: xgb.Booster) -> Forest | None:
    model = json.loads(booster.save_raw("json"))["learner"]
    gbm = model["gradient_booster"]
    if gbm.get("name") != "gbtree":
        return None
    trees = gbm["model"]["trees"]
    if not trees or any(any(tree.get("split_type", [])) for tree in trees):
        return None  # categorical splits are not modelled here
    parts, first, roots = [], 0, []
    for tree in trees:
        roots.append(first)
        parts.append(_tree_arrays(tree, first))
        first += len(tree["left_children"])
    arrays = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    root_index = np.asarray(roots, dtype=np.int64)
    depth = _depth(arrays["left"], arrays["right"], root_index)
    return Forest(**arrays, roots=root_index, depth=depth, offset=0.0)


def _probe_rows(forest: Forest, n_features: int) -> np.ndarray:
    """Rows around every threshold of every feature, with some missing values."""
    rng = np.random.default_rng(0)
    probe = np.zeros((PROBE_ROWS, n_features), dtype=np.float32)
    internal = forest.left != np.arange(len(forest.left))
    for column in range(n_features):
        cuts = forest.threshold[internal & (forest.feature == column)]
        low, high = (cuts.min() - 1, cuts.max() + 1) if cuts.size else (-1.0, 1.0)
        probe[:, column] = rng.uniform(low, high, PROBE_ROWS)
        probe[:: 1 + column + n_features, column] = np.nan
    return probe


def compile_forest(booster: xgb.Booster) -> Forest | None:
    """A Forest that reproduces `booster.inplace_predict`, or None when it cannot."""
    try:
        forest = _structure(booster)
    except (AttributeError, KeyError, TypeError, ValueError, xgb.core.XGBoostError) as error:
        # An optimisation only: whatever goes wrong here, the model still loads and predicts.
        logger.info("no numpy forest for this booster (%s): XGBoost predicts alone", error)
        return None
    if forest is None:
        return None
    probe = _probe_rows(forest, booster.num_features())
    expected = booster.inplace_predict(probe)
    raw = forest.predict(probe)
    offset = float(np.median(expected - raw))
    if np.max(np.abs(raw + offset - expected)) > TOLERANCE:
        logger.info("the numpy forest does not reproduce this booster: XGBoost predicts alone")
        return None
    return replace(forest, offset=offset)
