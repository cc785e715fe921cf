"""How well a model's probabilities mean what they say, on a set of examples: expected
calibration error, negative log-likelihood and Brier score, before and after temperature
scaling (Guo et al. 2017) with the temperature fitted on other examples (validation).

All of it is NumPy on the predicted log-probabilities [N, classes] and the labels [N].
"""

import numpy as np

ECE_BINS = 15


def softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def confidence_bins(confidence, bins=ECE_BINS):
    """Each confidence's bin among `bins` equal-width ones: bin b holds (b/bins, (b+1)/bins], and
    a confidence of 0 goes to the first."""
    return np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)


def expected_calibration_error(probabilities, labels, bins=ECE_BINS):
    """Sum over `bins` equal-width bins of the top-class probability of |accuracy - mean
    confidence| times the bin's share of the examples."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    which = confidence_bins(confidence, bins)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)


def negative_log_likelihood(probabilities, labels):
    """Mean over the examples of -log(probability of the true class)."""
    true = probabilities[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.maximum(true, np.finfo(np.float64).tiny))))


def brier_score(probabilities, labels):
    """Mean over the examples of the squared error summed over the classes."""
    one_hot = np.eye(probabilities.shape[1])[labels]
    return float(np.mean(np.sum((probabilities - one_hot) ** 2, axis=1)))


def measures(probabilities, labels):
    return {"ece": expected_calibration_error(probabilities, labels),
            "nll": negative_log_likelihood(probabilities, labels),
            "brier": brier_score(probabilities, labels)}


def fit_temperature(log_probabilities, labels, low=0.05, high=20.0, steps=60):
    """The temperature T minimizing the NLL of softmax(log_probabilities / T): golden-section
    search over 1 / T, in which that NLL is convex."""
    z = np.asarray(log_probabilities, np.float64)

    def nll(inverse):
        return negative_log_likelihood(softmax(z * inverse), labels)

    ratio = (np.sqrt(5) - 1) / 2
    a, b = 1.0 / high, 1.0 / low
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = nll(c), nll(d)
    for _ in range(steps):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = nll(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = nll(d)
    return float(2.0 / (a + b))


def calibration(test_log_probabilities, test_labels, validation_log_probabilities,
                validation_labels):
    """The test set's measures, the temperature fitted on the validation set, and the test set's
    measures after scaling by it."""
    test = np.asarray(test_log_probabilities, np.float64)
    temperature = fit_temperature(validation_log_probabilities, validation_labels)
    return {**measures(softmax(test), test_labels), "temperature": temperature,
            "scaled": measures(softmax(test / temperature), test_labels)}
