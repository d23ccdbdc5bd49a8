"""A steady-state local search around the study's front, each trial chosen by what it is predicted to add: the
sampler that makes the outer loop earn its trials.

Why not NSGA-II's crossover: the gradient phase's proposals are good and unlike each other (a token schedule
from one, a per-block width profile from another); uniform crossover of such parents over ~90 per-block
parameters lands on over-pruned configs (issue 13's runs: NSGA-II's own trials 6-8 points below the proposals
on shared weights). Small moves around the best configs found so far keep what the phase learned and trade
widths between blocks. Each trial's parent is drawn from the front of everything completed so far (not one
generation's), so a good child is built on at once.

Why predictions: a trial costs seconds (a latency measurement and a pass over the val set), while what a config
is and how fast it runs are known before it runs (the latency table). So every trial weighs 120 candidates
(0.1 s) and runs the one predicted to add the most to the front within the budget (its area in half the
trials, the accuracy at its budget end in the other half), accuracy predicted by a ridge fit of the trials so
far on the config's shape. On the bundled workload (README, "search efficiency") that reached random search's
final hypervolume at 24 of 60 trials (22-24 in each of 3 seeds; 48 candidates: 33; one candidate per trial: 41).

Objectives are (val top-1 max, latency min) and the constraint is latency over budget, as ``Objective`` sets.
"""
from __future__ import annotations

from typing import Callable, Hashable

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.search_space import IntersectionSearchSpace
from optuna.trial import TrialState

EXTEND = 0.2  # the fraction of its latency a child of the front's fastest member sheds, about
RIDGE = 1.0   # the accuracy fit's penalty on standardised shape features (dozens of trials, ~10 features)


class Predictions:
    """What a sampler can know of a trial before it runs, from its parameters: the config's identity (two
    parameter sets can make one config), its latency as the objective will report it, and its shape (the
    features accuracy is fitted on)."""

    def __init__(self, key: Callable[[dict], Hashable], latency: Callable[[dict], float],
                 shape: Callable[[dict], np.ndarray]):
        self.key, self.latency, self.shape = key, latency, shape


def hypervolume(points, budget: float = 1.0) -> float:
    """Area dominated by (accuracy ↑, latency ↓) points within ``budget``, against the reference (0, budget)."""
    area, best = 0.0, 0.0
    for latency, acc in sorted((lat, a) for a, lat in points if lat <= budget):
        if acc > best:
            area += (acc - best) * (budget - latency)
            best = acc
    return area


class LocalSearchSampler(optuna.samplers.BaseSampler):
    """Each trial: ``candidates`` children — random draws over the whole space (a share ``explore``: one often
    lands a fast, fair config that small moves take a dozen trials to reach), the parameter-wise minimum of two
    front members (``combine``: faster than both, each keeping what its method pruned), and mutations of a
    front member — of which the one predicted to add the most hypervolume within the budget runs in a share
    ``spread`` of the trials (the front every budget reads), and the one predicted most accurate in the rest
    (the budget end, which ``search run`` ships). Configs a trial already made, and configs predicted over the
    budget, are never proposed.

    A mutation moves each parameter that changes the config (``active``) with probability ``rate`` (at least
    one moves), by k grid steps with probability 2^-k; a parent over budget only moves down (every numeric axis
    is cheaper lower). Parents: the feasible Pareto front (val top-1 vs latency), and the configs over budget
    by at most ``reach`` (a fraction of the budget) that are more accurate than every feasible one. Half the
    mutations start from the member that alone dominates the most area, likeliest (the fastest one's child only
    narrows, to reach lower latencies). Until ``n_startup_trials`` trials are done (the phase's proposals
    count), parameters are sampled at random."""

    def __init__(self, predict: Predictions, seed: int | None = None, rate: float = 0.05, reach: float = 0.25,
                 n_startup_trials: int = 10, active: Callable[[dict], set] | None = None, candidates: int = 120,
                 explore: float = 0.4, combine: float = 0.2, spread: float = 0.5) -> None:
        self._rng = np.random.RandomState(seed)
        self._random = optuna.samplers.RandomSampler(seed)
        self._space = IntersectionSearchSpace()
        self.predict = predict
        self.rate, self.reach, self.n_startup_trials, self.candidates = rate, reach, n_startup_trials, candidates
        self.explore, self.combine, self.spread = explore, combine, spread
        self.active = active or (lambda params: set(params))  # the parameters that change the config

    def reseed_rng(self) -> None:
        self._rng.seed()
        self._random.reseed_rng()

    def infer_relative_search_space(self, study, trial) -> dict:
        return self._space.calculate(study)

    def sample_relative(self, study, trial, search_space: dict) -> dict:
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        completed = [t for t in done if t.state == TrialState.COMPLETE]
        if not search_space or len(done) < self.n_startup_trials or not completed:
            return {}  # every parameter drawn at random (``sample_independent``)
        parents = self.parents(completed)
        budget = _budget(completed[0])
        values = [tuple(t.values) for t in completed]
        accuracy = self.fit_accuracy(completed)
        before = hypervolume(values, budget)
        by_area = self._rng.rand() < self.spread
        seen = {self.predict.key(t.params) for t in done}
        best, best_gain = {}, -np.inf
        for child in self.children(study, trial, search_space, parents):
            key = self.predict.key(child)
            if key in seen:
                continue
            seen.add(key)
            latency = self.predict.latency(child)
            if latency > budget:
                continue
            acc = accuracy(child)
            gain = hypervolume(values + [(acc, latency)], budget) - before if by_area else acc
            if gain > best_gain:
                best, best_gain = child, gain
        return best  # {} when every candidate was a repeat or over budget: drawn at random

    def children(self, study, trial, search_space: dict, parents: list):
        front = [t for t in parents if _over(t) == 0]
        for _ in range(self.candidates):
            u = self._rng.rand()
            if u < self.explore or not parents:  # nothing within or near the budget yet: draws only
                yield {n: self._draw(study, trial, n, d) for n, d in search_space.items()}
            elif u < self.explore + self.combine and len(front) >= 2:
                a, b = (front[i].params for i in self._rng.choice(len(front), 2, replace=False))
                yield {n: (a[n] if self._rng.rand() < 0.5 else b[n]) if isinstance(d, CategoricalDistribution)
                       else min(a[n], b[n]) for n, d in search_space.items() if n in a and n in b}
            elif self._rng.rand() < 0.5:
                parent, extend = self.spanning_parent(parents)
                yield self.mutate(parent, search_space, extend)
            else:
                yield self.mutate(parents[self._rng.randint(len(parents))], search_space)

    def _draw(self, study, trial, name: str, dist):
        """A uniform draw from ``dist``'s grid, as Optuna's random sampler draws but without its per-call
        transforms (a trial draws a few thousand values)."""
        if isinstance(dist, CategoricalDistribution):
            return dist.choices[self._rng.randint(len(dist.choices))]
        if getattr(dist, "step", None) is None:  # continuous or log axes: none in vitnas's space
            return self._random.sample_independent(study, trial, name, dist)
        value = dist.low + self._rng.randint(round((dist.high - dist.low) / dist.step) + 1) * dist.step
        return int(value) if isinstance(dist, IntDistribution) else round(value, 9)

    def fit_accuracy(self, completed: list) -> Callable[[dict], float]:
        """Ridge regression of val top-1 on the standardised shape of every completed trial."""
        X = np.stack([self.predict.shape(t.params) for t in completed])
        y = np.array([t.values[0] for t in completed])
        mean, scale = X.mean(0), X.std(0) + 1e-9
        Z = np.c_[np.ones(len(X)), (X - mean) / scale]
        penalty = RIDGE * np.eye(Z.shape[1])
        penalty[0, 0] = 0.0  # the intercept is not shrunk
        w = np.linalg.solve(Z.T @ Z + penalty, Z.T @ y)
        return lambda params: float(np.r_[1.0, (self.predict.shape(params) - mean) / scale] @ w)

    def parents(self, completed: list) -> list:
        feasible = [t for t in completed if _over(t) == 0]
        front = [t for t in feasible if not any(_dominates(u, t) for u in feasible)]
        best = max((t.values[0] for t in feasible), default=-np.inf)
        near = [t for t in completed if 0 < _over(t) <= self.reach * (t.values[1] - _over(t)) and t.values[0] > best]
        unique = {tuple(t.values): t for t in front + near}.values()  # one per point
        return sorted(unique, key=lambda t: -t.values[0])

    def spanning_parent(self, parents: list) -> tuple:
        """A feasible front member drawn by the area it alone dominates (reference: no accuracy at the budget),
        and whether it is the fastest one, whose child then only narrows, to reach further down."""
        front = sorted((t for t in parents if _over(t) == 0), key=lambda t: t.values[1])
        if not front:
            return parents[0], False
        budget = _budget(front[0])
        accs = [0.0] + [t.values[0] for t in front]
        lats = [t.values[1] for t in front] + [budget]
        alone = np.array([(accs[i + 1] - accs[i]) * (lats[i + 1] - lats[i]) for i in range(len(front))]) + 1e-12
        i = self._rng.choice(len(front), p=alone / alone.sum())
        return front[i], i == 0

    def mutate(self, parent, search_space: dict, extend: bool = False) -> dict:
        over = _over(parent)
        down = over > 0 or extend
        # over budget by a fraction f: move a share 2f of the parameters (one step saves a few % of one block);
        # extending the front: a share that makes the child about a fifth faster
        rate = (min(0.5, max(self.rate, 2 * over / (parent.values[1] - over))) if over > 0 else
                2 * EXTEND if extend else self.rate)
        child = {n: parent.params[n] for n in search_space if n in parent.params}
        active = self.active(child)
        options = {n: _neighbours(search_space[n], v, down, self._rng.geometric(0.5))
                   for n, v in child.items() if n in active}
        movable = [n for n, o in options.items() if o]
        if not movable:
            return child
        moving = [n for n in movable if self._rng.rand() < rate] or [movable[self._rng.randint(len(movable))]]
        for name in moving:
            child[name] = options[name][self._rng.randint(len(options[name]))]
        return child

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._random.sample_independent(study, trial, param_name, param_distribution)


def _budget(trial) -> float:
    """The budget ``trial`` was judged against: its latency less its constraint (latency − budget)."""
    return trial.values[1] - sum(trial.constraints.values())


def _over(trial) -> float:
    """How far ``trial`` is over its constraints (0 when it meets them): latency over the budget, in ms."""
    return sum(v for v in trial.constraints.values() if v > 0)


def _dominates(a, b) -> bool:
    """a is at least as accurate and as fast as b, and better in one (objectives: accuracy max, latency min)."""
    (acc_a, lat_a), (acc_b, lat_b) = a.values, b.values
    return acc_a >= acc_b and lat_a <= lat_b and (acc_a > acc_b or lat_a < lat_b)


def _neighbours(dist, value, down: bool, steps: int = 1) -> list:
    """The values ``steps`` grid steps from ``value``, clipped to the bounds (only lower ones when ``down``;
    categorical: the other choices, none when ``down``)."""
    if isinstance(dist, CategoricalDistribution):
        return [] if down else [c for c in dist.choices if c != value]
    if isinstance(dist, (IntDistribution, FloatDistribution)) and dist.step is not None:
        moves = {max(dist.low, value - steps * dist.step)}
        if not down:
            moves.add(min(dist.high, value + steps * dist.step))
        cast = int if isinstance(dist, IntDistribution) else (lambda x: round(x, 9))
        return [cast(m) for m in sorted(moves - {value})]
    return []  # continuous or log axes: none in vitnas's space
