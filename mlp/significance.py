"""Whether a difference between two recipes is more than noise.

A recipe's test accuracy varies from two sources: the training seed (initialization, data order,
dropout masks) and the test set (10,000 images drawn from all the images there could be). The
question a comparison table asks is "would B beat A again, with other seeds and other test
images?", so its statistics must count both:

- `paired_interval`: the 95% Student's t-interval of the mean per-seed difference (seed
  variance; the t quantile exact for any number of seeds);
- `bootstrap_change`: a two-level bootstrap that resamples the seeds (paired) and the test
  images (the same images for every seed, as they are shared) together, for an interval and a
  two-sided p-value of the mean difference. McNemar's test on the predictions pooled over seeds
  treats every (seed, image) pair as independent and so ignores the seed variance: three seeds
  that disagree on the sign can still give p = 1e-13;
- `mcnemar`: McNemar's test for one pair of runs on the same images (exact binomial below 25
  discordant images, the continuity-corrected chi-square above);
- `binomial_half_width`: the sampling error of one accuracy measured on n images.
"""

import math
import statistics

import numpy as np

# Enough that p near 0.05 has a Monte Carlo standard error of about 0.002.
BOOTSTRAP_REPLICATES = 10_000
EXACT_BELOW = 25  # discordant pairs under which McNemar's test is the exact binomial one


def t_quantile(degrees_of_freedom, level=0.95):
    """The two-sided `level` quantile of Student's t with `degrees_of_freedom` (exact)."""
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2, degrees_of_freedom))


def paired_interval(differences):
    """(mean, low, high): the 95% t-interval of the mean of per-seed `differences`; None for
    fewer than two."""
    if len(differences) < 2:
        return None
    mean = statistics.fmean(differences)
    half = t_quantile(len(differences) - 1) * statistics.stdev(differences) / math.sqrt(
        len(differences))
    return mean, mean - half, mean + half


def mcnemar(pairs):
    """McNemar's test over (a_correct, b_correct) boolean sequences of the same examples: (b, c,
    p) with b the examples only A gets right and c those only B gets right; p two-sided, exact
    (binomial, n = b + c, 1/2) when b + c < EXACT_BELOW, else the chi-square with continuity
    correction (1 degree of freedom). Pairs of several seeds are pooled: use it for one pair of
    runs, and `bootstrap_change` across seeds."""
    b = c = 0
    for a_correct, b_correct in pairs:
        a_correct, b_correct = np.asarray(a_correct, bool), np.asarray(b_correct, bool)
        b += int(np.sum(a_correct & ~b_correct))
        c += int(np.sum(b_correct & ~a_correct))
    n = b + c
    if n == 0:
        return b, c, 1.0
    if n < EXACT_BELOW:
        from scipy.stats import binom

        return b, c, min(1.0, 2.0 * float(binom.cdf(min(b, c), n, 0.5)))
    chi2 = max(abs(b - c) - 1, 0) ** 2 / n
    return b, c, math.erfc(math.sqrt(chi2 / 2))


def bootstrap_change(base_correct, other_correct, replicates=BOOTSTRAP_REPLICATES, seed=0):
    """The change in accuracy from base to other, from per-seed boolean arrays of which test
    images each run got right (paired: index k of both lists is one seed; every array over the
    same images). Each replicate draws the seeds with replacement and, independently, the test
    images with replacement, and takes the mean change over them. Returns {"change": the
    observed mean change, "interval": [low, high] its 95% percentile interval, "p": the two-sided
    p-value of no change (twice the smaller tail, at least 1 / (replicates + 1)), "seeds",
    "images", "replicates"}. With one seed only the images vary: it then says nothing about other
    seeds. With few seeds the seed part is narrow (a bootstrap of n values has (n-1)/n of their
    variance), so read it beside `paired_interval`."""
    differences = (np.asarray(other_correct, np.float32) - np.asarray(base_correct, np.float32))
    if differences.ndim != 2 or differences.size == 0:
        raise ValueError("bootstrap_change: give one equally long boolean array per seed")
    seeds, images = differences.shape
    # Images every run of both recipes got alike add 0 to a replicate whatever their weight. The
    # weights of the others, a subset of a multinomial over all images, are drawn directly: their
    # total is binomial, and given the total they are that many uniform draws among themselves,
    # counted. (Counts and changes of -1, 0, 1 sum exactly in float32.)
    informative = differences[:, np.any(differences != 0, axis=0)]
    kept = informative.shape[1]
    rng = np.random.default_rng(seed)
    changes = np.zeros(replicates)
    chunk = max(1, 2**22 // max(1, kept))  # replicates per block: a few MB
    for start in range(0, replicates if informative.size else 0, chunk):
        count = min(chunk, replicates - start)
        seed_weights = rng.multinomial(seeds, np.full(seeds, 1 / seeds), size=count)
        totals = rng.binomial(images, kept / images, size=count)
        cells = np.repeat(np.arange(count) * kept, totals) + rng.integers(0, kept, totals.sum())
        image_weights = np.bincount(cells, minlength=count * kept).reshape(count, kept)
        per_seed = image_weights.astype(np.float32) @ informative.T  # [count, seeds]
        changes[start:start + count] = np.einsum("rs,rs->r", per_seed, seed_weights) / (
            seeds * images)
    below, above = np.mean(changes <= 0), np.mean(changes >= 0)
    p = min(1.0, max(2 * min(below, above), 1 / (replicates + 1)))
    low, high = np.percentile(changes, [2.5, 97.5])
    return {"change": float(differences.mean()), "interval": [float(low), float(high)],
            "p": float(p), "seeds": seeds, "images": images, "replicates": replicates}


def p_text(p, replicates=BOOTSTRAP_REPLICATES):
    """A bootstrap's p as the tables print it. At its floor, 1 / (replicates + 1), it is only a
    bound (no replicate fell on the other side of 0), printed as one."""
    if p <= 1 / (replicates + 1):
        return f"< {1 / replicates:.0g}"
    return f"{p:.2g}"


def binomial_half_width(accuracy, examples):
    """Half the 95% interval of an accuracy measured on `examples` independent examples."""
    return 1.96 * math.sqrt(accuracy * (1 - accuracy) / examples)
