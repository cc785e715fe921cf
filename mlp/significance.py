"""Whether a difference between two recipes is more than noise: a 95% confidence interval of the
mean paired difference over seeds (Student's t), McNemar's test on the same test images pooled
over seeds, and the binomial sampling error of an accuracy measured on n examples."""

import math
import statistics

# Student's t, two-sided 95% (the 0.975 quantile), by degrees of freedom; 1.96 beyond 30.
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120,
         17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064,
         25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042}


def paired_interval(differences):
    """(mean, low, high): the 95% t-interval of the mean of per-seed `differences`; None for
    fewer than two."""
    if len(differences) < 2:
        return None
    mean = statistics.fmean(differences)
    half = T_975.get(len(differences) - 1, 1.96) * statistics.stdev(differences) / math.sqrt(
        len(differences))
    return mean, mean - half, mean + half


def mcnemar(pairs):
    """McNemar's test with continuity correction over (a_correct, b_correct) boolean sequences
    of the same examples, pooled: (b, c, p) with b the examples only A gets right and c those
    only B gets right; p two-sided (chi-square, 1 degree of freedom)."""
    b = c = 0
    for a_correct, b_correct in pairs:
        for x, y in zip(a_correct, b_correct):
            b += bool(x) and not bool(y)
            c += bool(y) and not bool(x)
    if b + c == 0:
        return b, c, 1.0
    chi2 = (abs(b - c) - 1) ** 2 / (b + c)
    return b, c, math.erfc(math.sqrt(chi2 / 2))


def binomial_half_width(accuracy, examples):
    """Half the 95% interval of an accuracy measured on `examples` independent examples."""
    return 1.96 * math.sqrt(accuracy * (1 - accuracy) / examples)
